"""Pixel conventions of seqgen_jax/data/image_ops.py against plain NumPy loops."""

import jax.numpy as jnp
import numpy as np
import pytest

from seqgen_jax.data import image_ops
from seqgen_jax.errors import ConfigError


def test_uint8_and_model_range_are_inverse_and_clip():
  x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
  y = np.asarray(image_ops.to_model_range(x))
  assert y.dtype == np.float32 and y.min() == -1.0 and y.max() == 1.0
  np.testing.assert_allclose(y.ravel(), [v / 127.5 - 1 for v in range(256)], atol=1e-6)
  np.testing.assert_array_equal(image_ops.to_uint8(y), x)
  np.testing.assert_array_equal(image_ops.to_uint8(np.array([-3.0, 2.0, 0.0])), [0, 255, 128])


def test_area_downsample_is_the_block_mean():
  x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype(np.float32)
  got = np.asarray(image_ops.area_downsample(jnp.asarray(x), 2))
  want = np.zeros((2, 2, 2, 3), np.float32)
  for i in range(2):
    for j in range(2):
      want[:, i, j] = x[:, 3 * i:3 * i + 3, 3 * j:3 * j + 3].mean(axis=(1, 2))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  with pytest.raises(ConfigError, match="cannot area-downsample 6x6 images to 4x4"):
    image_ops.area_downsample(jnp.asarray(x), 4)


def test_image_grid_places_images_row_major_on_white():
  imgs = np.stack([np.full((2, 3, 1), 10 * (i + 1), np.uint8) for i in range(5)])
  grid = image_ops.image_grid(imgs, cols=3)
  assert grid.shape == (2 * 3 + 1, 3 * 4 + 1, 1)
  for i in range(5):
    r, q = divmod(i, 3)
    assert (grid[1 + 3 * r:3 + 3 * r, 1 + 4 * q:4 + 4 * q] == 10 * (i + 1)).all()
  assert (grid[0] == 255).all() and (grid[4:6, 9:12] == 255).all()  # border; the empty sixth slot
