"""Pixel conventions every image task shares: uint8 <-> [-1, 1], area downsampling, grids.

The loaders of ``seqgen_jax.data.images`` yield uint8 images; every image model (classifier,
autoencoder, denoiser) sees float32 ``x / 127.5 - 1`` in [-1, 1] (``to_model_range``), and its
outputs come back to uint8 through ``to_uint8``. ``CLASSIFIER_ASSET_FILE`` is the file an
image-classifier run writes next to its checkpoints (dataset, image shape, classes, this input
scaling), which the FID feature network (``seqgen_jax.eval.fid``) reads to load it.

Axis key: B batch, N images, H height, W width, C channels.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from seqgen_jax.errors import ConfigError

CLASSIFIER_ASSET_FILE = "image_classifier.json"


def to_model_range(images_BHWC: jax.Array | np.ndarray) -> jax.Array:
  """uint8 [0, 255] pixels -> float32 in [-1, 1], the range every image model sees."""
  return jnp.asarray(images_BHWC, jnp.float32) / 127.5 - 1.0


def to_uint8(x_BHWC: jax.Array | np.ndarray) -> np.ndarray:
  """[-1, 1] floats -> uint8 pixels (clipped, rounded)."""
  x = np.asarray(x_BHWC, np.float32)
  return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def area_downsample(x_BHWC: jax.Array, size: int) -> jax.Array:
  """Mean over non-overlapping f x f blocks (f = H / size; H and W divisible by f)."""
  b, h, w, c = x_BHWC.shape
  if h % size or w % size or h // size != w // size:
    raise ConfigError(f"cannot area-downsample {h}x{w} images to {size}x{size}; "
                      "the size must divide both sides by the same factor")
  f = h // size
  return x_BHWC.reshape(b, size, f, size, f, c).mean(axis=(2, 4))


def image_grid(images_NHWC: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
  """uint8 [N, H, W, C] -> one uint8 [rows*(H+pad)+pad, cols*(W+pad)+pad, C] grid image."""
  n, h, w, c = images_NHWC.shape
  rows = math.ceil(n / cols)
  grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
  for i in range(n):
    r, q = divmod(i, cols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h,
         pad + q * (w + pad):pad + q * (w + pad) + w] = images_NHWC[i]
  return grid
