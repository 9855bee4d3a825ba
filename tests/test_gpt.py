"""GPT decoder: causality by gradient, GPT-2 parameter count, dropout only in training."""

import jax
import jax.numpy as jnp
import numpy as np

from seqgen_jax.nn.transformer import GPT


def _tiny(**kw):
  return GPT(vocab_size=11, max_len=12, num_layers=2, num_heads=2, d_model=16, **kw)


def test_logits_at_t_do_not_depend_on_inputs_after_t():
  model = _tiny()
  tokens = jax.random.randint(jax.random.PRNGKey(1), (1, 12), 0, 11)
  params = model.init(jax.random.PRNGKey(0), tokens)
  x_BTD = model.apply(params, tokens, method=GPT.embed)
  proj_V = jax.random.normal(jax.random.PRNGKey(2), (11,))

  def f(x_TD):
    return model.apply(params, x_TD[None], method=GPT.logits_from_embeddings)[0] @ proj_V

  jac_TTD = jax.jit(jax.jacrev(f))(x_BTD[0])  # d out[t] / d x[s]
  influence_TT = np.asarray(jnp.abs(jac_TTD).sum(-1))
  future = np.triu(np.ones((12, 12), bool), k=1)
  assert np.all(influence_TT[future] == 0.0)  # exactly zero, not merely small
  assert np.all(influence_TT[~future] > 0.0)  # and every past position does matter


def test_gpt2_small_parameter_count():
  # GPT-2 "124M" (tied embeddings): 124,439,808 parameters.
  model = GPT(vocab_size=50257, max_len=1024, num_layers=12, num_heads=12, d_model=768)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32)))
  assert sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)) == 124_439_808


def test_dropout_is_off_in_eval_and_random_in_training():
  model = _tiny(dropout=0.5)
  tokens = jnp.arange(12)[None] % 11
  params = model.init(jax.random.PRNGKey(0), tokens)
  a = model.apply(params, tokens)
  b = model.apply(params, tokens)
  np.testing.assert_array_equal(a, b)
  t1 = model.apply(params, tokens, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  t2 = model.apply(params, tokens, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
  assert not np.allclose(t1, t2) and not np.allclose(t1, a)


def test_too_long_input_is_a_clear_error():
  model = _tiny()
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
  try:
    model.apply(params, jnp.zeros((1, 13), jnp.int32))
  except ValueError as e:
    assert "sequence length 13 exceeds the model's max_len=12" in str(e)
  else:
    raise AssertionError("expected a ValueError")
