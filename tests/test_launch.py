"""launch/: the exact commands each script prints with --dry-run, its errors, and shellcheck.

No cloud or cluster here: the printed lines are parsed back with shlex and compared with the
gcloud / sbatch / srun command lines they must be. The archive step of the TPU set-up really runs.
"""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tarfile

import pytest
from conftest import REPO

LAUNCH = REPO / "launch"
TPU = ["--name=seqgen-v5e", "--zone=us-west4-a"]
RUN = ["--config=experiments/configs/shakespeare_char.py",
       "--workdir=gs://my-bucket/runs/shakespeare"]
# An override with a space and an apostrophe must reach experiments.main as one argument.
EXTRA = ["--", "--config.train.batch_size=256", "--config.sample.prompt=It's a"]
MAIN = ["python3", "-m", "experiments.main", "--config=experiments/configs/shakespeare_char.py",
        "--workdir=gs://my-bucket/runs/shakespeare", "--distributed=on",
        "--config.train.batch_size=256", "--config.sample.prompt=It's a"]
SSH = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "seqgen-v5e", "--zone=us-west4-a"]


def _script(name, *args, env=None):
  """Runs a launch script with --dry-run (placed before any "--", after which flags go to
  experiments.main)."""
  args = list(args)
  cut = args.index("--") if "--" in args else len(args)
  args[cut:cut] = ["--dry-run"]
  return subprocess.run(["bash", str(LAUNCH / name), *args], capture_output=True, text=True,
                        timeout=60, env={**os.environ, **(env or {})})


def _lines(name, *args, env=None) -> list[list[str]]:
  """The printed commands (comments dropped), each split back into its argv."""
  proc = _script(name, *args, env=env)
  assert proc.returncode == 0, proc.stderr
  return [shlex.split(line) for line in proc.stdout.splitlines() if not line.startswith("#")]


def _remote(argv: list[str]) -> list[str]:
  (command,) = [a for a in argv if a.startswith("--command=")]
  return shlex.split(command[len("--command="):])


def test_shellcheck_passes_on_every_script():
  exe = shutil.which("shellcheck") or str(pathlib.Path(sys.executable).parent / "shellcheck")
  scripts = sorted(LAUNCH.glob("*.sh"))
  assert len(scripts) >= 2
  proc = subprocess.run([exe, "--severity=style", *map(str, scripts)], capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tpu_up_on_demand_prints_create_setup_run(tmp_path):
  lines = _lines("tpu_vm.sh", "up", *TPU, *RUN, *EXTRA, env={"TMPDIR": str(tmp_path)})
  create, archive, scp, install, run = lines
  assert create == ["gcloud", "compute", "tpus", "tpu-vm", "create", "seqgen-v5e",
                    "--zone=us-west4-a", "--accelerator-type=v5litepod-8",
                    "--version=v2-alpha-tpuv5-lite"]
  tarball = str(tmp_path / "seqgen-seqgen-v5e.tar.gz")
  assert archive == ["git", "-C", str(REPO), "ls-files", "-z", "-co", "--exclude-standard", "|",
                     "tar", "-C", str(REPO), "-czf", tarball, "--null", "-T", "-"]
  assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", tarball, "seqgen-v5e:seqgen.tar.gz",
                 "--zone=us-west4-a", "--worker=all"]
  assert install[:8] == SSH + ["--worker=all"]
  assert _remote(install) == [
      "rm", "-rf", "~/seqgen", "&&", "mkdir", "-p", "~/seqgen", "&&", "tar", "-xzf",
      "~/seqgen.tar.gz", "-C", "~/seqgen", "&&", "cd", "~/seqgen", "&&", "python3", "-m", "pip",
      "install", "-q", "--upgrade", "pip", "&&", "python3", "-m", "pip", "install", "-q", "-e",
      ".[tpu]"]
  assert run[:8] == SSH + ["--worker=all"]
  assert _remote(run) == ["set", "-o", "pipefail;", "cd", "~/seqgen", "&&", *MAIN, "2>&1", "|",
                          "tee", "-a", "~/seqgen_run.log"]
  # The printed archive command really packs this checkout (and nothing ignored, no .git).
  subprocess.run(" ".join(map(shlex.quote, archive[:7])) + " | " +
                 " ".join(map(shlex.quote, archive[8:])), shell=True, check=True, timeout=60)
  with tarfile.open(tarball) as tar:
    names = set(tar.getnames())
  assert {"experiments/main.py", "launch/tpu_vm.sh", "pyproject.toml"} <= names
  assert not any(n.startswith((".git/", ".venv/")) or "__pycache__" in n for n in names)


def test_tpu_queued_spot_babysit_prints_one_cycle():
  lines = _lines("tpu_vm.sh", "babysit", *TPU, "--project=my-proj", "--spot", "--queued",
                 "--accelerator-type=v6e-16", "--version=v2-alpha-tpuv6e",
                 "--data=gs://my-bucket/seqgen_data", *RUN, *EXTRA)
  qr = ["seqgen-v5e-qr", "--zone=us-west4-a", "--project=my-proj"]
  describe = ["gcloud", "compute", "tpus", "queued-resources", "describe", *qr,
              "--format=value(state.state)"]
  assert lines[0] == describe  # state check: missing in a dry run, so it (re)creates
  assert lines[1] == ["gcloud", "compute", "tpus", "queued-resources", "create", "seqgen-v5e-qr",
                      "--node-id=seqgen-v5e", "--zone=us-west4-a", "--project=my-proj",
                      "--accelerator-type=v6e-16", "--runtime-version=v2-alpha-tpuv6e", "--spot"]
  assert lines[2] == describe  # wait until ACTIVE
  assert [line[:5] for line in lines[3:]] == [
      ["git", "-C", str(REPO), "ls-files", "-z"], ["gcloud", "compute", "tpus", "tpu-vm", "scp"],
      SSH[:5], SSH[:5]]
  assert "--project=my-proj" in lines[5] and "--worker=all" in lines[5]
  # --data: the datasets land in ~/seqgen_data, the data directory experiments.main defaults to.
  assert _remote(lines[5])[-11:] == ["&&", "mkdir", "-p", "~/seqgen_data", "&&", "gcloud",
                                     "storage", "rsync", "--recursive", "gs://my-bucket/seqgen_data",
                                     "~/seqgen_data"]
  assert _remote(lines[-1])[6:6 + len(MAIN)] == MAIN
  out = _script("tpu_vm.sh", "babysit", *TPU, "--spot", *RUN).stdout
  assert out.splitlines()[-1] == ("# repeat until the run's output has 'done: step' (at most 20 "
                                  "restarts, checking every 60s)")


@pytest.mark.parametrize("args, expected", [
    (["delete", "--queued"], ["gcloud", "compute", "tpus", "queued-resources", "delete",
                              "seqgen-v5e-qr", "--zone=us-west4-a", "--force", "--quiet"]),
    (["delete"], ["gcloud", "compute", "tpus", "tpu-vm", "delete", "seqgen-v5e",
                  "--zone=us-west4-a", "--quiet"]),
    (["logs", "--worker=all"], SSH + ["--worker=all", "--command=tail -n +1 -F ~/seqgen_run.log"]),
])
def test_tpu_delete_and_logs(args, expected):
  assert _lines("tpu_vm.sh", args[0], *TPU, *args[1:]) == [expected]


def test_tpu_detached_run_survives_the_ssh_session():
  (run,) = _lines("tpu_vm.sh", "run", *TPU, *RUN, "--detach", *EXTRA)
  assert _remote(run) == ["cd", "~/seqgen", "&&", "nohup", *MAIN, ">", "~/seqgen_run.log", "2>&1",
                          "<", "/dev/null", "&"]


@pytest.mark.parametrize("args, message", [
    (["run", *TPU, "--config=c.py", "--workdir=/tmp/run"],
     "error: --workdir must be a gs:// path (shared by all workers and kept across preemptions), "
     "got '/tmp/run'"),
    (["frob", *TPU], "error: unknown command 'frob'; choose one of: create, setup, run, logs, "
                     "delete, up, babysit"),
    (["create", "--zone=z"], "error: --name is required"),
    (["create", *TPU, "--spto"], "error: unknown option '--spto' (see launch/tpu_vm.sh --help)"),
])
def test_tpu_bad_input_is_one_line(args, message):
  proc = _script("tpu_vm.sh", *args)
  assert proc.returncode == 2 and proc.stdout == ""
  assert proc.stderr.strip() == message


SLURM_ARGS = ["--nodes=2", "--gpus-per-node=8", "--partition=gpu", "--time=04:00:00",
              "--venv=/shared/venvs/seqgen", "--config=experiments/configs/shakespeare_char.py",
              "--workdir=/shared/runs/shakespeare", "--", "--config.train.batch_size=512"]


def test_slurm_submit_prints_sbatch_of_itself():
  (sbatch,) = _lines("slurm_gpu.sh", *SLURM_ARGS)  # the job gets the same flags, not --dry-run
  assert sbatch == ["sbatch", "--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=8",
                    "--exclusive", "--signal=TERM@120", "--job-name=seqgen",
                    f"--output={REPO}/slurm-%j.out", f"--chdir={REPO}", "--partition=gpu",
                    "--time=04:00:00", str(LAUNCH / "slurm_gpu.sh"), *SLURM_ARGS]


def test_slurm_job_exports_coordinator_and_all_gpus_then_sruns(tmp_path):
  # A stand-in for scontrol that expands exactly this allocation's node list.
  (tmp_path / "scontrol").write_text(
      '#!/bin/sh\n[ "$*" = "show hostnames gpu[017-018]" ] || exit 1\n'
      'echo gpu017\necho gpu018\necho gpu019\n')
  (tmp_path / "scontrol").chmod(0o755)
  env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "SLURM_JOB_ID": "123456",
         "SLURM_JOB_NODELIST": "gpu[017-018]", "SLURM_JOB_NUM_NODES": "2"}
  lines = _lines("slurm_gpu.sh", *SLURM_ARGS, env=env)
  port = 123456 % 4096 + 61440  # JAX's own choice for SLURM jobs: 62016
  assert lines == [
      ["source", "/shared/venvs/seqgen/bin/activate"],
      ["export", f"JAX_COORDINATOR_ADDRESS=gpu017:{port}"],
      ["export", "JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7"],
      ["srun", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "python", "-m",
       "experiments.main", "--config=experiments/configs/shakespeare_char.py",
       "--workdir=/shared/runs/shakespeare", "--distributed=on",
       "--config.train.batch_size=512"]]
  # One node: one process drives all its GPUs, no coordinator needed.
  (srun,) = _lines("slurm_gpu.sh", "--nodes=1", "--gpus-per-node=4", "--config=c.py",
                   "--workdir=/w", env={"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "1"})
  assert srun[-3:] == ["--config=c.py", "--workdir=/w", "--distributed=off"]
  proc = _script("slurm_gpu.sh", "--nodes=4", "--gpus-per-node=8", "--config=c.py",
                 "--workdir=/w", env={"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "2"})
  assert proc.returncode == 2
  assert proc.stderr.strip() == "error: the allocation has 2 nodes but --nodes=4"
