"""Transformer models: KV cache == full forward, causality, padding invariance, scan == unrolled,
remat keeps gradients, ViT / forecaster invariants, cached sampling, registry and config errors."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from seqgen_jax import decoding
from seqgen_jax.errors import ConfigError
from seqgen_jax.nn.transformer import (
  GPT,
  EncoderDecoder,
  ViT,
  stack_layer_params,
  unstack_layer_params,
)
from seqgen_jax.registry import MODELS

V, T = 13, 10


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


def test_rotary_gqa_gpt_is_causal_by_gradient():
  model = GPT(vocab_size=V, max_len=T, num_layers=2, num_heads=4, d_model=16, num_kv_heads=2,
              positions="rotary")
  toks = _toks(1, (1, T))
  params = _init(model, toks)
  x_BTD = jax.jit(functools.partial(model.apply, method=GPT.embed))(params, toks)
  proj_V = jax.random.normal(jax.random.PRNGKey(2), (V,))
  f = lambda x_TD: model.apply(params, x_TD[None], method=GPT.logits_from_embeddings)[0] @ proj_V
  influence_TT = np.asarray(jnp.abs(jax.jit(jax.jacrev(f))(x_BTD[0])).sum(-1))
  future = np.triu(np.ones((T, T), bool), k=1)
  assert np.all(influence_TT[future] == 0.0) and np.all(influence_TT[~future] > 0.0)


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


# ------------------------------------------------------------------------------ encoders


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


def _seq2seq(**kw):
  return MODELS.get("transformer", kind="seq2seq")(_cfg(**kw), src_vocab_size=V,
                                                   tgt_vocab_size=V - 2, max_len=T)


@pytest.mark.parametrize("kw", [dict(), dict(norm="pre", num_kv_heads=2, scan_layers=True)],
                         ids=["post_ln", "pre_ln_gqa_scan"])
def test_encoder_decoder_cache_padding_and_causality(kw):
  model = _seq2seq(**kw)
  src = _toks(5, (2, T))
  src_mask = jnp.arange(T)[None, :] < jnp.array([[T], [4]])
  tgt = _toks(6, (2, 8), V - 2)
  params = _init(model, src, src_mask, tgt)
  full_fn = jax.jit(model.apply)
  full = full_fn(params, src, src_mask, tgt)

  @jax.jit
  def incremental(params):
    memory = model.apply(params, src, src_mask, method=EncoderDecoder.encode)
    cache = model.apply(params, memory, src_mask, 8, method=EncoderDecoder.init_cache)

    def step(cache, i):
      tok = jax.lax.dynamic_slice_in_dim(tgt, i, 1, axis=1)
      logits, cache = model.apply(params, tok, cache, i, method=EncoderDecoder.decode)
      return cache, logits[:, 0]

    return jax.lax.scan(step, cache, jnp.arange(8))[1].transpose(1, 0, 2)

  np.testing.assert_allclose(np.asarray(incremental(params)), np.asarray(full), atol=2e-5)
  # source padding is invisible to the decoder; so is the future of the target
  src2 = jnp.where(src_mask, src, _toks(7, (2, T)))
  np.testing.assert_allclose(full_fn(params, src2, src_mask, tgt), full, atol=1e-6)
  tgt2 = tgt.at[:, 5].set((tgt[:, 5] + 1) % (V - 2))
  changed = np.asarray(full_fn(params, src, src_mask, tgt2))
  np.testing.assert_allclose(changed[:, :5], np.asarray(full[:, :5]), atol=1e-6)
  assert np.all(np.max(np.abs(changed[:, 5] - np.asarray(full[:, 5])), axis=-1) > 1e-3)


# ------------------------------------------------------------------------------ ViT, forecaster


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
    _seq2seq(norm="mid")
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
