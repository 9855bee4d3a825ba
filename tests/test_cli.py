"""Bad command-line input to the entrypoints: one line `error: ...` on stderr, exit status 2.

Each case runs the entrypoint as a user does (a subprocess); all of them fail while the flags are
parsed, before JAX compiles anything.
"""

import json
import subprocess
import sys

import pytest
from conftest import REPO

COPY = "--config=experiments/configs/copy.py"
QUICK = "--config=experiments/configs/showdown/quick.py"


def run_entrypoint(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess) -> str:
  """Exit status 2 and exactly one stderr line, `error: ...`, without a traceback."""
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  lines = proc.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr and proc.stdout == ""
  return lines[0]


@pytest.mark.parametrize("args, expected", [
    # A field that does not exist: the closest field and the section's fields.
    ([COPY, "--config.train.num_stpes=5"],
     ["--config.train.num_stpes=5: no field train.num_stpes; did you mean train.num_steps?",
      "train has: ", "log_every, num_steps, "]),
    # A value of the wrong type: the field and its type.
    ([COPY, "--config.train.num_steps=abc"],
     ["--config.train.num_steps=abc: train.num_steps takes an integer (int), not 'abc'"]),
    # No such config file: the config files that folder has.
    (["--config=experiments/configs/nope.py"],
     ["no config file experiments/configs/nope.py; the config files in experiments/configs/ "
      "are: ", "copy.py, ddpm_unet.py", "showdown/"]),
    # An unknown :arg: the allowed ones.
    ([f"{COPY}:bogus"], ["unknown config argument 'bogus'; allowed: runlocal, model=gpt|mingru"]),
    ([f"{COPY}:model=lstm"], ["config argument model=lstm: choose one of model=gpt|mingru"]),
    # An unknown flag: the entrypoint's flags.
    ([COPY, "--bogus_flag=1"],
     ["unknown flag --bogus_flag; experiments.main takes --config[.<field>], "
      "--coordinator_address, --distributed, --num_processes, --process_id, --workdir"]),
])
def test_main_bad_arguments(tmp_path, args, expected):
  line = assert_one_line_error(run_entrypoint("experiments.main", *args,
                                              f"--workdir={tmp_path / 'wd'}"))
  for text in expected:
    assert text in line, line
  assert not (tmp_path / "wd").exists()


@pytest.mark.parametrize("args, expected", [
    ([f"{QUICK}:task=mnist"], ["task=mnist: choose one of task=copy|assoc_recall|tinyshakespeare"]),
    ([QUICK, "--config.sweep_stepz=3"], ["no field sweep_stepz; did you mean sweep_steps"]),
    ([QUICK, "--config.seeds=0"], ["config.seeds must be > 0, got 0"]),
    ([QUICK, "--mode=full"], ["--mode with --config", "give one of the two"]),
    (["--mode=fast"], ["flag --mode=fast: value should be one of <full|quick>"]),
    (["--bogus=1"], ["unknown flag --bogus; experiments.showdown takes ", "--config[.<field>]",
                     "--mode", "--out"]),
])
def test_showdown_bad_arguments(tmp_path, args, expected):
  line = assert_one_line_error(run_entrypoint("experiments.showdown", *args,
                                              f"--out={tmp_path / 'out'}"))
  for text in expected:
    assert text in line, line
  assert not (tmp_path / "out").exists()


def test_diffusion_eval_unknown_override_is_one_line(tmp_path):
  from experiments.configs.common import base_config

  (tmp_path / "config.json").write_text(base_config("diffusion").to_json())
  line = assert_one_line_error(run_entrypoint(
      "experiments.diffusion_eval", f"--workdir={tmp_path}", "--set=eval.fid_num_sample=5"))
  assert ("--set=eval.fid_num_sample=5: no field eval.fid_num_sample; did you mean "
          "eval.fid_num_samples") in line, line
  assert json.loads((tmp_path / "config.json").read_text())["task"] == "diffusion"
