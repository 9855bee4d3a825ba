"""ViT: the patch embedding is a linear map of each flattened patch, images are independent of
each other in a batch, every patch matters, and shape errors are clear."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import seqgen_jax.nn  # noqa: F401  (registers the models)
from seqgen_jax.errors import ConfigError
from seqgen_jax.nn.vit import ViT
from seqgen_jax.registry import MODELS


def _cfg(**kw):
  return ml_collections.ConfigDict(dict(num_layers=2, num_heads=4, d_model=16, d_ff=32, **kw))


def _init(model, *args, seed=0):
  """Jitted init: one compilation instead of one per operation."""
  return jax.jit(model.init)(jax.random.PRNGKey(seed), *args)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_vit_patch_embedding_and_batch_independence(pooling):
  model = MODELS.get("vit", kind="image_classifier")(
      _cfg(patch_size=4, pooling=pooling), image_shape=(8, 12, 3), num_classes=5)
  images = jax.random.uniform(jax.random.PRNGKey(0), (3, 8, 12, 3))
  params = _init(model, images, seed=1)
  # the head is zero-initialised: give it weights so the logits say something
  params = jax.tree.map(lambda x: x, params)
  params["params"]["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(2), (16, 5))
  apply = jax.jit(model.apply)
  logits = apply(params, images)
  assert logits.shape == (3, 5) and logits.dtype == jnp.float32
  np.testing.assert_allclose(apply(params, images[1:2])[0], logits[1], atol=1e-5)
  # the patch embedding is a linear map of each flattened 4x4x3 patch (row-major patches)
  pe = params["params"]["patch_embed"]
  patches = np.asarray(images).reshape(3, 2, 4, 3, 4, 3).transpose(0, 1, 3, 2, 4, 5)
  want = patches.reshape(3, 6, 48) @ np.asarray(pe["kernel"]).reshape(48, 16) + pe["bias"]
  _, seen = jax.jit(functools.partial(model.apply, capture_intermediates=True))(params, images)
  got = seen["intermediates"]["patch_embed"]["__call__"][0]
  np.testing.assert_allclose(np.asarray(got).reshape(3, 6, 16), want, atol=1e-5)
  n_tokens = params["params"]["pos_embed"]["embedding"].shape[0]
  assert n_tokens == 6 + (pooling == "cls")
  # every patch matters
  bumped = apply(params, images.at[:, 7, 11].add(1.0))
  assert np.all(np.max(np.abs(bumped - logits), axis=-1) > 1e-6)


def test_vit_shape_errors():
  with pytest.raises(ConfigError, match="image size 8x10 is not divisible by patch_size=4"):
    MODELS.get("vit", kind="image_classifier")(_cfg(patch_size=4), image_shape=(8, 10, 1),
                                               num_classes=2)
  model = ViT(num_classes=2, image_shape=(8, 8, 1), patch_size=4, num_layers=1, num_heads=2,
              d_model=8)
  with pytest.raises(ValueError, match=r"images have shape \(8, 8, 3\)"):
    _init(model, jnp.zeros((1, 8, 8, 3)))

