"""Sampling: compiled loop equals a plain Python loop; top-k / top-p against numpy."""

import jax
import jax.numpy as jnp
import numpy as np

from seqgen_jax import decoding
from seqgen_jax.nn.gpt import GPT


def _model():
  model = GPT(vocab_size=13, max_len=8, num_layers=1, num_heads=2, d_model=16)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
  return jax.jit(lambda t: model.apply(params, t))


def test_greedy_loop_equals_python_loop_with_sliding_window():
  logits_fn = _model()
  prompt = jnp.array([[3, 1, 4], [1, 5, 9]])
  out = decoding.sample_full_context(logits_fn, prompt, 9, jax.random.PRNGKey(0), window=8,
                                     greedy=True)
  seq = np.asarray(prompt).tolist()
  for _ in range(9):
    for row in seq:
      ctx = row[-8:]  # the model sees at most its context length
      row.append(int(np.argmax(np.asarray(logits_fn(jnp.array([ctx])))[0, -1])))
  np.testing.assert_array_equal(np.asarray(out), np.array(seq))


def test_sampling_uses_only_the_filtered_support():
  logits_fn = _model()
  prompt = jnp.zeros((64, 1), jnp.int32)
  out = decoding.sample_full_context(logits_fn, prompt, 1, jax.random.PRNGKey(3), window=8,
                                     top_k=2)
  top2 = np.argsort(np.asarray(logits_fn(jnp.zeros((1, 1), jnp.int32)))[0, -1])[-2:]
  assert set(np.asarray(out)[:, 1].tolist()) <= set(top2.tolist())
  assert len(set(np.asarray(out)[:, 1].tolist())) == 2


def test_filter_logits_matches_numpy_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 50)).astype(np.float32)
  for k in (1, 5, 50):
    got = np.asarray(decoding.filter_logits(jnp.asarray(logits), top_k=k))
    for row, g in zip(logits, got):
      keep = set(np.argsort(row)[-k:].tolist())
      assert {i for i in range(50) if g[i] > -1e30} == keep
  for p in (0.1, 0.5, 0.9):
    got = np.asarray(decoding.filter_logits(jnp.asarray(logits), top_p=p, temperature=0.7))
    for row, g in zip(logits, got):
      z = row / 0.7
      probs = np.exp(z - z.max())
      probs /= probs.sum()
      order = np.argsort(-probs)
      cum = np.cumsum(probs[order])
      n = int(np.searchsorted(cum, p) + 1)  # smallest prefix with mass >= p
      assert {i for i in range(50) if g[i] > -1e30} == set(order[:n].tolist())


def test_incremental_driver_equals_full_context_sampling():
  """A step_fn whose "cache" is the token buffer itself must give the same tokens."""
  logits_fn = _model()
  window, total = 8, 9

  def step_fn(tokens_BT, buf_BL, position):
    buf_BL = jax.lax.dynamic_update_slice_in_dim(buf_BL, tokens_BT, position, axis=1)
    out = []
    for j in range(tokens_BT.shape[1]):
      last = position + j  # logits for the token after this one
      start = jnp.clip(last + 1 - window, 0, total - window)
      ctx = jax.lax.dynamic_slice_in_dim(buf_BL, start, window, axis=1)
      out.append(jax.lax.dynamic_index_in_dim(logits_fn(ctx), last - start, axis=1,
                                              keepdims=False))
    return jnp.stack(out, axis=1), buf_BL

  prompt = jnp.array([[3, 1, 4], [1, 5, 9]])
  for kw in (dict(greedy=True), dict(temperature=0.9, top_k=5)):
    want = decoding.sample_full_context(logits_fn, prompt, total - 3, jax.random.PRNGKey(7),
                                        window=window, **kw)
    got = decoding.sample_incremental(step_fn, jnp.zeros((2, total), jnp.int32), prompt,
                                      total - 3, jax.random.PRNGKey(7), **kw)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_lm_task_sampling_compiles_once_across_calls():
  import jax
  from conftest import tiny_lm_config

  from seqgen_jax.tasks import build_task

  task = build_task(tiny_lm_config())
  params = task.init_params(jax.random.PRNGKey(0))
  first = task.sample(params, jax.random.PRNGKey(1))
  second = task.sample(params, jax.random.PRNGKey(2))
  assert first == second  # greedy answers of fixed eval examples
  fn = task._jit_cache["sample_answers"]
  assert fn._cache_size() == 1
