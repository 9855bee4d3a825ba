"""Autoregressive sampling: temperature, top-k and top-p, compiled as one loop.

Two drivers share the token-choice rule (and the order in which they consume random keys, so
they agree token for token on the same model):

* ``sample_full_context`` re-runs ``logits_fn(tokens_BT) -> logits_BTV`` on a sliding window for
  every new token: no cache, works with any causal model.
* ``sample_incremental`` drives a model that carries state between calls, through
  ``step_fn(tokens_BT, cache, position) -> (logits_BTV, cache)``: the Transformer's KV cache or an
  RNN's hidden state. It is called once on the whole prompt (prefill) and then once per token.

Axis key: B batch, T positions, V vocabulary.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

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


def _choose(logits_BV: jax.Array, rng: jax.Array, *, greedy: bool, temperature: float,
            top_k: int | None, top_p: float | None) -> jax.Array:
  if greedy:
    return jnp.argmax(logits_BV, axis=-1)
  return jax.random.categorical(
      rng, filter_logits(logits_BV, temperature=temperature, top_k=top_k, top_p=top_p))


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
    tok_B = _choose(logits_BV, sub, greedy=greedy, temperature=temperature, top_k=top_k,
                    top_p=top_p)
    buf_BL = jax.lax.dynamic_update_index_in_dim(buf_BL, tok_B.astype(buf_BL.dtype)[:, None], i,
                                                 axis=1)
    return buf_BL, rng

  buf_BL, _ = jax.lax.fori_loop(p, total, body, (buf_BL, rng))
  return buf_BL[:, :total]


def sample_incremental(step_fn: Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, Any]],
                       cache: Any, prompt_BP: jax.Array, num_new: int, rng: jax.Array, *,
                       temperature: float = 1.0, top_k: int | None = None,
                       top_p: float | None = None, greedy: bool = False) -> jax.Array:
  """Extends ``prompt_BP`` by ``num_new`` tokens with a stateful model; returns [B, P + num_new].

  ``step_fn(tokens_BT, cache, position)`` consumes T tokens that start at absolute position
  ``position`` and returns their logits and the updated cache. The per-token loop is a
  ``lax.scan``, so the whole generation compiles once.
  """
  if num_new < 1:
    return prompt_BP
  choose = functools.partial(_choose, greedy=greedy, temperature=temperature, top_k=top_k,
                             top_p=top_p)
  p = prompt_BP.shape[1]
  logits_BPV, cache = step_fn(prompt_BP, cache, jnp.asarray(0, jnp.int32))
  rng, sub = jax.random.split(rng)
  tok_B = choose(logits_BPV[:, -1], sub).astype(prompt_BP.dtype)

  def body(carry, i):
    tok_B, cache, rng = carry
    logits_B1V, cache = step_fn(tok_B[:, None], cache, p + i)
    rng, sub = jax.random.split(rng)
    nxt_B = choose(logits_B1V[:, 0], sub).astype(tok_B.dtype)
    return (nxt_B, cache, rng), tok_B

  (last_B, _, _), toks_NB = jax.lax.scan(body, (tok_B, cache, rng),
                                         jnp.arange(num_new - 1, dtype=jnp.int32))
  new_BN = jnp.concatenate([toks_NB.T, last_B[:, None]], axis=1)
  return jnp.concatenate([prompt_BP, new_BN], axis=1)
