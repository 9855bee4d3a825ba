"""Beam search: exact against exhaustive enumeration (tiny vocabulary, short outputs) with a
seq2seq Transformer's KV cache and with an RNN-like state; beam size 1 equals greedy."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqgen_jax import decoding
from seqgen_jax.nn.encoder_decoder import EncoderDecoder
from seqgen_jax.nn.gpt import GPT

V, L, EOS, BOS = 4, 3, 3, 0
# Every hypothesis survives when K >= V * (V-1)^(L-1): all extensions of all alive beams rank
# within the first K, so beam search must return exactly the K best complete sequences.
K = V * (V - 1) ** (L - 1)


def brute_force(next_logp_fn, alpha: float, penalty: str) -> list[tuple[float, tuple]]:
  """All complete outputs (ending in EOS, or L tokens long) ranked by penalised score.

  ``next_logp_fn(prefixes [N, L-1]) -> [N, L-1, V]`` log-probabilities of the token after
  each prefix position, from a full (uncached) forward pass: position j holds the
  distribution after the first j + 1 prefix tokens (BOS included).
  """
  prefixes = [p for n in range(L) for p in itertools.product(range(V), repeat=n)
              if EOS not in p]
  padded = np.array([(BOS, *p) + (BOS,) * (L - 1 - len(p)) for p in prefixes])
  logp = np.asarray(next_logp_fn(jnp.asarray(padded)), np.float64)
  table = {p: logp[i, len(p)] for i, p in enumerate(prefixes)}  # distribution after prefix p
  out = []

  def score(seq):
    total = sum(table[seq[:j]][seq[j]] for j in range(len(seq)))
    return total / float(decoding.length_penalty(len(seq), alpha, penalty))

  for p in prefixes:
    out.append((score(p + (EOS,)), p + (EOS,)))
    if len(p) == L - 1:
      out.extend((score(p + (t,)), p + (t,)) for t in range(V) if t != EOS)
  return sorted(out, key=lambda x: -x[0])


def _check_against_brute_force(toks_BKL, scores_BK, ref_rows, prompt_len):
  for row, ref in enumerate(ref_rows):
    assert len(ref) >= K
    for k, (want_score, want_seq) in enumerate(ref[:K]):
      got = tuple(int(x) for x in np.asarray(toks_BKL[row, k, prompt_len:]))
      assert got[:len(want_seq)] == want_seq, (row, k, got, want_seq)
      assert all(x == 0 for x in got[len(want_seq):])  # pad_id after the end
      np.testing.assert_allclose(float(scores_BK[row, k]), want_score, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def seq2seq():
  model = EncoderDecoder(src_vocab_size=7, tgt_vocab_size=V, max_len=8, num_layers=1,
                         num_heads=2, d_model=16, d_ff=32, num_kv_heads=1)
  src = jnp.array([[1, 2, 3, 4, 5], [6, 4, 2, 0, 0]])
  src_mask = src > 0
  params = jax.jit(model.init)(jax.random.PRNGKey(0), src, src_mask, src[:, :1])
  # Random-initialised weights give near-uniform outputs; larger ones make the ranking sharp.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [x + 0.5 * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys)])
  return model, params, src, src_mask


@functools.partial(jax.jit, static_argnums=(0, 5))
def _seq2seq_beams(model, params, src, src_mask, alpha, penalty):
  memory = model.apply(params, src, src_mask, method=EncoderDecoder.encode)
  cache = model.apply(params, memory, src_mask, L, method=EncoderDecoder.init_cache)
  step = lambda t, c, pos: model.apply(params, t, c, pos, method=EncoderDecoder.decode)
  return decoding.beam_search(step, cache, jnp.full((src.shape[0], 1), BOS), L, beam_size=K,
                              eos_id=EOS, alpha=alpha, penalty=penalty)


@functools.partial(jax.jit, static_argnums=0)
def _seq2seq_logp(model, params, src_1S, src_mask_1S, prefixes):
  n = prefixes.shape[0]
  logits = model.apply(params, jnp.repeat(src_1S, n, 0), jnp.repeat(src_mask_1S, n, 0), prefixes)
  return jax.nn.log_softmax(logits)


@pytest.mark.parametrize("alpha,penalty", [(0.0, "gnmt"), (0.7, "gnmt"), (1.0, "power")])
def test_beam_search_equals_exhaustive_search_seq2seq(seq2seq, alpha, penalty):
  model, params, src, src_mask = seq2seq
  full_logp = lambda prefixes, row: _seq2seq_logp(model, params, src[row:row + 1],
                                                  src_mask[row:row + 1], prefixes)
  toks, scores = _seq2seq_beams(model, params, src, src_mask, jnp.float32(alpha), penalty)
  refs = [brute_force(functools.partial(full_logp, row=r), alpha, penalty) for r in range(2)]
  assert refs[0][:5] != refs[1][:5]  # the source matters
  _check_against_brute_force(toks, scores, refs, 1)


def _rnn_step_fn(vocab, seed=2, favour=None):
  """A tanh RNN whose state is {"h": [B, 8], "bias": scalar}; logits of every input token
  (plus 2 for token ``favour``, to make hypotheses end early)."""
  k = jax.random.split(jax.random.PRNGKey(seed), 3)
  w_in = jax.random.normal(k[0], (vocab, 8))
  w_h = jax.random.normal(k[1], (8, 8)) * 0.5
  w_out = jax.random.normal(k[2], (8, vocab)) * 2.0
  b_out = jnp.zeros(vocab) if favour is None else 2.0 * jax.nn.one_hot(favour, vocab)

  def step_fn(tokens_BT, state, position):
    h = state["h"]
    logits = []
    for j in range(tokens_BT.shape[1]):
      h = jnp.tanh(w_in[tokens_BT[:, j]] + h @ w_h + state["bias"])
      logits.append(h @ w_out + b_out)
    return jnp.stack(logits, 1), {"h": h, "bias": state["bias"]}

  return step_fn


def test_beam_search_with_an_rnn_like_state():
  """The cache contract alone: a recurrent state (plus a scalar leaf shared by all rows)."""
  step_fn = _rnn_step_fn(V)

  prompt = jnp.array([[BOS, 1], [BOS, 2]])
  state = {"h": jnp.zeros((2, 8)), "bias": jnp.asarray(0.1)}
  toks, scores = jax.jit(lambda s: decoding.beam_search(
      step_fn, s, prompt, L, beam_size=K, eos_id=EOS, alpha=0.5))(state)

  def full_logp(prefixes, row):  # prompt + prefix through the same recurrence, no beams
    n = prefixes.shape[0]
    ctx = jnp.concatenate([jnp.repeat(prompt[row:row + 1], n, 0), prefixes[:, 1:]], axis=1)
    logits, _ = step_fn(ctx, {"h": jnp.zeros((n, 8)), "bias": jnp.asarray(0.1)}, 0)
    return jax.nn.log_softmax(logits[:, 1:])  # after the prompt, then after each prefix token

  refs = [brute_force(functools.partial(full_logp, row=r), 0.5, "gnmt") for r in range(2)]
  _check_against_brute_force(toks, scores, refs, 2)


def test_beam_size_one_is_greedy():
  model = GPT(vocab_size=7, max_len=12, num_layers=2, num_heads=2, d_model=16, num_kv_heads=1,
              positions="rotary")
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 12), jnp.int32))
  step_fn = lambda t, c, pos: model.apply(params, t, c, pos, method=GPT.decode)
  prompt = jnp.array([[1, 2, 3], [4, 5, 6], [6, 1, 1]])
  n = 9

  @jax.jit
  def run(eos):
    greedy = decoding.sample_incremental(step_fn, model.init_cache(3, 12), prompt, n,
                                         jax.random.PRNGKey(0), greedy=True)
    beam, _ = decoding.beam_search(step_fn, model.init_cache(3, 12), prompt, n, beam_size=1,
                                   eos_id=eos, pad_id=-1)
    return greedy, beam[:, 0]

  ended_early = 0
  for eos in range(7):  # every token as EOS: greedy hits it at various steps, or never
    greedy, beam = (np.asarray(x) for x in run(eos))
    for g, b in zip(greedy, beam):
      hits = np.flatnonzero(g[3:] == eos)
      end = 3 + (hits[0] + 1 if len(hits) else n)
      np.testing.assert_array_equal(b[:end], g[:end])
      assert np.all(b[end:] == -1)
      ended_early += end < 3 + n
  assert ended_early >= 3  # the EOS cases were really exercised


def test_pruned_beam_search_equals_a_python_beam_search():
  """K = 2 over 6 steps prunes hard and can stop early; a plain loop without early stopping,
  on full recomputation instead of a carried state, must pick the same hypotheses."""
  vocab, n, k, eos = 5, 6, 2, 4
  step_fn = _rnn_step_fn(vocab, seed=7, favour=eos)
  prompt = jnp.array([[0, 1], [0, 2], [3, 3]])
  fresh = lambda b: {"h": jnp.zeros((b, 8)), "bias": jnp.asarray(-0.2)}
  calls = []

  def counted_step_fn(tokens, state, position):
    jax.debug.callback(lambda p: calls.append(int(p)), position)
    return step_fn(tokens, state, position)

  beams = jax.jit(lambda s, alpha: decoding.beam_search(
      counted_step_fn, s, prompt, n, beam_size=k, eos_id=eos, alpha=alpha))
  for alpha in (0.0, 0.6):
    calls.clear()
    toks, scores = jax.block_until_ready(beams(fresh(3), alpha))
    if alpha == 0.0:
      assert len(calls) < n  # the early stop was exercised (prefill + fewer than n - 1 steps)
    _check_python_beam_search(toks, scores, prompt, step_fn, fresh, n, k, eos, alpha, vocab)


def _check_python_beam_search(toks, scores, prompt, step_fn, fresh, n, k, eos, alpha, vocab):
  logp_after = jax.jit(lambda ctx: jax.nn.log_softmax(step_fn(ctx, fresh(1), 0)[0][0, -1]))
  pen = lambda m: float(decoding.length_penalty(m, alpha))
  for row in range(prompt.shape[0]):
    alive, finished = [((), 0.0)], []
    for i in range(n):
      cands = []
      for seq, lp in alive:
        logp = np.asarray(logp_after(jnp.asarray([list(np.asarray(prompt[row])) + list(seq)])))
        cands += [(seq + (t,), lp + float(logp[t])) for t in range(vocab)]
      top = sorted(cands, key=lambda c: -c[1])[:2 * k]
      for rank, (seq, lp) in enumerate(top):
        if (seq[-1] == eos and rank < k) or (seq[-1] != eos and i == n - 1):
          finished.append((lp / pen(len(seq)), seq))
      alive = [c for c in top if c[0][-1] != eos][:k]
    finished = sorted(finished, key=lambda f: -f[0])[:k]
    for j, (want_score, want_seq) in enumerate(finished):
      got = tuple(int(x) for x in np.asarray(toks[row, j, 2:2 + len(want_seq)]))
      assert got == want_seq, (row, j, got, want_seq)
      np.testing.assert_allclose(float(scores[row, j]), want_score, rtol=1e-5)
