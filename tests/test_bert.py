"""BERT-style encoder models: padding never changes the real positions of the masked LM or the
classifier, and appending padding does not change the classifier's output."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import seqgen_jax.nn  # noqa: F401  (registers the models)
from seqgen_jax.registry import MODELS

V, T = 13, 10


def _cfg(**kw):
  return ml_collections.ConfigDict(dict(num_layers=2, num_heads=4, d_model=16, d_ff=32, **kw))


def _init(model, *args, seed=0):
  """Jitted init: one compilation instead of one per operation."""
  return jax.jit(model.init)(jax.random.PRNGKey(seed), *args)


def _toks(seed, shape, hi=V):
  return jax.random.randint(jax.random.PRNGKey(seed), shape, 1, hi)


def test_padding_does_not_change_real_positions_of_encoders():
  toks = _toks(3, (2, T))
  mask = jnp.arange(T)[None, :] < jnp.array([[T], [6]])
  other = jnp.where(mask, toks, _toks(4, (2, T)))  # different ids under the padding
  longer, longer_mask = (jnp.pad(toks, ((0, 0), (0, 3)), constant_values=7),
                         jnp.pad(mask, ((0, 0), (0, 3))))
  mlm = MODELS.get("bert", kind="masked_lm")(_cfg(), vocab_size=V, max_len=T + 3)
  p = _init(mlm, toks, mask)
  apply = jax.jit(mlm.apply)
  a, b = np.asarray(apply(p, toks, mask)), np.asarray(apply(p, other, mask))
  np.testing.assert_allclose(a[0], b[0], atol=1e-6)
  np.testing.assert_allclose(a[1, :6], b[1, :6], atol=1e-6)
  assert np.max(np.abs(a[1, 6:] - b[1, 6:])) > 1e-3  # pad positions themselves do change
  clf = MODELS.get("transformer", kind="classifier")(_cfg(), vocab_size=V, num_classes=3,
                                                     max_len=T + 3)
  pc = _init(clf, toks, mask, seed=1)
  apply = jax.jit(clf.apply)
  want = apply(pc, toks, mask)
  np.testing.assert_allclose(apply(pc, other, mask), want, atol=1e-6)
  np.testing.assert_allclose(apply(pc, longer, longer_mask), want, atol=1e-5)

