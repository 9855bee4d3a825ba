"""Autoregressive sampling: temperature, top-k and top-p, compiled as one loop.

Two drivers share the token-choice rule (and the order in which they consume random keys, so
they agree token for token on the same model):

* ``generate_full_context`` re-runs ``logits_fn(tokens_BT) -> logits_BTV`` on a sliding window
  for every new token: no cache, works with any causal model.
* ``generate_incremental`` drives a model that carries state between calls, through
  ``step_fn(tokens_BT, cache, position) -> (logits_BTV, cache)``: the Transformer's KV cache or an
  RNN's hidden state. It is called once on the whole prompt (prefill) and then once per token.

Both take an optional ``stop_id``: every generated token after a row's first ``stop_id`` becomes
``pad_id``, the loop ends once every row has stopped, and each row's length (prompt, generated
tokens, the stop token included) is returned with the tokens. ``sample_full_context`` /
``sample_incremental`` are the same drivers without a stop token, returning only the tokens.
``seqgen_jax.generate.generate`` is the user-facing entry point over a causal_lm module.
Randomness: one ``jax.random.split`` of ``rng`` per generated token, its second half drawing it.

``beam_search`` drives the same ``step_fn`` with K hypotheses per row (length penalty, EOS).

Axis key: B batch, T positions fed to the model, P prompt length, N new tokens, L buffer /
generated positions, W context window, V vocabulary; beam search: K beams, M = 2K candidates per
step, J = K + M finished and new hypotheses, R = B * K rows of the tiled cache.
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


def _stopped(tok_B: jax.Array, stop_id: int | None) -> jax.Array:
  if stop_id is None:
    return jnp.zeros(tok_B.shape, bool)
  return tok_B == stop_id


def finish(prompt_BP: jax.Array, new_BN: jax.Array, stop_id: int | None, pad_id: int
           ) -> tuple[jax.Array, jax.Array]:
  """(prompt ++ new tokens with ``pad_id`` after each row's first ``stop_id``, row lengths)."""
  p, n = prompt_BP.shape[1], new_BN.shape[1]
  stop_BN = _stopped(new_BN, stop_id)
  first_B = jnp.where(jnp.any(stop_BN, axis=1), jnp.argmax(stop_BN, axis=1), n - 1)
  keep_BN = jnp.arange(n)[None, :] <= first_B[:, None]
  new_BN = jnp.where(keep_BN, new_BN, jnp.asarray(pad_id, new_BN.dtype))
  lengths_B = (p + first_B + 1).astype(jnp.int32)
  return jnp.concatenate([prompt_BP, new_BN], axis=1), lengths_B


def generate_full_context(logits_fn: Callable[[jax.Array], jax.Array], prompt_BP: jax.Array,
                          num_new: int, rng: jax.Array, *, window: int, temperature: float = 1.0,
                          top_k: int | None = None, top_p: float | None = None,
                          greedy: bool = False, stop_id: int | None = None, pad_id: int = 0
                          ) -> tuple[jax.Array, jax.Array]:
  """``prompt_BP`` extended by ``num_new`` tokens ([B, P + num_new]) and the row lengths [B].

  Each step runs ``logits_fn`` on the last ``window`` tokens (the model's context length), so
  the result equals step-by-step generation with a full forward pass per token.
  """
  b, p = prompt_BP.shape
  if num_new < 1:
    return prompt_BP, jnp.full((b,), p, jnp.int32)
  total = p + num_new
  buf_BL = jnp.zeros((b, max(total, window)), prompt_BP.dtype).at[:, :p].set(prompt_BP)

  def body(carry):
    i, buf_BL, rng, done_B = carry
    start = jnp.clip(i - window, 0, buf_BL.shape[1] - window)
    ctx_BW = jax.lax.dynamic_slice_in_dim(buf_BL, start, window, axis=1)
    logits_BV = jax.lax.dynamic_index_in_dim(logits_fn(ctx_BW), i - 1 - start, axis=1,
                                             keepdims=False)
    rng, sub = jax.random.split(rng)
    tok_B = _choose(logits_BV, sub, greedy=greedy, temperature=temperature, top_k=top_k,
                    top_p=top_p).astype(buf_BL.dtype)
    buf_BL = jax.lax.dynamic_update_index_in_dim(buf_BL, tok_B[:, None], i, axis=1)
    return i + 1, buf_BL, rng, done_B | _stopped(tok_B, stop_id)

  cond = lambda carry: (carry[0] < total) & ~jnp.all(carry[3])
  _, buf_BL, _, _ = jax.lax.while_loop(cond, body, (jnp.asarray(p, jnp.int32), buf_BL, rng,
                                                     jnp.zeros((b,), bool)))
  return finish(prompt_BP, buf_BL[:, p:total], stop_id, pad_id)


def sample_full_context(logits_fn: Callable[[jax.Array], jax.Array], prompt_BP: jax.Array,
                        num_new: int, rng: jax.Array, *, window: int, temperature: float = 1.0,
                        top_k: int | None = None, top_p: float | None = None,
                        greedy: bool = False) -> jax.Array:
  """Extends ``prompt_BP`` by ``num_new`` tokens; returns [B, P + num_new] (no stop token)."""
  return generate_full_context(logits_fn, prompt_BP, num_new, rng, window=window,
                               temperature=temperature, top_k=top_k, top_p=top_p,
                               greedy=greedy)[0]


def generate_incremental(step_fn: Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, Any]],
                         cache: Any, prompt_BP: jax.Array, num_new: int, rng: jax.Array, *,
                         temperature: float = 1.0, top_k: int | None = None,
                         top_p: float | None = None, greedy: bool = False,
                         stop_id: int | None = None, pad_id: int = 0
                         ) -> tuple[jax.Array, jax.Array]:
  """``prompt_BP`` extended by ``num_new`` tokens ([B, P + num_new]) and the row lengths [B],
  with a stateful model.

  ``step_fn(tokens_BT, cache, position)`` consumes T tokens that start at absolute position
  ``position`` and returns their logits and the updated cache. The per-token loop is a
  ``lax.while_loop`` (ending early once every row has stopped), so the whole generation
  compiles once; cache positions ``0 .. P + num_new - 2`` are written.
  """
  b, p = prompt_BP.shape
  if num_new < 1:
    return prompt_BP, jnp.full((b,), p, jnp.int32)
  choose = functools.partial(_choose, greedy=greedy, temperature=temperature, top_k=top_k,
                             top_p=top_p)
  logits_BPV, cache = step_fn(prompt_BP, cache, jnp.asarray(0, jnp.int32))
  rng, sub = jax.random.split(rng)
  tok_B = choose(logits_BPV[:, -1], sub).astype(prompt_BP.dtype)
  new_BN = jnp.zeros((b, num_new), prompt_BP.dtype).at[:, 0].set(tok_B)

  def body(carry):
    i, tok_B, cache, rng, new_BN, done_B = carry  # tok_B: new token i - 1, at position p + i - 1
    logits_B1V, cache = step_fn(tok_B[:, None], cache, p + i - 1)
    rng, sub = jax.random.split(rng)
    tok_B = choose(logits_B1V[:, 0], sub).astype(tok_B.dtype)
    new_BN = jax.lax.dynamic_update_index_in_dim(new_BN, tok_B[:, None], i, axis=1)
    return i + 1, tok_B, cache, rng, new_BN, done_B | _stopped(tok_B, stop_id)

  cond = lambda carry: (carry[0] < num_new) & ~jnp.all(carry[5])
  init = (jnp.asarray(1, jnp.int32), tok_B, cache, rng, new_BN, _stopped(tok_B, stop_id))
  new_BN = jax.lax.while_loop(cond, body, init)[4]
  return finish(prompt_BP, new_BN, stop_id, pad_id)


def sample_incremental(step_fn: Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, Any]],
                       cache: Any, prompt_BP: jax.Array, num_new: int, rng: jax.Array, *,
                       temperature: float = 1.0, top_k: int | None = None,
                       top_p: float | None = None, greedy: bool = False) -> jax.Array:
  """Extends ``prompt_BP`` by ``num_new`` tokens with a stateful model; returns
  [B, P + num_new] (no stop token; see ``generate_incremental``)."""
  return generate_incremental(step_fn, cache, prompt_BP, num_new, rng, temperature=temperature,
                              top_k=top_k, top_p=top_p, greedy=greedy)[0]


# ------------------------------------------------------------------------------ beam search

NEG_INF = -1.0e9  # the score of an empty slot: finite, so that arithmetic on it stays finite
LENGTH_PENALTIES = ("gnmt", "power")


def length_penalty(length: jax.Array, alpha: float, kind: str = "gnmt") -> jax.Array:
  """The divisor of a hypothesis' log-probability: GNMT's ((5 + len) / 6)^alpha (Wu et al.
  2016), or the plain len^alpha ("power"). ``len`` counts generated tokens, EOS included."""
  length = jnp.asarray(length, jnp.float32)
  if kind == "gnmt":
    return ((5.0 + length) / 6.0) ** alpha
  if kind == "power":
    return length ** alpha
  raise ValueError(f"unknown length penalty '{kind}'; choose one of: "
                   f"{', '.join(LENGTH_PENALTIES)}")


def _tile_beams(tree: Any, k: int) -> Any:
  """Repeats every leaf's rows k times along the leading (batch) axis: row b -> b*k .. b*k+k-1."""
  return jax.tree.map(lambda x: jnp.repeat(x, k, axis=0) if jnp.ndim(x) else x, tree)


def _gather_beams(tree: Any, flat_idx: jax.Array) -> Any:
  """Picks rows ``flat_idx`` (into the batch * beam axis) of every leaf."""
  return jax.tree.map(lambda x: jnp.take(x, flat_idx, axis=0) if jnp.ndim(x) else x, tree)


def beam_search(step_fn: Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, Any]],
                cache: Any, prompt_BP: jax.Array, num_new: int, *, beam_size: int, eos_id: int,
                alpha: float = 0.0, penalty: str = "gnmt", pad_id: int = 0
                ) -> tuple[jax.Array, jax.Array]:
  """Beam search over ``step_fn(tokens_BT, cache, position) -> (logits_BTV, cache)``.

  Works for any model that follows the causal_lm / seq2seq ``decode`` contract (a Transformer's
  KV cache, an RNN's state): the only assumption about ``cache`` is that every leaf with a
  dimension has the batch as its leading axis (scalar leaves are shared). The prompt (for a
  seq2seq decoder, usually just BOS) is run once for the B rows, then the cache is tiled to
  B * K rows and reordered along that axis after every step. Cache positions ``P .. P +
  num_new - 2`` are written (the last token is never fed back).

  Hypotheses end at ``eos_id`` or after ``num_new`` tokens; a hypothesis of n generated tokens
  (EOS included) with log-probability lp scores lp / length_penalty(n, alpha, penalty). At each
  step the 2K best extensions are taken: those ending in EOS that rank within the first K join
  the finished set (so K = 1 is exactly greedy decoding up to its first EOS, when alpha = 0), the
  K best others stay alive. The loop (one ``lax.while_loop``) stops early once no alive
  hypothesis can beat the K-th finished one (exact for alpha >= 0, where the bound is
  lp / length_penalty(num_new)).

  Returns tokens [B, K, P + num_new] (prompt, then the hypothesis, then ``pad_id``), best
  first, and their scores [B, K] (``NEG_INF`` for slots that hold no hypothesis).
  """
  if isinstance(alpha, (int, float)) and alpha < 0:  # may also be a traced scalar
    raise ValueError(f"beam search needs alpha >= 0 (its early stop relies on it), got {alpha}")
  length_penalty(1, alpha, penalty)  # validates the name
  b, p = prompt_BP.shape
  k, n = beam_size, num_new
  logits_BPV, cache = step_fn(prompt_BP, cache, jnp.asarray(0, jnp.int32))
  logp_BV = jax.nn.log_softmax(logits_BPV[:, -1].astype(jnp.float32), axis=-1)
  v = logp_BV.shape[-1]
  if 2 * k > k * v:
    raise ValueError(f"beam_size={k} needs a vocabulary of at least 2 tokens, got {v}")
  cache = _tile_beams(cache, k)
  dtype = prompt_BP.dtype
  pos_L = jnp.arange(n)
  lp_max = length_penalty(n, alpha, penalty)

  def select(state):
    i, alive_BKL, alive_lp_BK, fin_BKL, fin_sc_BK, logp_BKV, cache = state
    cand_BKV = alive_lp_BK[:, :, None] + logp_BKV
    top_lp_BM, top_idx_BM = jax.lax.top_k(cand_BKV.reshape(b, k * v), 2 * k)
    parent_BM, tok_BM = top_idx_BM // v, (top_idx_BM % v).astype(dtype)
    seq_BML = jnp.take_along_axis(alive_BKL, parent_BM[:, :, None], axis=1)
    seq_BML = jnp.where(pos_L == i, tok_BM[:, :, None], seq_BML)
    live_BM = top_lp_BM > NEG_INF / 2
    eos_BM = tok_BM == eos_id
    # EOS extensions ranked within the first K finish; at the last step every extension does.
    rank_ok_BM = (jnp.arange(2 * k) < k)[None, :]
    last = i == n - 1
    done_BM = live_BM & ((eos_BM & rank_ok_BM) | (last & ~eos_BM))
    new_sc_BM = jnp.where(done_BM, top_lp_BM / length_penalty(i + 1, alpha, penalty), NEG_INF)
    all_sc_BJ = jnp.concatenate([fin_sc_BK, new_sc_BM], axis=1)
    all_seq_BJL = jnp.concatenate([fin_BKL, seq_BML], axis=1)
    fin_sc_BK, pick_BK = jax.lax.top_k(all_sc_BJ, k)
    fin_BKL = jnp.take_along_axis(all_seq_BJL, pick_BK[:, :, None], axis=1)
    # The K best non-EOS extensions stay alive.
    alive_sc_BM = jnp.where(live_BM & ~eos_BM, top_lp_BM, NEG_INF)
    alive_lp_BK, keep_BK = jax.lax.top_k(alive_sc_BM, k)
    alive_BKL = jnp.take_along_axis(seq_BML, keep_BK[:, :, None], axis=1)
    parent_BK = jnp.take_along_axis(parent_BM, keep_BK, axis=1)
    cache = _gather_beams(cache, (jnp.arange(b)[:, None] * k + parent_BK).reshape(-1))
    return i, alive_BKL, alive_lp_BK, fin_BKL, fin_sc_BK, cache

  def body(state):
    i, alive_BKL, alive_lp_BK, fin_BKL, fin_sc_BK, cache = select(state)

    def step(cache):
      tok_R1 = alive_BKL[:, :, i].reshape(b * k, 1)
      logits_R1V, cache = step_fn(tok_R1, cache, p + i)
      return jax.nn.log_softmax(logits_R1V[:, 0].astype(jnp.float32)).reshape(b, k, v), cache

    skip = lambda cache: (jnp.zeros((b, k, v), jnp.float32), cache)
    logp_BKV, cache = jax.lax.cond(i + 1 < n, step, skip, cache)
    return i + 1, alive_BKL, alive_lp_BK, fin_BKL, fin_sc_BK, logp_BKV, cache

  def cond(state):
    i, _, alive_lp_BK, _, fin_sc_BK, _, _ = state
    best_alive_B = jnp.max(alive_lp_BK, axis=1) / lp_max
    worst_fin_B = jnp.min(fin_sc_BK, axis=1)
    settled = jnp.all((worst_fin_B > NEG_INF / 2) & (worst_fin_B >= best_alive_B))
    return (i < n) & ~settled

  alive_lp_BK = jnp.full((b, k), NEG_INF).at[:, 0].set(0.0)  # one live beam, no duplicates
  state = (jnp.asarray(0, jnp.int32), jnp.full((b, k, n), pad_id, dtype), alive_lp_BK,
           jnp.full((b, k, n), pad_id, dtype), jnp.full((b, k), NEG_INF),
           jnp.broadcast_to(logp_BV[:, None], (b, k, v)), cache)
  _, _, _, fin_BKL, fin_sc_BK, _, _ = jax.lax.while_loop(cond, body, state)
  prompt_BKP = jnp.broadcast_to(prompt_BP[:, None], (b, k, p))
  return jnp.concatenate([prompt_BKP, fin_BKL], axis=2), fin_sc_BK
