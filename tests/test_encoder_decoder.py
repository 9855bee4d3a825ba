"""The encoder-decoder Transformer: cached decoding == teacher forcing, and source padding is
invisible to the decoder (its causality is checked in test_causality.py)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import seqgen_jax.nn  # noqa: F401  (registers the models)
from seqgen_jax.nn.encoder_decoder import EncoderDecoder
from seqgen_jax.registry import MODELS

V, T = 13, 10


def _cfg(**kw):
  return ml_collections.ConfigDict(dict(num_layers=2, num_heads=4, d_model=16, d_ff=32, **kw))


def _init(model, *args, seed=0):
  """Jitted init: one compilation instead of one per operation."""
  return jax.jit(model.init)(jax.random.PRNGKey(seed), *args)


def _toks(seed, shape, hi=V):
  return jax.random.randint(jax.random.PRNGKey(seed), shape, 1, hi)


def _seq2seq(**kw):
  return MODELS.get("transformer", kind="seq2seq")(_cfg(**kw), src_vocab_size=V,
                                                   tgt_vocab_size=V - 2, max_len=T)


@pytest.mark.parametrize("kw", [dict(), dict(norm="pre", num_kv_heads=2, scan_layers=True)],
                         ids=["post_ln", "pre_ln_gqa_scan"])
def test_encoder_decoder_cache_and_source_padding(kw):
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
  # source padding is invisible to the decoder
  src2 = jnp.where(src_mask, src, _toks(7, (2, T)))
  np.testing.assert_allclose(full_fn(params, src2, src_mask, tgt), full, atol=1e-6)
