"""Showdown measurements that need no trained weights: scaling with sequence length and latency.

* ``seq_len_scaling``: one train step (forward, backward, AdamW) of each model at sequence
  lengths T, with the tokens per batch held fixed (B = tokens / T, at least one row per device):
  median step time -> training tokens/s, and the per-device memory of the step from XLA's
  compile-time memory analysis (state + batch + temporaries; the same number on every backend).
  Attention's cost grows as T^2 per sequence, a parallel scan's as T log T, a sequential RNN's
  as T but step by step.
* ``token_latency``: seconds per generated token with ``decoding.sample_incremental`` (batch 1,
  greedy) after a 1-token prompt, for several generation lengths N: a Transformer attends over
  a KV cache of N positions at every step, an RNN carries a fixed-size state.
* ``image_latency``: seconds per image of DDIM sampling (seqgen_jax/diffusion/samplers.py)
  against the number of denoising steps, for each registered ``denoiser`` (U-Net, DiT).

Latency does not depend on the weights, so the latency benchmarks use freshly initialised
models (said in the report). Every timing is the median of ``repeats`` calls after a compiled
warm-up call.

Axis key: B batch, T time, H height, W width, C channels.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from experiments import showdown_steps
from seqgen_jax import decoding
from seqgen_jax.diffusion import samplers, schedules
from seqgen_jax.registry import MODELS


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
  """Median wall time of ``fn()`` (which must return JAX arrays) after one untimed call."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def seq_len_scaling(make_config: Callable[[str, int, int], ml_collections.ConfigDict],
                    models: list[str], lengths: list[int], tokens_per_batch: int,
                    repeats: int) -> list[dict]:
  """Rows {model, seq_len, batch, tokens_per_s, memory_mib} per (model, T).

  ``make_config(model, seq_len, batch)`` gives a training config at that shape.
  """
  ndev = jax.device_count()
  rows = []
  for name in models:
    for t in lengths:
      b = max(ndev, (tokens_per_batch // t) // ndev * ndev)
      try:
        prep = showdown_steps.prepare(make_config(name, t, b), count=False)
        sec = showdown_steps.time_steps(prep, repeats=repeats)
      except Exception as e:  # noqa: BLE001  (out of device memory: a gap in the plot, not a crash)
        if "RESOURCE_EXHAUSTED" not in str(e):
          raise
        logging.warning("%s at T=%d, batch %d: out of memory", name, t, b)
        continue
      rows.append({"model": name, "seq_len": t, "batch": b,
                   "tokens_per_s": prep.tokens_per_step / sec,
                   "memory_mib": prep.memory.total / 2**20})
      logging.info("scaling %s T=%d batch %d: %.0f tokens/s, %.1f MiB", name, t, b,
                   rows[-1]["tokens_per_s"], rows[-1]["memory_mib"])
  return rows


def _generation_seconds(model, params, n: int, repeats: int) -> float:
  """Median seconds of greedy cached generation of ``n`` tokens after a 1-token prompt."""
  prompt_11 = jnp.ones((1, 1), jnp.int32)

  @jax.jit
  def generate(params, prompt_11):
    cache = model.apply(params, 1, n, method="init_cache")
    step = lambda tok_BT, cache, pos: model.apply(params, tok_BT, cache, pos, method="decode")
    return decoding.sample_incremental(step, cache, prompt_11, n, jax.random.PRNGKey(0),
                                       greedy=True)

  return median_seconds(lambda: generate(params, prompt_11), repeats)


def token_latency(model_cfg: ml_collections.ConfigDict, models: list[str], lengths: list[int],
                  vocab_size: int, repeats: int) -> list[dict]:
  """Rows {model, num_tokens, seconds_per_token} of cached greedy generation (batch 1)."""
  rows = []
  for name in models:
    model = MODELS.get(name, kind="causal_lm")(model_cfg, vocab_size=vocab_size,
                                                max_len=max(lengths) + 1, dtype=None)
    if not hasattr(model, "decode"):
      continue  # no cached generation to time
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.ones((1, 1), jnp.int32))
    for n in lengths:
      sec = _generation_seconds(model, params, n, repeats)
      rows.append({"model": name, "num_tokens": n, "seconds_per_token": sec / n})
      logging.info("token latency %s, %d tokens: %.2f ms per token", name, n, 1e3 * sec / n)
  return rows


def _ddim_seconds(model, params, schedule, shape: tuple[int, ...], num_steps: int,
                  repeats: int) -> float:
  """Median seconds of one DDIM sampling run of ``num_steps`` steps for a batch of ``shape``."""
  model_fn = lambda x, t, cond: model.apply(params, x, t, cond=cond, train=False)
  sample = jax.jit(lambda rng: samplers.ddim_sample(model_fn, schedule, shape, rng,
                                                    num_steps=num_steps))
  return median_seconds(lambda: sample(jax.random.PRNGKey(1)), repeats)


def image_latency(model_cfg: ml_collections.ConfigDict, image_shape: tuple[int, int, int],
                  steps: list[int], batch_size: int, repeats: int) -> list[dict]:
  """Rows {model, num_steps, seconds_per_image, params} of DDIM sampling per denoiser."""
  rows = []
  schedule = schedules.make_schedule("linear", 1000)
  for name in MODELS.names(kind="denoiser"):
    model = MODELS.get(name, kind="denoiser")(model_cfg, image_shape=image_shape, num_classes=0,
                                               dtype=None)
    params = jax.jit(functools.partial(model.init, train=False))(
        jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)), jnp.zeros((1,)))
    n_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
    for k in steps:
      sec = _ddim_seconds(model, params, schedule, (batch_size, *image_shape), k, repeats)
      rows.append({"model": name, "num_steps": k, "seconds_per_image": sec / batch_size,
                   "params": n_params})
      logging.info("image latency %s, %d DDIM steps: %.3f s per image", name, k,
                   sec / batch_size)
  return rows
