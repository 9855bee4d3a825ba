"""Image classification on MNIST, Fashion-MNIST and CIFAR-10 with any ``image_classifier`` model.

Datasets (``config.data.name``): the names of seqgen_jax/data/images.py -- ``mnist``,
``fashion_mnist``, ``cifar10`` (the offline JPEG copy) and ``cifar10_official`` (the binary
release). Models (``config.model.name``): every model registered with
``kind="image_classifier"``, e.g. ``vit`` (nn/vit.py) and ``resnet`` (nn/resnet.py).

Input scaling: the loader yields uint8 images; the task feeds the model float32
``x / 127.5 - 1`` in [-1, 1] (``data.image_ops.to_model_range``), so every model sees the same
range.

Augmentation (``config.data.augment``): ``none``, ``crop`` (zero-pad by ``data.crop_padding``
pixels, 4 by default, then a random crop back to the original size), ``flip`` (random
horizontal flip) or ``crop_flip`` (the standard CIFAR recipe). It runs in jnp inside the loss
on the uint8 images, drawn from the train step's RNG (``fold_in(state.rng, step)``), so it is
a pure function of (seed, step) and a resumed run sees exactly the augmentations of an
uninterrupted one. Flips suit CIFAR-10 and Fashion-MNIST, not digits.

Metrics: periodic eval reports loss (mean cross-entropy, nats) and accuracy over the first
``eval.num_batches`` batches of the eval split (``data.eval_split``, default ``test``; 0 = the
whole split); ``final_eval`` reports ``test_accuracy``, ``test_loss`` and ``test_examples`` over
the WHOLE eval split (every example exactly once), with the EMA params when the run keeps them.

Axis key: B batch, H height, W width, C channels, K classes.
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

import seqgen_jax.nn  # noqa: F401  (registers the models)
from seqgen_jax.data import images
from seqgen_jax.data.builder import DataOptions
from seqgen_jax.data.image_ops import CLASSIFIER_ASSET_FILE, to_model_range
from seqgen_jax.dtypes import compute_dtype_from_name
from seqgen_jax.errors import ConfigError
from seqgen_jax.registry import MODELS, TASKS
from seqgen_jax.train.task import Task

PyTree = Any
AUGMENTATIONS = ("none", "crop", "flip", "crop_flip")
_AUGMENT_SALT = 0xA06  # separates the augmentation draws from the dropout RNG


def crop_and_flip(images_BHWC: jax.Array, dy_B: jax.Array, dx_B: jax.Array, flip_B: jax.Array,
                  padding: int) -> jax.Array:
  """Zero-pads by ``padding``, crops each image at offset (dy, dx) of the padded image back to
  H x W, then mirrors it left-right where ``flip_B``; same dtype as the input."""
  b, h, w, c = images_BHWC.shape
  x = images_BHWC
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    crop = lambda img, dy, dx: jax.lax.dynamic_slice(img, (dy, dx, 0), (h, w, c))
    x = jax.vmap(crop)(x, dy_B, dx_B)
  return jnp.where(flip_B[:, None, None, None], x[:, :, ::-1, :], x)


def random_augment(images_BHWC: jax.Array, rng: jax.Array, *, padding: int, flip: bool
                   ) -> jax.Array:
  """Random crop (offsets uniform in [0, 2 * padding]) and, if ``flip``, a fair-coin flip."""
  b = images_BHWC.shape[0]
  k_dy, k_dx, k_flip = jax.random.split(rng, 3)
  dy_B = jax.random.randint(k_dy, (b,), 0, 2 * padding + 1)
  dx_B = jax.random.randint(k_dx, (b,), 0, 2 * padding + 1)
  flip_B = (jax.random.bernoulli(k_flip, 0.5, (b,)) if flip
            else jnp.zeros((b,), bool))
  return crop_and_flip(images_BHWC, dy_B, dx_B, flip_B, padding)


def nll_and_correct(logits_BK: jax.Array, labels_B: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-example cross-entropy (float32) and argmax correctness, both [B]."""
  logp_BK = jax.nn.log_softmax(logits_BK.astype(jnp.float32), axis=-1)
  nll_B = -jnp.take_along_axis(logp_BK, labels_B[:, None], axis=-1)[:, 0]
  return nll_B, (jnp.argmax(logits_BK, axis=-1) == labels_B).astype(jnp.float32)


@TASKS.register("image_classify")
class ImageClassifyTask(Task):
  """Supervised image classification with any model of ``kind="image_classifier"``."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    dc = config.data
    self.augment = dc.get("augment", "none")
    if self.augment not in AUGMENTATIONS:
      raise ConfigError(f"unknown data.augment '{self.augment}'; choose one of: "
                        f"{', '.join(AUGMENTATIONS)}")
    self.crop_padding = int(dc.get("crop_padding", 4)) if "crop" in self.augment else 0
    if self.crop_padding < 0:
      raise ConfigError(f"data.crop_padding must be >= 0, got {self.crop_padding}")
    model_builder = MODELS.get(config.model.name, kind="image_classifier")
    self.eval_batch_size = config.get("eval", {}).get("batch_size", 0) or config.train.batch_size
    self.eval_split = dc.get("eval_split", "test")
    images.IMAGE_DATASETS.get(dc.name)  # an unknown name fails before any preparation
    self.data = images.load(dc.name, DataOptions.from_config(dc),
                            batch_size=config.train.batch_size,
                            eval_batch_size=self.eval_batch_size, seed=config.train.seed,
                            eval_split=self.eval_split)
    self.dtype = compute_dtype_from_name(config.train.get("compute_dtype", "float32"))
    self.model: nn.Module = model_builder(config.model, image_shape=self.data.image_shape,
                                          num_classes=self.data.num_classes, dtype=self.dtype)

  # ---------------------------------------------------------------- training and evaluation

  def init_params(self, rng):
    x_BHWC = jnp.zeros((1, *self.data.image_shape), jnp.float32)
    return self.model.init({"params": rng}, x_BHWC, train=False)["params"]

  def logits(self, params: PyTree, images_BHWC: jax.Array, *, train: bool = False,
             rng: jax.Array | None = None) -> jax.Array:
    """Class logits [B, K] of uint8 images (scaled by ``to_model_range``)."""
    rngs = {"dropout": rng} if rng is not None else {}
    return self.model.apply({"params": params}, to_model_range(images_BHWC), train=train,
                            rngs=rngs)

  def loss_fn(self, params, batch, rng):
    images_BHWC = batch["image"]
    if self.augment != "none":
      images_BHWC = random_augment(images_BHWC, jax.random.fold_in(rng, _AUGMENT_SALT),
                                   padding=self.crop_padding, flip="flip" in self.augment)
    logits_BK = self.logits(params, images_BHWC, train=True, rng=rng)
    nll_B, correct_B = nll_and_correct(logits_BK, batch["label"])
    w_B = batch["weight"]
    total = jnp.maximum(jnp.sum(w_B), 1e-9)
    return jnp.sum(nll_B * w_B) / total, {"accuracy": jnp.sum(correct_B * w_B) / total,
                                          "weight": jnp.sum(w_B)}

  def eval_step(self, params, batch):
    nll_B, correct_B = nll_and_correct(self.logits(params, batch["image"]), batch["label"])
    w_B = batch["weight"]
    return {"nll": jnp.sum(nll_B * w_B), "correct": jnp.sum(correct_B * w_B),
            "examples": jnp.sum(w_B)}

  def finalize_eval(self, sums):
    n = max(float(sums["examples"]), 1e-9)
    return {"loss": float(sums["nll"]) / n, "accuracy": float(sums["correct"]) / n}

  def train_source(self):
    return self.data.train

  def eval_source(self):
    n = self.config.get("eval", {}).get("num_batches", 0)
    full = self.data.eval_batches
    return self.data.eval, (min(n, full) if n else full)

  def final_eval(self, params, rng, evaluator):
    """Loss and accuracy over every example of the eval split (``test`` by default)."""
    del rng
    sums = evaluator.sums(self.eval_step, params, self.data.eval, self.data.eval_batches)
    metrics = self.finalize_eval(sums)
    s = self.eval_split
    return {f"{s}_accuracy": metrics["accuracy"], f"{s}_loss": metrics["loss"],
            f"{s}_examples": float(sums["examples"])}

  def save_assets(self, workdir: str) -> None:
    """``image_classifier.json``: what loading the checkpoint as a classifier needs."""
    info = {"dataset": self.config.data.name, "image_shape": list(self.data.image_shape),
            "num_classes": self.data.num_classes, "class_names": self.data.class_names,
            "input_scaling": "x / 127.5 - 1"}
    with open(os.path.join(workdir, CLASSIFIER_ASSET_FILE), "w") as f:
      json.dump(info, f, indent=2)
