"""The showdown: a tiny quick-mode run writes the table and every plot, a model registered only
here appears in it without editing the showdown, and bad input fails with one line."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import showdown, showdown_report, showdown_steps
from seqgen_jax.errors import ConfigError
from seqgen_jax.registry import MODELS


class CausalConvLM(nn.Module):
  """A real (if small) causal LM: embedding, causal depthwise convolution of width 3, GELU MLP,
  output layer. Position t sees tokens t-2..t only."""

  vocab_size: int
  d_model: int

  @nn.compact
  def __call__(self, tokens_BT, *, train=False):
    x_BTD = nn.Embed(self.vocab_size, self.d_model)(tokens_BT)
    x_BTD = jnp.pad(x_BTD, ((0, 0), (2, 0), (0, 0)))  # left padding: causal
    x_BTD = nn.Conv(self.d_model, (3,), padding="VALID", feature_group_count=self.d_model)(x_BTD)
    x_BTD = x_BTD + nn.Dense(self.d_model)(nn.gelu(nn.Dense(2 * self.d_model)(x_BTD)))
    return nn.Dense(self.vocab_size)(x_BTD).astype(jnp.float32)


@pytest.fixture
def extra_model():
  """Registers "test_causal_conv" (kind causal_lm) for one test, then removes it again."""
  name = "test_causal_conv"
  MODELS.register(name, kind="causal_lm", family="convolution")(
      lambda cfg, *, vocab_size, max_len, dtype=None: CausalConvLM(vocab_size, cfg.d_model))
  yield name
  reg = MODELS._by_kind["causal_lm"]
  del reg._entries[name], reg._tags[name]


def tiny_settings(**kw) -> showdown.Settings:
  s = showdown.preset("quick", "copy")
  s.data = dict(length=2, delay=2, alphabet=4)
  s.model = dict(d_model=16, hidden_size=16, num_layers=1, num_heads=2, d_ff=32, mlp_ratio=2,
                 dropout=0.0)
  s.batch_size = 8
  s.seeds = 2
  s.evals_per_run = 2
  s.sweep_models, s.sweep_steps = ["rnn", "gpt"], 3
  s.copy_delays, s.recall_pairs = [1, 4], [2]
  s.scaling_models, s.scaling_lengths, s.scaling_tokens = ["gpt", "lstm"], [8, 16], 64
  s.latency_lengths = [4, 8]
  s.denoiser = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(1,), norm_groups=4,
                    dropout=0.0, hidden_size=16, depth=1, num_heads=2, patch_size=2)
  s.image_shape, s.denoise_steps, s.repeats = (8, 8, 3), [1, 2], 1
  for k, v in kw.items():
    setattr(s, k, v)
  return s


def test_a_newly_registered_model_appears_in_the_table(tmp_path, extra_model, capsys):
  """Registered here, found through MODELS: trained under the budget, a row of the table; the
  console gets one line per seed."""
  s = tiny_settings(models=[extra_model])
  every = showdown.entries(tiny_settings())
  assert ("lm", "causal_lm", extra_model) in every
  flops = showdown_steps.count_flops(
      showdown.make_config(s, "lm", extra_model, {"name": "copy", **s.data}))
  s.budget_flops = 6.5 * flops
  capsys.readouterr()
  rows = showdown_report.summarize(showdown.train_all(s, str(tmp_path)))
  printed = capsys.readouterr().out.splitlines()
  assert [line.split(": 6 steps, accuracy ")[0] for line in printed] == [
      f"showdown copy: {extra_model} seed {seed}" for seed in (0, 1)], printed
  table = showdown_report.markdown_table(rows)
  (row,) = [line for line in table.splitlines() if f"| {extra_model} |" in line]
  assert "| convolution |" in row and "(n=2)" in row
  assert rows[0]["steps"] == 6 and rows[0]["train_flops"] == pytest.approx(6 * flops)
  assert not math.isnan(rows[0]["ci"])


def test_quick_showdown_writes_table_and_every_plot(tmp_path, extra_model):
  every = showdown.entries(tiny_settings())
  assert ("lm", "causal_lm", extra_model) in every  # found through the registry
  assert {n for _, _, n in every} >= {"rnn", "lstm", "gru", "mingru", "minlstm", "lru", "gpt"}

  s = tiny_settings(models=["gpt", "lstm", extra_model])
  flops_per_step = {}
  for name in s.models:
    prep = showdown_steps.prepare(
        showdown.make_config(s, "lm", name, {"name": "copy", **s.data}), compile=False)
    flops_per_step[name] = prep.flops
  s.budget_flops = 4.5 * flops_per_step["gpt"]  # GPT: 4 steps; the others what fits
  results = showdown.run_showdown(s, str(tmp_path))

  for name in showdown_report.PLOTS:
    path = tmp_path / name
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
  report = (tmp_path / "report.md").read_text()
  assert results["table"] in report
  rows = {line.split("|")[2].strip(): line for line in report.splitlines()
          if line.startswith("| copy |")}
  assert set(rows) == {"gpt", "lstm", extra_model}
  by_model = showdown_report.summarize(results["runs"])
  for r in by_model:
    # The same budget: each model ran floor(budget / its XLA FLOPs per step) steps.
    assert r["steps"] == int(s.budget_flops // flops_per_step[r["model"]]), r
    assert r["train_flops"] <= s.budget_flops
    assert r["seeds"] == 2 and not math.isnan(r["ci"]) and 0.0 <= r["quality"] <= 1.0
    assert r["memory_kind"] == "XLA estimate" and r["memory_mib"] > 0
  # Every benchmark produced its rows.
  assert {(r["model"], r["seq_len"]) for r in results["scaling"]} == {
      (m, t) for m in ("gpt", "lstm") for t in (8, 16)}
  assert {r["model"] for r in results["token_latency"]} == {"gpt", "lstm"}
  assert {r["model"] for r in results["image_latency"]} >= {"unet", "dit"}
  assert {(r["task"], r["dependency"]) for r in results["dependency"]} == {
      ("copy", 6), ("copy", 9), ("assoc_recall", 5)}


def test_presets_are_the_config_files():
  """--mode=<preset> loads experiments/configs/showdown/<preset>.py; a new file is a new preset."""
  assert {"quick", "full"} <= set(showdown.PRESETS)
  s = showdown.preset("quick", "tinyshakespeare")
  assert (s.mode, s.task, s.data.seq_len, s.budget_flops) == ("quick", "tinyshakespeare", 64, 2e11)
  with pytest.raises(ConfigError, match="unknown showdown preset 'fast'; choose one of: .*quick"):
    showdown.preset("fast")
  with pytest.raises(ConfigError, match=r"choose one of task=copy\|assoc_recall\|tinyshakespeare"):
    showdown.preset("full", "mnist")


def test_mean_ci_matches_scipy_t_interval():
  from scipy import stats

  x = [0.5, 0.7, 0.65, 0.8]
  mean, half = showdown_report.mean_ci(x)
  lo, hi = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
  assert mean == pytest.approx(np.mean(x)) and half == pytest.approx((hi - lo) / 2)


def test_bad_input_is_one_line():
  with pytest.raises(ConfigError, match="choose one of: copy, assoc_recall, tinyshakespeare"):
    showdown.entries(tiny_settings(task="mnist"))
  with pytest.raises(ConfigError, match="does not fit|do\\(es\\) not fit"):
    showdown.entries(tiny_settings(models=["bert"]))
  s = tiny_settings(models=["gpt"], budget_flops=10.0)
  prep = showdown_steps.prepare(
      showdown.make_config(s, "lm", "gpt", {"name": "copy", **s.data}), compile=False)
  with pytest.raises(ConfigError, match="less than one train step"):
    showdown.budget_steps(s, prep)


def test_input_gradients_vanish_exactly_outside_the_receptive_field(extra_model):
  """The causal-conv LM sees tokens t-2..t only and the copy loss is on the answer positions
  (length + delay onward), so every input more than 2 positions before the first answer gets a
  gradient of exactly 0; attention (GPT) passes gradient back to the very first token."""
  s = tiny_settings()
  data = {"name": "copy", "length": 2, "delay": 6, "alphabet": 4}
  first_answer = 2 + 6
  for name in (extra_model, "gpt"):
    prep = showdown_steps.prepare(showdown.make_config(s, "lm", name, data), compile=False,
                                  count=False)
    params = prep.init(jax.random.PRNGKey(0)).params
    batch = prep.task.train_source().batch(0, slice(0, 8))
    norms = showdown_steps.input_gradient_norms(prep.task, params, batch)
    assert norms.shape == (batch["inputs"].shape[1],)
    if name == extra_model:
      np.testing.assert_array_equal(norms[:first_answer - 2], 0.0)
      assert np.all(norms[first_answer - 2:] > 0)
    else:
      assert np.all(norms > 0)


def test_budget_seconds_sets_the_steps_from_the_measured_step_time(tmp_path, monkeypatch):
  """--budget_seconds: steps = floor(budget / median compiled step time); flags are checked."""
  from absl import flags
  from absl.testing import flagsaver

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # defaults; flagsaver sets what the test needs
  with flagsaver.flagsaver(budget_seconds=12.5, seeds=2, models=["gpt"]):
    s = showdown.settings_from_flags()
  assert s.budget_seconds == 12.5 and s.budget_flops is None and s.seeds == 2
  with flagsaver.flagsaver(budget_seconds=1.0, budget_flops=1e9):
    with pytest.raises(ConfigError, match="give one budget"):
      showdown.settings_from_flags()
  with flagsaver.flagsaver(budget_seconds=-3.0):
    with pytest.raises(ConfigError, match="--budget_seconds must be > 0, got -3.0"):
      showdown.settings_from_flags()

  timed = []

  def fake_time_steps(prep, repeats=5):
    timed.append(prep.compiled is not None)  # the step was compiled for timing
    return 0.01

  monkeypatch.setattr(showdown_steps, "time_steps", fake_time_steps)
  s = tiny_settings(models=["gpt"], seeds=1, budget_flops=None, budget_seconds=0.055)
  (run,) = showdown.train_all(s, str(tmp_path))
  assert timed == [True] and run["steps"] == 5
  # The real timer: a positive median over the compiled step.
  prep = showdown_steps.prepare(
      showdown.make_config(s, "lm", "gpt", {"name": "copy", **s.data}), count=False)
  monkeypatch.undo()
  assert 0 < showdown_steps.time_steps(prep, repeats=3) < 5.0


def test_full_mode_builds_every_model_at_its_shapes():
  """The full (accelerator) preset, never run on CI's CPU, at least builds: every registered
  model's train step lowers at the full shapes, GPT has nanoGPT's shakespeare-char size
  (closed-form parameter count) and the FLOP budget buys it thousands of steps."""
  s = showdown.preset("full", "copy")
  data = {"name": "copy", **s.data}
  seq_len = 2 * s.data["length"] + s.data["delay"]
  names = set()
  for train_task, _, name in showdown.entries(s):
    prep = showdown_steps.prepare(showdown.make_config(s, train_task, name, data),
                                  compile=False, count=False)
    assert prep.tokens_per_step == s.batch_size * seq_len, name
    names.add(name)
    if name == "gpt":
      d, f, n_layers = s.model["d_model"], s.model["d_ff"], s.model["num_layers"]
      vocab = prep.task.train_source().vocab_size
      per_layer = 4 * d * d + 2 * d * f + 9 * d + f  # qkv + out + MLP weights, biases, 2 LNs
      tokens_and_positions = (vocab + seq_len) * d  # tied output layer
      assert prep.num_params == n_layers * per_layer + 2 * d + tokens_and_positions
  assert names >= {"rnn", "lstm", "gru", "mingru", "minlstm", "lru", "gpt"}
  gpt_flops = showdown_steps.count_flops(showdown.make_config(s, "lm", "gpt", data))
  assert s.budget_flops // gpt_flops >= 5000
