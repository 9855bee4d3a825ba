"""Scaled dot-product attention and multi-head self-attention.

Axis key: B batch, T query positions, S key/value positions, N heads, H head width, D model width.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def causal_mask(t: int, s: int | None = None) -> jax.Array:
  """[T, S] boolean, True where query t may attend key s (s <= t, keys aligned to the end)."""
  s = t if s is None else s
  return jnp.arange(s)[None, :] <= jnp.arange(t)[:, None] + (s - t)


def dot_product_attention(q_BTNH: jax.Array, k_BSNH: jax.Array, v_BSNH: jax.Array, *,
                          mask: jax.Array | None = None, causal: bool = False,
                          dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None
                          ) -> jax.Array:
  """softmax(q k^T / sqrt(H)) v with optional boolean mask (broadcastable to [B, N, T, S]).

  The logits and the softmax are computed in float32 whatever the input dtype.
  """
  h = q_BTNH.shape[-1]
  logits_BNTS = jnp.einsum("btnh,bsnh->bnts", q_BTNH, k_BSNH,
                           preferred_element_type=jnp.float32) / math.sqrt(h)
  if causal:
    cm = causal_mask(q_BTNH.shape[1], k_BSNH.shape[1])
    mask = cm if mask is None else jnp.logical_and(mask, cm)
  if mask is not None:
    logits_BNTS = jnp.where(mask, logits_BNTS, jnp.finfo(jnp.float32).min)
  probs_BNTS = jax.nn.softmax(logits_BNTS, axis=-1)
  if dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs_BNTS.shape)
    probs_BNTS = jnp.where(keep, probs_BNTS / (1.0 - dropout_rate), 0.0)
  return jnp.einsum("bnts,bsnh->btnh", probs_BNTS.astype(v_BSNH.dtype), v_BSNH)


class SelfAttention(nn.Module):
  """Multi-head self-attention with a fused q/k/v projection (GPT-2 layout: [D, 3, N, H])."""

  num_heads: int
  dropout: float = 0.0
  use_bias: bool = True
  init_std: float = 0.02
  out_init_std: float = 0.02
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x_BTD: jax.Array, *, causal: bool, mask: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    d = x_BTD.shape[-1]
    if d % self.num_heads:
      raise ValueError(f"model width {d} is not divisible by num_heads={self.num_heads}")
    h = d // self.num_heads
    qkv_BT3NH = nn.DenseGeneral((3, self.num_heads, h), use_bias=self.use_bias, dtype=self.dtype,
                                kernel_init=nn.initializers.normal(self.init_std),
                                name="qkv")(x_BTD)
    q, k, v = (qkv_BT3NH[:, :, i] for i in range(3))
    rate = self.dropout if train else 0.0
    out_BTNH = dot_product_attention(
        q, k, v, mask=mask, causal=causal, dropout_rate=rate,
        dropout_rng=self.make_rng("dropout") if rate > 0 else None)
    return nn.DenseGeneral(d, axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype,
                           kernel_init=nn.initializers.normal(self.out_init_std),
                           name="out")(out_BTNH)
