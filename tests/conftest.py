"""Test set-up: 8 fake CPU devices (set before JAX is imported) and shared fixtures."""

import os
import tempfile

# 8 fake CPU devices for the multi-device tests. Backend optimisation level 0 cuts XLA:CPU
# compile time (which dominates these small tests) by about half; every comparison in the suite
# runs both sides under the same flags. Subprocesses inherit both settings.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_backend_optimization_level=0").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for this test session, so the subprocess runs of the same
# config (resume tests, entrypoint tests) compile once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      tempfile.mkdtemp(prefix="seqgen_test_jax_cache_"))
# Prepared TFDS copies of the datasets go to one temporary directory per test session (shared by
# the xdist workers and subprocesses, which prepare each dataset once under a file lock), never
# to ~/tensorflow_datasets.
os.environ.setdefault("SEQGEN_PREPARED_DIR", tempfile.mkdtemp(prefix="seqgen_test_prepared_"))

import pathlib  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # test this checkout, whatever else is installed


def _shared_data_dir() -> pathlib.Path | None:
  env = os.environ.get("SEQGEN_DATA_DIR")
  if env:
    return pathlib.Path(env)
  for cand in (REPO.parent / "shared" / "data",):
    if cand.is_dir():
      return cand
  return None


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
  """The real datasets (../shared/data in CI); tests that need them skip without it."""
  d = _shared_data_dir()
  if d is None:
    if os.environ.get("CI"):
      pytest.fail("CI must have the shared datasets at ../shared/data or $SEQGEN_DATA_DIR")
    pytest.skip("no data directory: set $SEQGEN_DATA_DIR or provide ../shared/data")
  return d


@pytest.fixture(scope="session")
def prepared_dir() -> pathlib.Path:
  """Where this test session's prepared TFDS copies live ($SEQGEN_PREPARED_DIR)."""
  return pathlib.Path(os.environ["SEQGEN_PREPARED_DIR"])


def tiny_lm_config(**overrides):
  """A seconds-to-run GPT-on-copy config; ``overrides`` are dotted paths, e.g. train__seed=1."""
  from seqgen_jax.train.defaults import default_config

  c = default_config()
  c.task = "lm"
  c.data.name = "copy"
  c.data.length = 4
  c.data.delay = 4
  c.data.alphabet = 6
  c.model.name = "gpt"
  c.model.num_layers = 2
  c.model.num_heads = 2
  c.model.d_model = 64
  c.model.d_ff = 128
  c.model.dropout = 0.0
  c.optimizer.lr = 3e-3
  c.optimizer.warmup_steps = 2
  c.optimizer.weight_decay = 0.01
  c.train.num_steps = 20
  c.train.batch_size = 16
  c.train.log_every = 5
  c.train.eval_every = 10
  c.train.checkpoint_every = 10
  c.eval.num_batches = 2
  return apply_overrides(c, **overrides)


def apply_overrides(c, **overrides):
  """Sets dotted config paths spelt with ``__`` (``train__seed=1``) on ``c``; returns ``c``."""
  for key, value in overrides.items():
    node = c
    *path, leaf = key.split("__")
    for p in path:
      node = node[p]
    node[leaf] = value
  return c


def main_command(config: str, workdir, *overrides: str) -> list[str]:
  """The command line of ``python -m experiments.main`` for a config under experiments/configs."""
  import sys

  return [sys.executable, "-m", "experiments.main",
          f"--config={REPO / 'experiments' / 'configs' / config}", f"--workdir={workdir}",
          *overrides]


def read_jsonl(path) -> list[dict]:
  import json

  with open(path) as f:
    return [json.loads(line) for line in f]
