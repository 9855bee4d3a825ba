"""GPT decoder: KV-cache decoding == the full forward pass (MHA / GQA / MQA, learned / rotary /
sinusoidal positions, unrolled / scanned layers), cached sampling == full-context sampling,
GPT-2 parameter count, dropout only in training, a clear error for too long inputs. Its
causality is checked in test_causality.py."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import seqgen_jax.nn  # noqa: F401  (registers the models)
from seqgen_jax import decoding
from seqgen_jax.nn.gpt import GPT
from seqgen_jax.registry import MODELS

V, T = 13, 10


def _tiny(**kw):
  return GPT(vocab_size=11, max_len=12, num_layers=2, num_heads=2, d_model=16, **kw)


def _cfg(**kw):
  return ml_collections.ConfigDict(dict(num_layers=2, num_heads=4, d_model=16, d_ff=32, **kw))


def _init(model, *args, seed=0):
  """Jitted init: one compilation instead of one per operation."""
  return jax.jit(model.init)(jax.random.PRNGKey(seed), *args)


def _toks(seed, shape, hi=V):
  return jax.random.randint(jax.random.PRNGKey(seed), shape, 1, hi)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _gpt_incremental(model, params, toks_BT, prefill):
  """Prefill ``prefill`` tokens in one call, then one token per step (a lax.scan)."""
  b, t = toks_BT.shape
  cache = model.init_cache(b, t)
  first_BPV, cache = model.apply(params, toks_BT[:, :prefill], cache, 0, method=GPT.decode)

  def step(cache, i):
    tok_B1 = jax.lax.dynamic_slice_in_dim(toks_BT, i, 1, axis=1)
    logits_B1V, cache = model.apply(params, tok_B1, cache, i, method=GPT.decode)
    return cache, logits_B1V[:, 0]

  _, rest_NBV = jax.lax.scan(step, cache, jnp.arange(prefill, t))
  return jnp.concatenate([first_BPV, rest_NBV.transpose(1, 0, 2)], axis=1)


GPT_VARIANTS = {
    "mha_learned": dict(),
    "gqa_rotary": dict(num_kv_heads=2, positions="rotary"),
    "mqa_sinusoidal_scan": dict(num_kv_heads=1, positions="sinusoidal", scan_layers=True),
}


@pytest.mark.parametrize("variant", list(GPT_VARIANTS))
def test_gpt_kv_cache_decoding_equals_full_forward(variant):
  model = MODELS.get("gpt", kind="causal_lm")(_cfg(**GPT_VARIANTS[variant]), vocab_size=V,
                                              max_len=T)
  toks = _toks(0, (2, T))
  params = _init(model, toks, seed=1)
  full = jax.jit(model.apply)(params, toks)
  inc = _gpt_incremental(model, params, toks, 3)
  np.testing.assert_allclose(np.asarray(inc), np.asarray(full), atol=2e-5, rtol=1e-5)
  # and the cache matters: decoding the last token against an empty cache is different
  alone, _ = jax.jit(lambda p, t: model.apply(p, t, model.init_cache(2, T), T - 1,
                                               method=GPT.decode))(params, toks[:, -1:])
  assert np.max(np.abs(np.asarray(alone[:, 0]) - np.asarray(full[:, -1]))) > 1e-3


def test_cached_sampling_equals_full_context_sampling():
  model = GPT(vocab_size=V, max_len=T, num_layers=2, num_heads=4, d_model=16, num_kv_heads=2,
              positions="rotary")
  params = _init(model, jnp.zeros((1, T), jnp.int32))
  logits_fn = lambda t: model.apply(params, t)
  step_fn = lambda t, c, pos: model.apply(params, t, c, pos, method=GPT.decode)
  prompt = jnp.array([[3, 1, 4], [1, 5, 9]])
  variants = (dict(greedy=True), dict(temperature=0.9, top_k=5), dict(top_p=0.8))
  run = jax.jit(lambda r: [(
      decoding.sample_full_context(logits_fn, prompt, T - 3, r, window=T, **kw),
      decoding.sample_incremental(step_fn, model.init_cache(2, T), prompt, T - 3, r, **kw))
      for kw in variants])
  for want, got in run(jax.random.PRNGKey(5)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


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
