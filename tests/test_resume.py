"""Preemption: SIGKILL + restart is bitwise equal to an uninterrupted run; SIGTERM saves and exits.

Each run is a real subprocess of ``python -m experiments.main`` (8 fake CPU devices, float32), on
the synthetic copy task and on Tiny Shakespeare read through its TFDS builder.
"""

import os
import signal
import subprocess
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from conftest import REPO, main_command, read_jsonl

# A small model on copy-with-delay, many cheap steps, a checkpoint every 10 steps.
OVERRIDES = [
    "--config.model.num_layers=1", "--config.model.d_model=32", "--config.model.d_ff=64",
    "--config.model.num_heads=2", "--config.data.delay=4", "--config.train.batch_size=16",
    "--config.train.log_every=1", "--config.train.eval_every=1000",
    "--config.train.checkpoint_every=10", "--config.train.keep_checkpoints=2",
    "--config.eval.num_batches=1", "--config.optimizer.warmup_steps=5",
]
TOTAL = 80


# The same on a real dataset read through its TFDS builder and the step-indexed pipeline: Tiny
# Shakespeare, character windows (seqgen_jax/data/shakespeare.py).
SHAKESPEARE_OVERRIDES = [
    o for o in OVERRIDES if not o.startswith("--config.data.")] + [
    "--config.data.seq_len=32", "--config.sample.num_tokens=8"]
SHAKESPEARE_TOTAL = 40


def _cmd(wd, total=TOTAL):
  return main_command("copy.py:runlocal", wd, *OVERRIDES, f"--config.train.num_steps={total}")


def _shakespeare_cmd(wd, data_dir, total=SHAKESPEARE_TOTAL):
  return main_command("shakespeare_char.py:runlocal", wd, *SHAKESPEARE_OVERRIDES,
                      f"--config.data.data_dir={data_dir}", f"--config.train.num_steps={total}")


def _ckpt_steps(wd) -> list[int]:
  d = wd / "checkpoints"
  if not d.is_dir():
    return []
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit())


def _wait_for(predicate, proc, timeout=180.0):
  t0 = time.time()
  while not predicate():
    if proc.poll() is not None:
      raise AssertionError(f"process ended early:\n{proc.stderr.read()[-3000:]}")
    if time.time() - t0 > timeout:
      raise AssertionError("timed out")
    time.sleep(0.01)


def _final_params(wd, step):
  with ocp.CheckpointManager(os.path.abspath(wd / "checkpoints"),
                             item_names=("state", "data", "config")) as mngr:
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return restored["state"]


def _kill_restart_and_compare(tmp_path, cmd, total):
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  ref = subprocess.run(cmd(straight), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert ref.returncode == 0, ref.stderr[-3000:]

  proc = subprocess.Popen(cmd(killed), cwd=REPO, stderr=subprocess.PIPE, text=True)
  try:
    _wait_for(lambda: len(_ckpt_steps(killed)) >= 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
  finally:
    proc.kill()
  at_kill = _ckpt_steps(killed)
  assert at_kill and max(at_kill) < total, at_kill  # really interrupted mid-run

  resumed = subprocess.run(cmd(killed), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"restored checkpoint at step {max(at_kill)}" in resumed.stderr

  a, b = _final_params(straight, total), _final_params(killed, total)
  assert int(a["step"]) == int(b["step"]) == total
  for name in ("params", "opt_state", "rng"):
    leaves_a, leaves_b = jax.tree.leaves(a[name]), jax.tree.leaves(b[name])
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bitwise


def test_sigkill_then_restart_is_bitwise_equal_to_uninterrupted(tmp_path):
  _kill_restart_and_compare(tmp_path, _cmd, TOTAL)


def test_sigkill_then_restart_on_tiny_shakespeare_is_bitwise_equal(tmp_path, data_dir):
  """The data position in the checkpoint restarts the real-data pipeline exactly."""
  _kill_restart_and_compare(
      tmp_path, lambda wd: _shakespeare_cmd(wd, data_dir), SHAKESPEARE_TOTAL)
  assert (tmp_path / "killed" / "tokenizer.json").is_file()


def test_sigterm_saves_current_step_and_exits_zero(tmp_path):
  wd = tmp_path / "term"
  proc = subprocess.Popen(_cmd(wd, total=100_000), cwd=REPO, stderr=subprocess.PIPE, text=True)
  try:
    _wait_for(lambda: len(_ckpt_steps(wd)) >= 1 and (wd / "metrics.jsonl").exists(), proc)
    time.sleep(0.2)
    logged = [r["step"] for r in read_jsonl(wd / "metrics.jsonl") if r["split"] == "train"]
    proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    rc = proc.wait(timeout=120)
    elapsed = time.time() - t0
    stderr = proc.stderr.read()
  finally:
    proc.kill()
  assert rc == 0, stderr[-3000:]
  final = max(_ckpt_steps(wd))
  assert f"saved checkpoint at step {final}" in stderr
  assert max(logged) <= final <= max(logged) + 3  # within a step or two of the signal
  assert elapsed < 30
  state = _final_params(wd, final)
  assert int(state["step"]) == final
