"""Autoregressive sampling: temperature, top-k and top-p, compiled as one loop.

``sample_full_context`` re-runs the model on a sliding window for every new token (no cache): it
works with any causal model given as ``logits_fn(tokens_BT) -> logits_BTV`` and is what the
training loop's sample hook uses. Axis key: B batch, T positions, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def filter_logits(logits_BV: jax.Array, *, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> jax.Array:
  """Temperature scaling, then top-k, then nucleus (top-p) filtering; removed entries -> -inf."""
  logits_BV = logits_BV.astype(jnp.float32) / max(temperature, 1e-6)
  neg_inf = jnp.finfo(jnp.float32).min
  if top_k is not None and top_k > 0:
    kth_BV = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
    logits_BV = jnp.where(logits_BV < kth_BV, neg_inf, logits_BV)
  if top_p is not None and top_p < 1.0:
    sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
    cum_BV = jnp.cumsum(jax.nn.softmax(sorted_BV, axis=-1), axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
    cutoff_idx_B1 = jnp.sum(cum_BV < top_p, axis=-1, keepdims=True)
    cutoff_B1 = jnp.take_along_axis(sorted_BV, cutoff_idx_B1, axis=-1)
    logits_BV = jnp.where(logits_BV < cutoff_B1, neg_inf, logits_BV)
  return logits_BV


def sample_full_context(logits_fn: Callable[[jax.Array], jax.Array], prompt_BP: jax.Array,
                        num_new: int, rng: jax.Array, *, window: int, temperature: float = 1.0,
                        top_k: int | None = None, top_p: float | None = None,
                        greedy: bool = False) -> jax.Array:
  """Extends ``prompt_BP`` by ``num_new`` tokens; returns [B, P + num_new].

  Each step runs ``logits_fn`` on the last ``window`` tokens (the model's context length), so
  the result equals step-by-step generation with a full forward pass per token.
  """
  b, p = prompt_BP.shape
  total = p + num_new
  buf_BL = jnp.zeros((b, max(total, window)), prompt_BP.dtype).at[:, :p].set(prompt_BP)

  def body(i, carry):
    buf_BL, rng = carry
    start = jnp.clip(i - window, 0, buf_BL.shape[1] - window)
    ctx_BW = jax.lax.dynamic_slice_in_dim(buf_BL, start, window, axis=1)
    logits_BV = jax.lax.dynamic_index_in_dim(logits_fn(ctx_BW), i - 1 - start, axis=1,
                                             keepdims=False)
    rng, sub = jax.random.split(rng)
    if greedy:
      tok_B = jnp.argmax(logits_BV, axis=-1)
    else:
      tok_B = jax.random.categorical(
          sub, filter_logits(logits_BV, temperature=temperature, top_k=top_k, top_p=top_p))
    buf_BL = jax.lax.dynamic_update_index_in_dim(buf_BL, tok_B.astype(buf_BL.dtype)[:, None], i,
                                                 axis=1)
    return buf_BL, rng

  buf_BL, _ = jax.lax.fori_loop(p, total, body, (buf_BL, rng))
  return buf_BL[:, :total]
