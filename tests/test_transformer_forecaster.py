"""The Transformer forecaster: output shape, and instance normalisation makes it equivariant to a
per-feature affine map of its input."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import seqgen_jax.nn  # noqa: F401  (registers the models)
from seqgen_jax.registry import MODELS


def _cfg(**kw):
  return ml_collections.ConfigDict(dict(num_layers=2, num_heads=4, d_model=16, d_ff=32, **kw))


def _init(model, *args, seed=0):
  """Jitted init: one compilation instead of one per operation."""
  return jax.jit(model.init)(jax.random.PRNGKey(seed), *args)


def test_forecaster_shape_and_affine_equivariance():
  model = MODELS.get("transformer", kind="forecaster")(_cfg(), num_features=3, lookback=12,
                                                       horizon=5)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 3))
  params = _init(model, x, seed=1)
  apply = jax.jit(model.apply)
  y = apply(params, x)
  assert y.shape == (2, 5, 3)
  # instance normalisation: forecasting a*x + b gives a*f(x) + b (per feature, a > 0)
  a, b = jnp.array([2.0, 0.5, 3.0]), jnp.array([10.0, -4.0, 0.3])
  np.testing.assert_allclose(apply(params, a * x + b), a * y + b, rtol=1e-3, atol=1e-3)

