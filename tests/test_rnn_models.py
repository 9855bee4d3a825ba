"""Registered recurrent models: generation with carried state == the full forward pass, padding
invariance, seq2seq cached decoding == teacher forcing, the LM task's cached sampling, registry
and config errors (their causality is checked in test_causality.py)."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import REPO, main_command, read_jsonl, tiny_lm_config

import seqgen_jax.nn  # noqa: F401  (registers the models)
from seqgen_jax import decoding
from seqgen_jax.errors import ConfigError
from seqgen_jax.nn.rnn_models import ParallelStack, pool
from seqgen_jax.registry import MODELS

NAMES = ["rnn", "lstm", "gru", "mingru", "minlstm", "lru"]
V, T = 11, 10


def _cfg(**kw):
  return ml_collections.ConfigDict(dict(d_model=16, hidden_size=12, num_layers=2, mlp_ratio=2,
                                        **kw))


@pytest.fixture(scope="module", params=NAMES)
def lm(request):
  """(name, model, params, jitted forward, jitted decode) for each causal_lm model."""
  model = MODELS.get(request.param, kind="causal_lm")(_cfg(), vocab_size=V, max_len=T)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, T), jnp.int32))
  forward = jax.jit(lambda tok: model.apply(params, tok))
  decode = jax.jit(lambda tok, cache, pos: model.apply(params, tok, cache, pos,
                                                       method=model.decode))
  return request.param, model, params, forward, decode


def test_generation_with_carried_state_equals_full_forward(lm):
  name, model, params, forward, decode = lm
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, T), 0, V)
  cache = model.apply(params, 2, T, method=model.init_cache)
  chunks = []
  for start, stop in ((0, 4), (4, 5), (5, 6), (6, 10)):  # prefill, single steps, a chunk
    logits, cache = decode(tokens[:, start:stop], cache, start)
    chunks.append(logits)
  np.testing.assert_allclose(jnp.concatenate(chunks, axis=1), forward(tokens), rtol=1e-5,
                             atol=1e-5, err_msg=name)


@pytest.mark.parametrize("name", ["lstm", "minlstm"])
def test_bidirectional_classifier_ignores_padding(name):
  """Rows 1 and 2 hold the same 4 tokens with different padding after them; row 0 is unpadded
  and equal to row 1 over those 4 tokens."""
  model = MODELS.get(name, kind="classifier")(_cfg(), vocab_size=V, num_classes=3, max_len=T)
  real = jax.random.randint(jax.random.PRNGKey(1), (4,), 0, V)
  tokens = jnp.stack([jnp.r_[real, real[:2]], jnp.r_[real, 1, 2], jnp.r_[real, 9, 9]])
  mask = np.arange(6)[None] < np.array([6, 4, 4])[:, None]
  params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, mask)
  logits = jax.jit(model.apply)(params, tokens, mask)
  assert logits.shape == (3, 3) and not np.allclose(logits[0], logits[1])
  np.testing.assert_allclose(logits[1], logits[2], rtol=1e-5, atol=1e-6)


def test_pooling_matches_numpy():
  y = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]], bool)  # right and left padding
  enc = ParallelStack("mingru", 3, 3, bidirectional=True)
  np.testing.assert_allclose(pool("mean", enc, y, None, mask),
                             [y[0, :3].mean(0), y[1, 1:].mean(0)], rtol=1e-6)
  np.testing.assert_allclose(pool("max", enc, y, None, mask), [y[0, :3].max(0), y[1, 1:].max(0)])
  np.testing.assert_allclose(pool("final", enc, y, None, mask),
                             [np.r_[y[0, 2], y[0, 0]], np.r_[y[1, 4], y[1, 1]]])


@pytest.mark.parametrize("name", ["gru"])
def test_forecaster_shape_and_shift_equivariance(name):
  """With instance normalisation, forecasting x + c gives forecast + c (per feature)."""
  model = MODELS.get(name, kind="forecaster")(_cfg(), num_features=3, lookback=12, horizon=5)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 12, 3))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  apply = jax.jit(model.apply)
  y = apply(params, x)
  assert y.shape == (2, 5, 3)
  shift = jnp.array([3.0, -1.0, 10.0])
  np.testing.assert_allclose(apply(params, x + shift), y + shift, rtol=1e-4, atol=1e-4)


@functools.lru_cache
def _seq2seq(cell):
  """Source batch (one padded row) and jitted forward / decode / fresh-cache functions."""
  model = MODELS.get(cell, kind="seq2seq")(_cfg(), src_vocab_size=V, tgt_vocab_size=13,
                                           max_len=T)
  src = jax.random.randint(jax.random.PRNGKey(1), (2, 8), 0, V)
  src_mask = np.arange(8)[None] < np.array([8, 5])[:, None]
  params = jax.jit(model.init)(jax.random.PRNGKey(0), src, src_mask, jnp.zeros((2, T), jnp.int32))
  forward = jax.jit(lambda src, m, tgt: model.apply(params, src, m, tgt))
  decode = jax.jit(lambda tok, cache, pos: model.apply(params, tok, cache, pos,
                                                       method=model.decode))
  new_cache = jax.jit(lambda: model.apply(
      params, model.apply(params, src, src_mask, method=model.encode), src_mask, T,
      method=model.init_cache))
  return src, src_mask, forward, decode, new_cache


def test_seq2seq_cached_decoding_equals_teacher_forcing():
  src, src_mask, forward, decode, new_cache = _seq2seq("lstm")
  tgt = jax.random.randint(jax.random.PRNGKey(3), (2, T), 0, 13)
  cache, chunks = new_cache(), []
  for start in range(0, T, 2):  # multi-token steps, each continuing from the carried cache
    logits, cache = decode(tgt[:, start:start + 2], cache, start)
    chunks.append(logits)
  full = forward(src, src_mask, tgt)
  np.testing.assert_allclose(jnp.concatenate(chunks, axis=1), full, rtol=1e-5, atol=1e-5)


def test_seq2seq_source_padding_is_ignored():
  """Row 1 of the source batch has 5 real tokens; replacing its padding changes nothing."""
  src, src_mask, forward, _, _ = _seq2seq("lstm")
  tgt = jax.random.randint(jax.random.PRNGKey(3), (2, T), 0, 13)
  full = forward(src, src_mask, tgt)
  other = forward(jnp.where(src_mask, src, 3), src_mask, tgt)
  np.testing.assert_allclose(full, other, rtol=1e-5, atol=1e-6)
  assert not np.allclose(full, forward(jnp.where(src_mask, src, 3), np.ones_like(src_mask), tgt))


def test_seq2seq_greedy_decoding_with_the_cache_equals_a_python_loop():
  src, src_mask, forward, decode, new_cache = _seq2seq("lstm")
  n = T - 1
  got = decoding.sample_incremental(decode, new_cache(), jnp.ones((2, 1), jnp.int32), n,
                                    jax.random.PRNGKey(0), greedy=True)
  buf = np.zeros((2, T), np.int32)
  buf[:, 0] = 1  # BOS
  for t in range(n):  # re-run teacher forcing on the prefix; the decoder is causal, so the
    logits = np.asarray(forward(src, src_mask, jnp.asarray(buf)))  # zeros after t are unread
    buf[:, t + 1] = np.argmax(logits[:, t], axis=-1)
  np.testing.assert_array_equal(got, buf)


def test_lm_task_samples_with_carried_state(monkeypatch):
  """tasks/lm.py's sample hook runs the carried-state driver (generate_incremental) for a model
  with decode, and its tokens equal the sliding-window full-context driver's (window >= the
  generated length)."""
  from seqgen_jax import generate
  from seqgen_jax.tasks.lm import LanguageModelTask

  calls = []
  real = decoding.generate_incremental

  def spy(step_fn, cache, prompt, num_new, rng, **kw):
    calls.append((prompt.shape, num_new, kw))
    return real(step_fn, cache, prompt, num_new, rng, **kw)

  monkeypatch.setattr(decoding, "generate_incremental", spy)
  config = tiny_lm_config(model__name="lstm")
  config.model.hidden_size = 16
  config.model.d_model = 16
  task = LanguageModelTask(config)
  params = jax.jit(task.init_params)(jax.random.PRNGKey(0))
  text = task.sample(params, jax.random.PRNGKey(1))["sample"]
  assert len(calls) == 1 and calls[0][2]["greedy"] and calls[0][2]["stop_id"] is None
  (_, p), n, _ = calls[0]
  assert task.uses_cached_generation(p + n - 1) and text.count("-> model") == 2
  monkeypatch.setattr(generate, "uses_cache", lambda model, num_fed: False)
  task._jit_cache.clear()
  assert task.sample(params, jax.random.PRNGKey(1))["sample"] == text  # full-context driver
  assert len(calls) == 1


@pytest.mark.slow
@pytest.mark.parametrize("config", ["copy.py:model=mingru,runlocal",
                                    "shakespeare_char.py:model=lstm,runlocal"])
def test_recurrent_runlocal_configs_train(tmp_path, config, data_dir):
  """The two recurrent experiment configs train end to end through the lm task."""
  import os
  import subprocess

  env = {**os.environ, "XLA_FLAGS": ""}
  proc = subprocess.run(main_command(config, tmp_path, f"--config.data.data_dir={data_dir}"),
                        cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = read_jsonl(tmp_path / "metrics.jsonl")
  evals = [r for r in rows if r["split"] == "eval"]
  if config.startswith("copy"):
    assert evals[-1]["accuracy"] > 0.6
  else:
    assert evals[-1]["bits_per_char"] < 3.7


def test_registry_lists_the_recurrent_models_for_each_kind():
  for kind in ("causal_lm", "classifier", "forecaster"):
    assert set(NAMES) <= set(MODELS.names(kind=kind, family="recurrent"))
  assert MODELS.names(kind="seq2seq", family="recurrent") == ["gru", "lstm", "rnn"]
  assert MODELS.tags("lstm", kind="causal_lm")["carries_state"]
  with pytest.raises(ConfigError, match=r"unknown seq2seq model 'lru'; choose one of: gru, lstm, "
                                        r"rnn"):
    MODELS.get("lru", kind="seq2seq")
  with pytest.raises(ConfigError, match=r"unknown causal_lm model 'lstmm'; choose one of: .*gru, "
                                        r"lru, lstm, mingru, minlstm, rnn"):
    MODELS.get("lstmm", kind="causal_lm")


@pytest.mark.parametrize("kind, name, override, message", [
    ("causal_lm", "lstm", dict(lstm_impl="fast"), r"unknown lstm_impl 'fast'; choose one of: "
                                                  r"scan, cudnn"),
    ("causal_lm", "mingru", dict(scan_impl="parallel"), r"unknown scan_impl 'parallel'; choose "
                                                        r"one of: associative, sequential"),
    ("causal_lm", "gru", dict(bidirectional=True), r"a causal_lm cannot be bidirectional"),
    ("classifier", "gru", dict(pooling="attention"), r"unknown pooling 'attention'; choose one "
                                                     r"of: final, mean, max"),
])
def test_bad_model_config_is_a_one_line_error(kind, name, override, message):
  kw = dict(vocab_size=V, max_len=T)
  if kind == "classifier":
    kw["num_classes"] = 2
  with pytest.raises(ConfigError, match=message) as e:
    MODELS.get(name, kind=kind)(_cfg(**override), **kw)
  assert "\n" not in str(e.value)
