"""Blockwise (flash) attention against the XLA reference path: outputs and every gradient,
odd lengths, grouped-query heads, masks, causal alignment, dtypes; memory linear in T."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqgen_jax.errors import ConfigError
from seqgen_jax.nn import attention
from seqgen_jax.nn.attention import dot_product_attention, padding_mask
from seqgen_jax.nn.blockwise_attention import blockwise_attention


def _inputs(b, t, s, n, kh, h, dtype, seed=0):
  ks = jax.random.split(jax.random.PRNGKey(seed), 4)
  q = jax.random.normal(ks[0], (b, t, n, h)).astype(dtype)
  k = jax.random.normal(ks[1], (b, s, kh, h)).astype(dtype)
  v = jax.random.normal(ks[2], (b, s, kh, h)).astype(dtype)
  g = jax.random.normal(ks[3], (b, t, n, h)).astype(dtype)
  return q, k, v, g


def _mask(kind, b, n, t, s):
  if kind is None:
    return None
  if kind == "padding":  # the second sequence keeps only its first third
    lens = jnp.array([s, max(1, s // 3)] + [s] * (b - 2))[:b]
    return padding_mask(jnp.arange(s)[None, :] < lens[:, None])
  return jax.random.bernoulli(jax.random.PRNGKey(7), 0.7, (b, n, t, s))  # "random": [B,N,T,S]


def _fwd_bwd(fn, q, k, v, g):
  out, vjp = jax.vjp(fn, q, k, v)
  return (out, *vjp(g))


CASES = [  # b, t, s, n, kh, h, causal, mask, block_q, block_k
    (2, 37, 37, 4, 4, 16, True, None, 8, 16),  # lengths not divisible by the blocks
    (2, 37, 37, 4, 2, 16, True, "padding", 16, 8),  # GQA, padding mask
    (2, 37, 53, 4, 1, 16, False, "padding", 16, 8),  # multi-query, cross-attention shape
    (2, 40, 53, 4, 2, 16, True, "random", 16, 16),  # causal with S > T (keys end-aligned)
    (1, 64, 64, 2, 2, 32, False, "random", 64, 64),  # one block each way
    (2, 5, 29, 4, 2, 16, True, None, 8, 8),  # a few queries over a long causal prefix
]


@pytest.mark.parametrize("b,t,s,n,kh,h,causal,mask_kind,block_q,block_k", CASES)
def test_blockwise_equals_xla_forward_and_gradients(b, t, s, n, kh, h, causal, mask_kind,
                                                    block_q, block_k):
  q, k, v, g = _inputs(b, t, s, n, kh, h, jnp.float32)
  mask = _mask(mask_kind, b, n, t, s)
  want = _fwd_bwd(lambda q, k, v: dot_product_attention(q, k, v, mask=mask, causal=causal),
                  q, k, v, g)
  got = jax.jit(lambda q, k, v, g: _fwd_bwd(lambda q, k, v: blockwise_attention(
      q, k, v, mask=mask, causal=causal, block_q=block_q, block_k=block_k), q, k, v, g))(
          q, k, v, g)
  for name, w, x in zip(("out", "dq", "dk", "dv"), want, got):
    assert x.shape == w.shape and x.dtype == w.dtype, name
    np.testing.assert_allclose(x, w, rtol=2e-5, atol=2e-5 * float(jnp.max(jnp.abs(w))),
                               err_msg=name)


def test_blockwise_bfloat16_accumulates_in_float32():
  """bf16 inputs: close to the float32 reference computed from the same (rounded) inputs."""
  q, k, v, g = _inputs(2, 33, 33, 4, 2, 16, jnp.bfloat16)
  mask = _mask("padding", 2, 4, 33, 33)
  f32 = lambda x: x.astype(jnp.float32)
  want = _fwd_bwd(lambda q, k, v: dot_product_attention(q, k, v, mask=mask, causal=True),
                  f32(q), f32(k), f32(v), f32(g))
  got = _fwd_bwd(lambda q, k, v: blockwise_attention(q, k, v, mask=mask, causal=True,
                                                     block_q=8, block_k=16), q, k, v, g)
  for name, w, x in zip(("out", "dq", "dk", "dv"), want, got):
    assert x.dtype == jnp.bfloat16, name
    np.testing.assert_allclose(f32(x), w, atol=3e-2 * float(jnp.max(jnp.abs(w))), err_msg=name)


def test_fully_masked_rows_average_the_values_like_xla():
  q, k, v, g = _inputs(1, 8, 8, 2, 2, 8, jnp.float32)
  mask = jnp.zeros((1, 1, 8, 8), bool).at[..., :4, :].set(True)  # rows 4..7 see nothing
  want = _fwd_bwd(lambda q, k, v: dot_product_attention(q, k, v, mask=mask), q, k, v, g)
  got = _fwd_bwd(lambda q, k, v: blockwise_attention(q, k, v, mask=mask, block_q=8, block_k=8),
                 q, k, v, g)
  np.testing.assert_allclose(got[0][:, 4:], jnp.broadcast_to(v.mean(1, keepdims=True),
                                                             (1, 4, 2, 8)), rtol=1e-5)
  for w, x in zip(want, got):
    np.testing.assert_allclose(x, w, rtol=1e-5, atol=1e-6)


def test_block_size_does_not_change_the_result():
  q, k, v, _ = _inputs(1, 50, 50, 2, 2, 8, jnp.float32)
  outs = [blockwise_attention(q, k, v, causal=True, block_q=bq, block_k=bk)
          for bq, bk in ((8, 8), (16, 32), (64, 64))]
  for o in outs[1:]:
    np.testing.assert_allclose(o, outs[0], rtol=1e-5, atol=1e-6)


def _step_temp_bytes(impl: str, t: int) -> int:
  x = jax.ShapeDtypeStruct((1, t, 2, 16), jnp.float32)
  attend = lambda q, k, v: (blockwise_attention(q, k, v, causal=True, block_q=64, block_k=64)
                            if impl == "blockwise" else
                            dot_product_attention(q, k, v, causal=True))
  fn = jax.jit(lambda q, k, v, g: _fwd_bwd(attend, q, k, v, g))
  return fn.lower(x, x, x, x).compile().memory_analysis().temp_size_in_bytes


def test_memory_of_forward_and_backward_grows_linearly_in_t():
  """XLA's memory estimate of forward + backward: x4 the length -> ~x4 the temporaries for
  the blockwise path, ~x16 for the path that materialises T x T (which shows the test can
  tell them apart)."""
  bw = [_step_temp_bytes("blockwise", t) for t in (256, 1024)]
  xla = [_step_temp_bytes("xla", t) for t in (256, 1024)]
  assert bw[1] <= 4.5 * bw[0], bw
  assert xla[1] >= 10 * xla[0], xla


def test_dispatch_errors_and_auto_choice():
  q = jnp.zeros((1, 4, 2, 8))
  with pytest.raises(ConfigError, match="blockwise attention has no attention dropout"):
    dot_product_attention(q, q, q, implementation="blockwise", dropout_rate=0.1,
                          dropout_rng=jax.random.PRNGKey(0))
  with pytest.raises(ConfigError, match="block_q must be positive"):
    blockwise_attention(q, q, q, block_q=0)
  if jax.default_backend() == "cpu":
    long_k = jnp.zeros((1, attention.AUTO_BLOCKWISE_MIN_KEYS, 2, 8))
    assert attention.resolve_implementation("auto", q, long_k) == "blockwise"
    assert attention.resolve_implementation("auto", q, long_k, dropout_rate=0.1) == "xla"
    assert attention.resolve_implementation("auto", q, q) == "xla"
