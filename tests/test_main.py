"""The absl entrypoint end to end, and one-line errors for bad input."""

import os
import re
import subprocess

import pytest
from conftest import REPO, main_command, read_jsonl, tiny_lm_config

from seqgen_jax.errors import ConfigError, DataError
from seqgen_jax.tasks import build_task
from seqgen_jax.tasks.lm import LanguageModelTask
from seqgen_jax.train.loop import train_and_evaluate


def test_runlocal_quickstart_trains(tmp_path):
  wd = tmp_path / "copy"
  # As a user runs it: one device, default XLA flags, JAX probing every backend it knows.
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"} | {"XLA_FLAGS": ""}
  proc = subprocess.run(main_command("copy.py:runlocal", wd), cwd=REPO, capture_output=True,
                        text=True, timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  _assert_quiet_console(proc.stdout + proc.stderr)
  rows = read_jsonl(wd / "metrics.jsonl")
  train = [r for r in rows if r["split"] == "train"]
  evals = [r for r in rows if r["split"] == "eval"]
  assert train[-1]["loss"] < 0.5 * train[0]["loss"]  # loss falls
  assert evals and evals[-1]["accuracy"] > 0.5 and "bits_per_token" in evals[-1]
  assert "sample @ 300" in proc.stderr and "-> model" in proc.stderr  # printed sample
  assert "steps/s" in proc.stderr and "ETA" in proc.stderr
  assert (wd / "checkpoints" / "300").is_dir() and any((wd / "tensorboard").iterdir())


def _assert_quiet_console(text: str) -> None:
  """Only this project's INFO lines (summary, progress, eval, sample): no orbax checkpoint chatter,
  no JAX "Unable to initialize backend" lines; warnings may show."""
  info = re.findall(r"^I\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\]", text, re.MULTILINE)
  own = {p.name for d in ("seqgen_jax", "experiments") for p in (REPO / d).rglob("*.py")}
  assert info and set(info) <= own, sorted(set(info) - own)
  assert "Unable to initialize backend" not in text and "orbax" not in text.lower()
  assert re.search(r"^I.* loop\.py:\d+\] eval @ 300: loss ", text, re.MULTILINE), text[-3000:]
  assert re.search(r"\] step 300/300 \| ", text) and "done: step 300" in text


def test_shakespeare_runlocal_reports_bpc_and_text(tmp_path, data_dir):
  config = tiny_lm_config(data__name="tinyshakespeare", data__seq_len=32,
                          data__data_dir=str(data_dir), train__num_steps=30,
                          train__eval_every=30, sample__num_tokens=40)
  train_and_evaluate(config, str(tmp_path), build_task)
  rows = read_jsonl(tmp_path / "metrics.jsonl")
  ev = [r for r in rows if r["split"] == "eval"][-1]
  assert 1.0 < ev["bits_per_char"] < 6.0 and "seq_accuracy" not in ev
  (sample,) = [r["sample"] for r in rows if r["split"] == "text"]
  assert len(sample) == 41  # prompt "\n" + 40 characters
  assert (tmp_path / "tokenizer.json").is_file()


@pytest.mark.parametrize("override, message", [
    (dict(model__name="transformerxl"), r"unknown causal_lm model 'transformerxl'; "
                                        r"choose one of: gpt"),
    (dict(task="vision"), r"unknown task 'vision'; choose one of: (\w+, )*lm\b"),
    (dict(optimizer__name="adamax"), r"unknown optimizer 'adamax'; choose one of: adafactor, "
                                     r"adam, adamw, lion, sgd"),
    (dict(optimizer__schedule="step"), r"unknown learning-rate schedule 'step'"),
    (dict(data__name="wikitext"), r"unknown language-modelling dataset 'wikitext'; choose one "
                                  r"of: assoc_recall, copy, tinyshakespeare"),
    (dict(train__batch_size=12), r"global batch size 12 is not divisible by the 8 "
                                 r"data-parallel devices"),
    (dict(train__compute_dtype="fp8"), r"unknown compute dtype 'fp8'; choose one of: float32, "
                                       r"bfloat16"),
])
def test_bad_config_is_one_line_and_writes_nothing(tmp_path, override, message):
  wd = tmp_path / "wd"
  with pytest.raises(ConfigError, match=message) as e:
    train_and_evaluate(tiny_lm_config(**override), str(wd), build_task)
  assert "\n" not in str(e.value)
  assert not wd.exists()


def test_missing_data_is_one_line_and_writes_nothing(tmp_path):
  wd = tmp_path / "wd"
  config = tiny_lm_config(data__name="tinyshakespeare", data__seq_len=16,
                          data__data_dir=str(tmp_path))
  with pytest.raises(DataError, match=r"no file .*tinyshakespeare/input.txt.gz.*download https"):
    train_and_evaluate(config, str(wd), build_task)
  assert not wd.exists()


def test_entrypoint_prints_one_line_error_and_exits_2(tmp_path):
  wd = tmp_path / "wd"
  proc = subprocess.run(
      main_command("shakespeare_char.py:runlocal", wd,
                   f"--config.data.data_dir={tmp_path / 'missing'}"),
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: Tiny Shakespeare: data directory ") and "does not exist" in last
  assert "Traceback" not in proc.stderr
  assert not wd.exists()


def test_final_eval_runs_once_on_ema_params_and_is_written(tmp_path):
  import json

  import jax
  import numpy as np

  seen = []

  class LMWithFinal(LanguageModelTask):
    def final_eval(self, params, rng, evaluator):
      seen.append(params)
      return {"param_sum": float(sum(np.sum(x) for x in jax.tree.leaves(params)))}

  # The loop takes any config -> Task function: here the subclass itself, no registry entry.
  state = train_and_evaluate(tiny_lm_config(train__ema_decay=0.9, train__num_steps=4),
                             str(tmp_path), LMWithFinal)
  assert len(seen) == 1
  want = float(sum(np.sum(x) for x in jax.tree.leaves(state.ema_params)))
  got = json.loads((tmp_path / "final_metrics.json").read_text())
  assert got["step"] == 4 and np.isclose(got["param_sum"], want, rtol=1e-6)
  assert not np.isclose(want, float(sum(np.sum(x) for x in jax.tree.leaves(state.params))))
  rows = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["split"] == "final"]
  assert rows and np.isclose(rows[0]["param_sum"], want, rtol=1e-6)


def test_sample_every_zero_samples_at_the_end_and_minus_one_never(tmp_path):
  calls = []

  class LMCountingSamples(LanguageModelTask):
    def sample(self, params, rng):
      calls.append(1)
      return {"text": "x"}

  for every, want in ((0, 1), (-1, 0), (3, 2)):  # 3 of 4 steps: at step 3 and at the end
    calls.clear()
    train_and_evaluate(tiny_lm_config(train__num_steps=4, train__sample_every=every,
                                      train__final_eval=False),
                       str(tmp_path / f"every{every}"), LMCountingSamples)
    assert len(calls) == want, every


# ------------------------------------------------------------------------- init.from_pretrained


def _tiny_gpt2_dir(path, vocab_size: int, n_positions: int):
  """A random GPT-2 saved as transformers saves it (nothing downloaded)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(0)
  hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=vocab_size, n_positions=n_positions, n_embd=24, n_layer=1, n_head=2,
      bos_token_id=0, eos_token_id=0))
  hf.save_pretrained(path)
  return path


def test_init_from_pretrained_starts_from_the_imported_weights(tmp_path):
  """config.init.from_pretrained=DIR: the run trains the checkpoint's model (config.json records
  its fields) from its weights; with learning rate 0 they come out of training unchanged, and
  sampling runs on the imported model. A checkpoint that does not fit the data is a one-line
  error before anything is written."""
  import json

  import jax
  import numpy as np

  from seqgen_jax.convert import load_pretrained

  config = tiny_lm_config(train__num_steps=2, train__eval_every=2, train__checkpoint_every=2,
                          optimizer__lr=0.0, optimizer__schedule="constant",
                          optimizer__warmup_steps=0, train__final_eval=False)
  data = LanguageModelTask(config).data
  ckpt = _tiny_gpt2_dir(tmp_path / "gpt2", data.vocab_size, data.seq_len + 5)
  config.init.from_pretrained = str(ckpt)
  config.lock()  # as the entrypoint hands it over
  state = train_and_evaluate(config, str(tmp_path / "wd"), build_task)
  imported = load_pretrained(ckpt)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), imported.params)
  recorded = json.loads((tmp_path / "wd" / "config.json").read_text())
  assert recorded["model"]["d_model"] == 24 and recorded["model"]["num_layers"] == 1
  assert recorded["init"]["from_pretrained"] == str(ckpt)
  assert [r for r in read_jsonl(tmp_path / "wd" / "metrics.jsonl") if r["split"] == "eval"]

  small = _tiny_gpt2_dir(tmp_path / "small", data.vocab_size + 1, data.seq_len)
  for source, error, message in [
      (small, ConfigError, rf"init.from_pretrained={small} has vocab_size={data.vocab_size + 1}, "
                           rf"the task needs vocab_size={data.vocab_size}"),
      (tmp_path / "nowhere", DataError, "checkpoint directory .*nowhere does not exist")]:
    wd = tmp_path / f"bad_{source.name}"
    with pytest.raises(error, match=message):
      train_and_evaluate(tiny_lm_config(init__from_pretrained=str(source)), str(wd), build_task)
    assert not wd.exists()


def test_entrypoint_accepts_init_from_pretrained(tmp_path):
  """The override exists in every config (locked by absl); a bad directory is one line, exit 2."""
  wd = tmp_path / "wd"
  proc = subprocess.run(
      main_command("copy.py:runlocal", wd, f"--config.init.from_pretrained={tmp_path / 'none'}"),
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last == f"error: checkpoint directory {tmp_path / 'none'} does not exist"
  assert "Traceback" not in proc.stderr and not wd.exists()
