"""The samples of an FID evaluation, kept on disk batch by batch so that a stopped one resumes.

A 10k-sample evaluation with a 1000-step sampler runs for hours. ``sample_batches`` makes the
samples in fixed batches; given a file ``prefix`` it saves every batch as it is made (uint8
``<prefix>_<first sample:07d>.npy``, written atomically, so a killed run leaves no partial batch)
and loads, instead of sampling again, every batch it finds there. The prefix carries
``sample_fingerprint``: a hash of the params, the seed and the sampler settings, so batches of
another checkpoint or setting are never reused. A shard "i/k" (``parse_shard``) makes only every
k-th batch, from the i-th, so k processes or hosts can share one evaluation; a last unsharded run
finds all the batches on disk and gathers them. ``fid_report`` evaluates a list of samplers this
way; ``sampler_scores`` is one sampler's line of its report: FID against the test split and the
feature network's accuracy on the intended labels.

Axis key: N samples, H height, W width, C channels.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

from seqgen_jax import fileio
from seqgen_jax.data.image_ops import to_uint8
from seqgen_jax.diffusion import samplers
from seqgen_jax.errors import ConfigError
from seqgen_jax.eval import fid

PyTree = Any
MakeBatch = Callable[[int, np.ndarray], np.ndarray]  # (first sample, labels_N) -> uint8 NHWC
# (key, labels_N, sampler name, number of steps) -> samples in [-1, 1], [N, H, W, C]
Generate = Callable[[jax.Array, np.ndarray, str, int], Any]


def parse_shard(spec: str) -> tuple[int, int] | None:
  """"i/k" (batch b of the FID samples belongs to shard b % k) -> (i, k); "" -> None."""
  if not spec:
    return None
  m = re.fullmatch(r"(\d+)/(\d+)", str(spec).strip())
  if not m or not int(m.group(1)) < int(m.group(2)):
    raise ConfigError(f"FID sample shard {spec!r}: expected 'i/k' with 0 <= i < k, e.g. '0/2'")
  return int(m.group(1)), int(m.group(2))


def sample_fingerprint(params: PyTree, rng: jax.Array, spec: str, w: float, n: int,
                       batch_size: int, shape: tuple[int, ...]) -> str:
  """12 hex digits naming one FID sample set: the params' bytes, the seed and the settings."""
  h = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(params):
    a = np.asarray(leaf)
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes())
  h.update(np.asarray(jax.random.key_data(rng)).tobytes())
  h.update(repr((spec, float(w), int(n), int(batch_size), tuple(shape))).encode())
  return h.hexdigest()[:12]


def sample_batches(make_batch: MakeBatch, labels_N: np.ndarray, batch_size: int,
                   shape: tuple[int, ...], *, prefix: str | None = None,
                   shard: tuple[int, int] | None = None, name: str = "samples"
                   ) -> tuple[list[np.ndarray], int]:
  """(uint8 batches [n, H, W, C] of this shard, in order; how many samples came from disk).

  Batch b holds samples [b * batch_size, (b + 1) * batch_size) with labels ``labels_N`` of
  those rows; ``make_batch(first, labels)`` makes it. With ``prefix`` each batch is loaded from
  ``<prefix>_<first:07d>.npy`` when that exists (a file of another shape or dtype is a
  ConfigError) and saved there when it is made. ``shard`` (i, k): only batches with b % k == i.
  """
  n = len(labels_N)
  batches, resumed, t0 = [], 0, time.perf_counter()
  for first in range(0, n, batch_size):
    if shard and (first // batch_size) % shard[1] != shard[0]:
      continue
    labels = labels_N[first:first + batch_size]
    want = (len(labels), *shape)
    path = f"{prefix}_{first:07d}.npy" if prefix else ""
    if path and os.path.exists(path):
      batch = np.load(path)
      if batch.shape != want or batch.dtype != np.uint8:
        raise ConfigError(f"{path} holds {batch.dtype}{list(batch.shape)}, not the "
                          f"uint8{list(want)} batch this evaluation makes; delete it to sample "
                          "it again")
      resumed += len(labels)
    else:
      batch = np.asarray(make_batch(first, labels))
      if path:  # a killed run leaves no partial batch behind
        with fileio.atomic_path(path, suffix=".npy") as tmp:
          np.save(tmp, batch)
    batches.append(batch)
    logging.info("%s: %d / %d samples (%d loaded from %s; %.0f s)", name, first + len(labels),
                 n, resumed, os.path.dirname(prefix) if prefix else "-",
                 time.perf_counter() - t0)
  return batches, resumed


def sampler_scores(make_batch: MakeBatch, labels_N: np.ndarray, batch_size: int,
                   shape: tuple[int, ...], *, net: fid.FeatureNet, dataset: str,
                   data_dir: str | None, tag: str, judge: bool, prefix: str | None = None,
                   shard: tuple[int, int] | None = None) -> dict[str, float]:
  """One sampler's ``fid_<tag>`` (and with ``judge`` ``guided_acc_<tag>``: how often ``net``
  finds the intended label), ``sample_s_<tag>`` and, with ``prefix``, ``samples_resumed_<tag>``.

  The samples come from ``sample_batches``; a shard only makes its batches and reports
  ``shard_samples_<tag>`` (no FID). ``sample_s`` counts the seconds of this call: with resumed
  batches, only the rest were sampled in it.
  """
  t0 = time.perf_counter()
  batches, resumed = sample_batches(make_batch, labels_N, batch_size, shape, prefix=prefix,
                                    shard=shard, name=tag)
  if shard:
    return {f"shard_samples_{tag}": float(sum(len(b) for b in batches)),
            f"samples_resumed_{tag}": float(resumed), f"sample_s_{tag}": time.perf_counter() - t0}
  samples_NHWC = np.concatenate(batches)
  out = {f"fid_{tag}": float(fid.fid_from_samples(net, samples_NHWC, dataset, data_dir))}
  if judge:
    out[f"guided_acc_{tag}"] = float(np.mean(np.asarray(net.predict(samples_NHWC)) == labels_N))
  out[f"sample_s_{tag}"] = time.perf_counter() - t0
  if prefix:
    out[f"samples_resumed_{tag}"] = float(resumed)
  logging.info("%s: %s", tag, out)
  return out


def fid_report(generate: Generate, params: PyTree, rng: jax.Array, specs: Sequence[str], *,
               guidance: float, net: fid.FeatureNet, dataset: str, data_dir: str | None,
               num_samples: int, batch_size: int, num_classes: int, shape: tuple[int, ...],
               judge: bool, sample_dir: str = "", shard: tuple[int, int] | None = None
               ) -> dict[str, float]:
  """``sampler_scores`` of each sampler spec ("ddim-50", "ddpm-1000", ...), ``fid_num_samples``
  and, unsharded, ``fid_real_data_floor`` (what a perfect sampler scores with as many samples).

  Sample k has label k % num_classes. The batch from sample ``first`` is
  ``generate(fold_in(fold_in(rng, first), steps), labels, name, steps)``: its noise depends on
  its position only, so a batch made again, or by another shard, is the same batch. With
  ``sample_dir`` the batches are kept under ``<tag>_w<guidance>_<fingerprint>`` there
  (``params`` and ``rng`` enter the fingerprint).
  """
  labels_N = np.arange(num_samples) % num_classes
  out = {}
  for spec in specs:
    name, steps = samplers.parse_sampler(spec)
    tag = spec.replace("-", "")
    prefix = None
    if sample_dir:
      os.makedirs(sample_dir, exist_ok=True)
      fp = sample_fingerprint(params, rng, spec, guidance, num_samples, batch_size, shape)
      prefix = os.path.join(sample_dir, f"{tag}_w{guidance:g}_{fp}")

    def make_batch(first: int, labels: np.ndarray, name=name, steps=steps) -> np.ndarray:
      key = jax.random.fold_in(jax.random.fold_in(rng, first), steps)
      return to_uint8(generate(key, labels, name, steps))

    out.update(sampler_scores(make_batch, labels_N, batch_size, shape, net=net, dataset=dataset,
                              data_dir=data_dir, tag=tag, judge=judge, prefix=prefix,
                              shard=shard))
  out["fid_num_samples"] = float(num_samples)
  if shard:
    logging.info("shard %d/%d of the FID samples is on disk in %s; run without a shard to "
                 "gather all of them and compute FID", *shard, sample_dir)
    return out
  out["fid_real_data_floor"] = float(fid.real_data_floor(net, dataset, num_samples, data_dir))
  return out
