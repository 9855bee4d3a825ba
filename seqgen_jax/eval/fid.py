"""Fréchet distance (FID) with the features of a classifier this project trains itself.

Inception-v3 weights cannot be downloaded here, so the feature network is an
``image_classify`` run of the project's own classifier -- by default the pre-activation
GroupNorm ResNet of seqgen_jax/nn/resnet.py (experiments/configs/image_resnet.py),
whose ``features(images) -> [B, D]`` (the pooled penultimate activations, D = 64 in those
configs) stand in for Inception's pool3 features. FIDs from different feature networks are not
comparable with each other, nor with published Inception FIDs.

The whole API (numbers are float64 NumPy; images are uint8 [N, H, W, C] as the data loaders and
samplers produce them):

  net = fid.FeatureNet.from_workdir("/work/runs/fidnet/mnist")   # latest checkpoint (EMA if kept)
  feats = net.features(images_uint8)          # np.ndarray float32 [N, D]
  labels = net.predict(images_uint8)          # np.ndarray int32 [N]
  mu, sigma = fid.reference_stats(net, "mnist", data_dir)   # the test split, cached in a .npz
  d = fid.frechet_distance(mu1, sigma1, mu2, sigma2)
  score = fid.fid_from_samples(net, samples_uint8, "mnist", data_dir)
  score = fid.fid(samples_uint8, "/work/runs/fidnet/mnist", "mnist")       # the same, by path
  acc = fid.classifier_accuracy(samples_uint8, labels, "/work/runs/fidnet/mnist")

Reference statistics of a dataset split are computed once per feature network and saved to
``<classifier workdir>/fid_ref_<dataset>_<split>.npz`` (with the checkpoint step they were
computed with; a cache from another step is recomputed).

Axis key: N images, H height, W width, C channels, D features, K classes.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import scipy.linalg

import seqgen_jax.nn  # noqa: F401  (registers the models: a feature network is any of them)
from seqgen_jax import fileio
from seqgen_jax.data import images as images_lib
from seqgen_jax.data.builder import DataOptions
from seqgen_jax.data.image_ops import CLASSIFIER_ASSET_FILE, to_model_range
from seqgen_jax.errors import ConfigError, DataError
from seqgen_jax.registry import MODELS

PyTree = Any


class FeatureNet:
  """A trained image classifier used as a fixed feature extractor and as a judge of labels.

  Images go through the same scaling as in training (``data.image_ops.to_model_range``) in
  fixed-size batches (the last one padded), so each function compiles once.
  """

  def __init__(self, model: nn.Module, params: PyTree, *, dataset: str,
               image_shape: tuple[int, int, int], num_classes: int,
               workdir: str | None = None, step: int | None = None, batch_size: int = 500):
    self.model = model
    self.params = params
    self.dataset = dataset
    self.image_shape = tuple(int(s) for s in image_shape)
    self.num_classes = int(num_classes)
    self.workdir = workdir
    self.step = step
    self.batch_size = int(batch_size)
    self._features = jax.jit(lambda p, x: model.apply(
        {"params": p}, to_model_range(x), method="features"))
    self._logits = jax.jit(lambda p, x: model.apply({"params": p}, to_model_range(x),
                                                    train=False))

  @classmethod
  def from_workdir(cls, workdir: str, *, step: int | None = None, use_ema: bool = True,
                   batch_size: int = 500) -> FeatureNet:
    """Loads an ``image_classify`` run: its config.json, image_classifier.json and the params
    of checkpoint ``step`` (default: the latest; the EMA params when the run kept them and
    ``use_ema``)."""
    workdir = os.path.abspath(workdir)
    paths = {n: os.path.join(workdir, n)
             for n in ("config.json", CLASSIFIER_ASSET_FILE, "checkpoints")}
    for name, path in paths.items():
      if not os.path.exists(path):
        raise DataError(f"{workdir} is not an image_classify workdir: it has no {name}")
    with open(paths["config.json"]) as f:
      config = ml_collections.ConfigDict(json.load(f))
    with open(paths[CLASSIFIER_ASSET_FILE]) as f:
      info = json.load(f)
    mngr = ocp.CheckpointManager(paths["checkpoints"], item_names=("state", "data", "config"),
                                 options=ocp.CheckpointManagerOptions(create=False))
    steps = list(mngr.all_steps())
    if not steps:
      raise DataError(f"{paths['checkpoints']} holds no checkpoint")
    step = max(steps) if step is None else int(step)
    if step not in steps:
      raise DataError(f"{paths['checkpoints']} has no step {step}; it has: "
                      f"{', '.join(map(str, sorted(steps)))}")
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    mngr.close()
    params = state["ema_params"] if use_ema and state.get("ema_params") is not None else (
        state["params"])
    params = jax.tree.map(jnp.asarray, params)
    model = MODELS.get(config.model.name, kind="image_classifier")(
        config.model, image_shape=tuple(info["image_shape"]), num_classes=info["num_classes"],
        dtype=None)
    return cls(model, params, dataset=info["dataset"], image_shape=tuple(info["image_shape"]),
               num_classes=info["num_classes"], workdir=workdir, step=step,
               batch_size=batch_size)

  @functools.cached_property
  def feature_dim(self) -> int:
    """D, the width of ``features``."""
    x = jax.ShapeDtypeStruct((1, *self.image_shape), jnp.uint8)
    return int(jax.eval_shape(self._features, self.params, x).shape[-1])

  def _check(self, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
      raise DataError(f"images must be uint8 in [0, 255], got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != self.image_shape:
      raise DataError(f"images must have shape [N, {', '.join(map(str, self.image_shape))}], "
                      f"got {list(images.shape)}")
    return images

  def _batched(self, fn, images: np.ndarray) -> np.ndarray:
    images = self._check(images)
    n, b = images.shape[0], self.batch_size
    out = []
    for i in range(0, n, b):
      chunk = images[i:i + b]
      pad = b - chunk.shape[0]
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad, *self.image_shape), np.uint8)])
      out.append(np.asarray(fn(self.params, chunk))[:b - pad])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

  def features(self, images_NHWC: np.ndarray) -> np.ndarray:
    """The model's ``features`` (penultimate activations) of uint8 images: float32 [N, D]."""
    if not hasattr(self.model, "features"):
      raise ConfigError(f"model {type(self.model).__name__} has no features(); use a model "
                        "that has one (e.g. model.name=resnet) as the FID feature network")
    return self._batched(self._features, images_NHWC).astype(np.float32)

  def logits(self, images_NHWC: np.ndarray) -> np.ndarray:
    """Class logits of uint8 images: float32 [N, K]."""
    return self._batched(self._logits, images_NHWC).astype(np.float32)

  def predict(self, images_NHWC: np.ndarray) -> np.ndarray:
    """Predicted class of each uint8 image: int32 [N]."""
    return np.argmax(self.logits(images_NHWC), axis=-1).astype(np.int32)


def statistics(features_ND: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean [D] and unbiased covariance [D, D] of the rows of ``features``, in float64."""
  x = np.asarray(features_ND, np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise DataError(f"statistics need features of shape [N >= 2, D], got {list(x.shape)}")
  return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
  ||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

  The usual safeguards (as in pytorch-fid): if sqrtm of the product is singular or not finite
  (e.g. fewer images than features, or a feature that is constant) both covariances get
  ``eps`` on the diagonal; a
  complex root whose imaginary part is round-off (its diagonal < 1e-3) is taken as real, and a
  larger one raises. The result is clipped at 0 (round-off can make it slightly negative).
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2,
                                                                                  np.float64))
  s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2,
                                                                                  np.float64))
  if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
    raise DataError(f"mismatched statistics: means {mu1.shape} / {mu2.shape}, covariances "
                    f"{s1.shape} / {s2.shape}")
  diff = mu1 - mu2
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", scipy.linalg.LinAlgWarning)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
  if caught or not np.all(np.isfinite(covmean)):
    offset = np.eye(s1.shape[0]) * eps
    covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"sqrtm(sigma1 sigma2) has imaginary part "
                       f"{np.max(np.abs(covmean.imag)):.3g}: the covariances are not valid")
    covmean = covmean.real
  value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean)
  return float(max(value, 0.0))


def dataset_images(dataset: str, data_dir: str | None = None, *, split: str = "test",
                   max_examples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Every image of a split (uint8 [N, H, W, C]) and its labels (int32 [N]), in split order."""
  data = images_lib.load(dataset, DataOptions(data_dir=data_dir or None,
                                              max_examples=max_examples or None),
                         batch_size=1, eval_batch_size=1000, seed=0, eval_split=split)
  xs, ys = [], []
  for i in range(data.eval_batches):
    batch = data.eval.batch(i, slice(0, 1000))
    keep = batch["weight"] > 0
    xs.append(batch["image"][keep])
    ys.append(batch["label"][keep])
  return np.concatenate(xs), np.concatenate(ys)


def reference_cache_path(net: FeatureNet, dataset: str, *, split: str = "test",
                         max_examples: int | None = None) -> str | None:
  """``<workdir>/fid_ref_<dataset>_<split>[_first<N>].npz``; None for a net without workdir."""
  if net.workdir is None:
    return None
  suffix = f"_first{max_examples}" if max_examples else ""
  return os.path.join(net.workdir, f"fid_ref_{dataset}_{split}{suffix}.npz")


def reference_stats(net: FeatureNet, dataset: str, data_dir: str | None = None, *,
                    split: str = "test", max_examples: int | None = None,
                    cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """(mu, sigma) of ``net``'s features over a whole dataset split, cached next to the net.

  A cache made with another checkpoint step or feature width is recomputed and overwritten.
  """
  path = reference_cache_path(net, dataset, split=split, max_examples=max_examples)
  if cache and path is not None and os.path.exists(path):
    with np.load(path) as z:
      if int(z["step"]) == (net.step if net.step is not None else -1) and (
          z["mu"].shape[0] == net.feature_dim):
        return z["mu"], z["sigma"]
  x, _ = dataset_images(dataset, data_dir, split=split, max_examples=max_examples)
  mu, sigma = statistics(net.features(x))
  if cache and path is not None:
    with fileio.atomic_path(path, suffix=".npz") as tmp:
      np.savez(tmp, mu=mu, sigma=sigma, num_images=x.shape[0], dataset=dataset, split=split,
               step=net.step if net.step is not None else -1)
  return mu, sigma


def fid_from_samples(net: FeatureNet, samples_NHWC: np.ndarray, dataset: str,
                     data_dir: str | None = None, **reference_kw) -> float:
  """FID of uint8 samples against the reference statistics of ``dataset`` (test split)."""
  mu_ref, sigma_ref = reference_stats(net, dataset, data_dir, **reference_kw)
  mu, sigma = statistics(net.features(samples_NHWC))
  return frechet_distance(mu, sigma, mu_ref, sigma_ref)


def real_data_floor(net: FeatureNet, dataset: str, num: int, data_dir: str | None = None,
                    **reference_kw) -> float:
  """FID of the first ``num`` *training* images against the test-split reference statistics.

  FID is biased upward at small sample counts (the covariance estimate of ``num`` samples is
  noisy); this is the score a perfect sampler would get with the same ``num``: the floor to read
  a model's FID against. Training images, so none of them is in the reference set.
  """
  mu_ref, sigma_ref = reference_stats(net, dataset, data_dir, **reference_kw)
  x, _ = dataset_images(dataset, data_dir, split="train", max_examples=num)
  if x.shape[0] < num:
    raise DataError(f"real-data FID floor: the {dataset} training split has {x.shape[0]} "
                    f"images, fewer than the {num} asked for")
  mu, sigma = statistics(net.features(x[:num]))
  return frechet_distance(mu, sigma, mu_ref, sigma_ref)


@functools.lru_cache(maxsize=4)
def _net_at(workdir: str) -> FeatureNet:
  return FeatureNet.from_workdir(workdir)


def _as_net(classifier: FeatureNet | str) -> FeatureNet:
  return classifier if isinstance(classifier, FeatureNet) else _net_at(
      os.path.abspath(str(classifier)))


def fid(samples_NHWC: np.ndarray, classifier_workdir: str | FeatureNet, dataset: str,
        data_dir: str | None = None) -> float:
  """``fid_from_samples`` with the feature network of a classifier workdir (loaded once)."""
  return fid_from_samples(_as_net(classifier_workdir), samples_NHWC, dataset, data_dir)


def classifier_accuracy(samples_NHWC: np.ndarray, labels_N: np.ndarray,
                        classifier_workdir: str | FeatureNet) -> float:
  """Fraction of samples that the classifier assigns to their intended labels."""
  labels_N = np.asarray(labels_N)
  if labels_N.shape != (np.shape(samples_NHWC)[0],):
    raise DataError(f"need one label per sample: {labels_N.shape[0] if labels_N.ndim else 0} "
                    f"labels for {np.shape(samples_NHWC)[0]} samples")
  pred = _as_net(classifier_workdir).predict(samples_NHWC)
  return float(np.mean(pred == labels_N))
