"""Two processes on one machine (4 CPU devices each) == one process with 8, through the entrypoint.

Each process is a real ``python -m experiments.main`` that calls ``jax.distributed.initialize``
(cross-process collectives through gloo) and loads only its own rows of every global batch. The
first leg is launched by hand (--coordinator_address / --num_processes / --process_id), trains,
checkpoints and exits; the second leg is launched the way ``srun`` launches launch/slurm_gpu.sh's
tasks (SLURM variables + the script's exports, no flags), restores and finishes. The final
parameters must match a single process with 8 devices that trained straight through on the same
global batches.
"""

import os
import socket
import subprocess

import jax
import numpy as np
import orbax.checkpoint as ocp
from conftest import REPO, main_command, read_jsonl

# SGD with a constant learning rate: the schedule does not depend on num_steps (so a leg of 6
# steps and a leg up to 10 give the straight run's updates), and float round-off in the
# cross-process all-reduce is not amplified the way Adam's 1/sqrt(v) amplifies it.
OVERRIDES = [
    "--config.model.num_layers=1", "--config.model.d_model=32", "--config.model.d_ff=64",
    "--config.model.num_heads=2", "--config.data.delay=4", "--config.train.batch_size=16",
    "--config.train.log_every=2", "--config.train.eval_every=1000",
    "--config.train.checkpoint_every=4", "--config.eval.num_batches=1",
    "--config.optimizer.name=sgd", "--config.optimizer.momentum=0.9",
    "--config.optimizer.schedule=constant", "--config.optimizer.warmup_steps=0",
    "--config.optimizer.lr=0.1", "--config.sample.num_tokens=1",
]
FIRST, TOTAL = 6, 10


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int, **extra) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_COORD"))}
  env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} "
                      "--xla_backend_optimization_level=0")
  return {**env, **{k: str(v) for k, v in extra.items()}}


def _run_all(cmds_envs, log_dir, tag, timeout=300) -> list[str]:
  """Starts every (cmd, env) at once, waits for all; returns their logs (fails if any fails)."""
  procs, logs = [], []
  for i, (cmd, env) in enumerate(cmds_envs):
    log = open(log_dir / f"{tag}{i}.log", "w+")
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
    logs.append(log)
  try:
    for p in procs:
      p.wait(timeout=timeout)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  out = []
  for p, log in zip(procs, logs):
    log.seek(0)
    text = log.read()
    log.close()
    assert p.returncode == 0, f"{tag}: exit {p.returncode}\n{text[-3000:]}"
    out.append(text)
  return out


def _checkpoint(wd, step):
  """The saved state, restored onto this process's first device (whatever topology saved it)."""
  path = os.path.abspath(wd / "checkpoints" / str(step) / "state")
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as ckpt:
    meta = ckpt.metadata(path)
    meta = getattr(meta, "item_metadata", meta)
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)
    return ckpt.restore(path, target)


def test_two_processes_with_restore_equal_one_process(tmp_path):
  single, multi = tmp_path / "single", tmp_path / "multi"
  cmd = lambda wd, n: main_command("copy.py:runlocal", wd, *OVERRIDES,
                                   f"--config.train.num_steps={n}")
  # Leg 1 (hand-made launch) runs next to the single-process reference.
  port = _free_port()
  flags = lambda i: [f"--coordinator_address=localhost:{port}", "--num_processes=2",
                     f"--process_id={i}"]
  logs = _run_all([(cmd(multi, FIRST) + flags(i), _env(4)) for i in range(2)]
                  + [(cmd(single, TOTAL), _env(8))], tmp_path, "leg1_")
  for i, (lo, hi) in enumerate([(0, 8), (8, 16)]):
    assert f"process {i} of 2, 4 local / 8 global devices" in logs[i]
    assert f"process {i} of 2 loads rows [{lo}, {hi}) of each global batch of 16" in logs[i]
  assert "loads rows [0, 16) of each global batch of 16" in logs[2]
  assert (multi / "checkpoints" / str(FIRST)).is_dir()

  # Leg 2: as srun starts launch/slurm_gpu.sh's tasks on one node; restores step 6 and goes on.
  port = _free_port()
  slurm = lambda i: _env(4, SLURM_JOB_ID=4242, SLURM_STEP_NODELIST="localhost", SLURM_NTASKS=2,
                         SLURM_STEP_NUM_TASKS=2, SLURM_PROCID=i, SLURM_LOCALID=i,
                         JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                         JAX_LOCAL_DEVICE_IDS="0,1,2,3")
  logs = _run_all([(cmd(multi, TOTAL), slurm(i)) for i in range(2)], tmp_path, "leg2_")
  for i in range(2):
    assert f"restored checkpoint at step {FIRST}" in logs[i]
    assert f"process {i} of 2, 4 local / 8 global devices" in logs[i]

  a, b = _checkpoint(single, TOTAL), _checkpoint(multi, TOTAL)
  assert int(a["step"]) == int(b["step"]) == TOTAL
  for name in ("params", "opt_state"):
    leaves_a, leaves_b = jax.tree.leaves(a[name]), jax.tree.leaves(b[name])
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
      np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-6)
  # Same losses at every logged step (process 0 writes the metrics).
  loss = lambda wd: {r["step"]: r["loss"] for r in read_jsonl(wd / "metrics.jsonl")
                     if r["split"] == "train"}
  la, lb = loss(single), loss(multi)
  assert sorted(la) == sorted(lb) == list(range(2, TOTAL + 1, 2))
  np.testing.assert_allclose([lb[s] for s in sorted(lb)], [la[s] for s in sorted(la)], rtol=1e-5)
  # The run really trained (identical-but-frozen params would also "agree").
  assert la[TOTAL] < la[2]
