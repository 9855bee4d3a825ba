"""The shared Transformer machinery (nn/transformer.py): scan over layers == unrolled, remat keeps
gradients, the layer-layout converters, every contract kind registered, and one-line errors for
bad choices. The models have their own test files (test_gpt.py, test_bert.py, ...)."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import seqgen_jax.nn  # noqa: F401  (registers the models)
from seqgen_jax.errors import ConfigError
from seqgen_jax.nn.gpt import GPT
from seqgen_jax.nn.transformer import stack_layer_params, unstack_layer_params
from seqgen_jax.registry import MODELS

V, T = 13, 10


def _cfg(**kw):
  return ml_collections.ConfigDict(dict(num_layers=2, num_heads=4, d_model=16, d_ff=32, **kw))


def _init(model, *args, seed=0):
  """Jitted init: one compilation instead of one per operation."""
  return jax.jit(model.init)(jax.random.PRNGKey(seed), *args)


def _toks(seed, shape, hi=V):
  return jax.random.randint(jax.random.PRNGKey(seed), shape, 1, hi)


def test_scan_over_layers_equals_unrolled_and_remat_keeps_gradients():
  kw = dict(vocab_size=V, max_len=T, num_layers=3, num_heads=4, d_model=16, num_kv_heads=2)
  unrolled, scanned = GPT(**kw), GPT(**kw, scan_layers=True, remat="full")
  toks = _toks(2, (2, T))
  p_un = _init(unrolled, toks)["params"]
  p_sc = {**p_un, "decoder": stack_layer_params(p_un["decoder"])}
  assert p_sc["decoder"]["layers"]["attn"]["qkv"]["kernel"].shape == (3, 16, 8, 4)
  chex_equal = lambda a, b: jax.tree.map(np.testing.assert_array_equal, a, b)
  chex_equal(unstack_layer_params(p_sc["decoder"]), p_un["decoder"])

  def loss(model, p):
    logits = model.apply({"params": p}, toks[:, :-1])
    return -jnp.mean(jax.nn.log_softmax(logits)[..., 0]), logits

  (l_un, lg_un), g_un = jax.jit(jax.value_and_grad(functools.partial(loss, unrolled),
                                                   has_aux=True))(p_un)
  (l_sc, lg_sc), g_sc = jax.jit(jax.value_and_grad(functools.partial(loss, scanned),
                                                   has_aux=True))(p_sc)
  np.testing.assert_allclose(np.asarray(lg_sc), np.asarray(lg_un), atol=1e-6, rtol=1e-6)
  g_un = {**g_un, "decoder": stack_layer_params(g_un["decoder"])}
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), g_sc, g_un)
  # a fresh init of the scanned model gives independent layers (split RNGs)
  k = _init(scanned, toks)["params"]["decoder"]["layers"]["mlp"]["fc"]
  assert not np.allclose(k["kernel"][0], k["kernel"][1])


# ------------------------------------------------------------------------------ registry


def test_every_contract_kind_is_registered_and_bad_choices_are_clear():
  for kind, name in [("causal_lm", "gpt"), ("masked_lm", "bert"), ("classifier", "bert"),
                     ("classifier", "transformer"), ("seq2seq", "transformer"),
                     ("forecaster", "transformer"), ("image_classifier", "vit")]:
    assert name in MODELS.names(kind=kind, family="transformer")
  gpt = MODELS.get("gpt", kind="causal_lm")
  with pytest.raises(ConfigError, match="unknown positions 'alibi'; choose one of: learned, "
                                         "sinusoidal, rotary"):
    gpt(_cfg(positions="alibi"), vocab_size=V, max_len=T)
  with pytest.raises(ConfigError, match="unknown norm 'mid'; choose one of: pre, post"):
    MODELS.get("transformer", kind="seq2seq")(_cfg(norm="mid"), src_vocab_size=V,
                                              tgt_vocab_size=V - 2, max_len=T)
  with pytest.raises(ConfigError, match="unknown pooling 'max'"):
    MODELS.get("bert", kind="classifier")(_cfg(pooling="max"), vocab_size=V, num_classes=2,
                                          max_len=T)
  bad = gpt(_cfg(attention="flash"), vocab_size=V, max_len=T)
  with pytest.raises(ConfigError, match="unknown attention implementation 'flash'"):
    _init(bad, jnp.zeros((1, 2), jnp.int32))
  bad = gpt(_cfg(remat="some"), vocab_size=V, max_len=T)
  with pytest.raises(ConfigError, match="unknown remat 'some'; choose one of: none, full, dots"):
    _init(bad, jnp.zeros((1, 2), jnp.int32))
  with pytest.raises(ConfigError, match="num_heads=4 must be a multiple of num_kv_heads=3"):
    gpt(_cfg(num_kv_heads=3), vocab_size=V, max_len=T).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))
