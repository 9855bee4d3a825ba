"""Shared pieces of the benchmarks: timing (medians, compilation excluded), the measured matmul
peak that MFU is quoted against, the PyTorch peer's device, and the one JSON record every
benchmark writes.

A record (``bench_record``) holds what a number needs to be read later: the benchmark's name,
its shapes, its results, the peer it was timed against, the device (platform, kind, count), the
versions of the libraries on both sides, the host CPU, the UTC date, the git commit and the
command line. ``experiments/bench/tables.py`` renders a folder of records as markdown tables.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from seqgen_jax.fileio import atomic_path

SCHEMA = "seqgen_jax.bench/1"
# Distributions whose versions every record carries (where installed), plus any jax CUDA plugin
# and cuDNN wheel: the attention and LSTM numbers depend on them.
PACKAGES = ("jax", "jaxlib", "flax", "optax", "torch", "transformers", "diffusers")
_EXTRA_PREFIXES = ("jax-cuda", "nvidia-cudnn")
REPO = pathlib.Path(__file__).resolve().parents[2]


def median_seconds(fn: Callable[[], object], *, warmup: int, iters: int,
                   sync: Callable[[object], object] = jax.block_until_ready) -> float:
  """Median wall time of ``fn()`` over ``iters`` calls after ``warmup`` untimed calls (which
  absorb compilation). ``sync`` waits for the result (JAX arrays by default)."""
  for _ in range(warmup):
    sync(fn())
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    sync(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def measured_matmul_peak(dtype: jnp.dtype, sizes: tuple[int, ...], iters: int = 5
                         ) -> tuple[float, int]:
  """The best median FLOP/s of square matmuls (2 n^3 FLOPs) over ``sizes`` on the default
  device, and the size that achieved it."""
  best, best_n = 0.0, sizes[0]
  mm = jax.jit(lambda a, b: a @ b)
  for n in sizes:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32).astype(dtype)
    t = median_seconds(lambda a=a, b=b: mm(a, b), warmup=2, iters=iters)
    if 2 * n**3 / t > best:
      best, best_n = 2 * n**3 / t, n
  return best, best_n


def device_name() -> str:
  """``platform:kind xcount`` of the default JAX devices, for one-line printouts."""
  d = jax.devices()[0]
  return f"{d.platform}:{getattr(d, 'device_kind', '?')} x{jax.device_count()}"


class Deadline:
  """A soft time budget: loops over benchmark points ask ``expired()`` before starting the next
  point (a started compilation or timing cannot be interrupted). ``None`` seconds: no limit."""

  def __init__(self, seconds: float | None):
    self.seconds = seconds
    self.start = time.perf_counter()

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def expired(self) -> bool:
    return self.seconds is not None and self.elapsed() >= self.seconds


# ------------------------------------------------------------------------------ PyTorch peers


def torch_device() -> str:
  """Where a PyTorch peer runs: "cuda" when this torch build sees a GPU, else "cpu"."""
  import torch

  return "cuda" if torch.cuda.is_available() else "cpu"


def torch_sync(device: str) -> None:
  """Waits for queued PyTorch work on ``device`` (CUDA launches are asynchronous)."""
  if device == "cuda":
    import torch

    torch.cuda.synchronize()


def release_torch_memory() -> None:
  """Hands PyTorch's cached GPU blocks back, so that the next benchmark (often JAX, in the same
  process) finds the memory free."""
  if "torch" in sys.modules:
    import torch

    if torch.cuda.is_available():
      torch.cuda.empty_cache()


# ------------------------------------------------------------------------------ the record


def versions() -> dict[str, str]:
  """Installed versions of the libraries on both sides of every benchmark (absent: not
  installed), plus the CUDA / cuDNN that torch was built with once torch is imported."""
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  for dist in importlib.metadata.distributions():
    name = (dist.metadata["Name"] or "").lower()
    if name.startswith(_EXTRA_PREFIXES):
      out[name] = dist.version
  torch = sys.modules.get("torch")
  if torch is not None and getattr(torch.version, "cuda", None):
    out["torch_cuda"] = torch.version.cuda
    out["torch_cudnn"] = str(torch.backends.cudnn.version())
  return dict(sorted(out.items()))


def device_info() -> dict[str, Any]:
  """The default JAX backend's platform, device kind and device count."""
  d = jax.devices()[0]
  out = {"platform": d.platform, "kind": getattr(d, "device_kind", "?"),
         "count": jax.device_count(), "local_count": jax.local_device_count()}
  cc = getattr(d, "compute_capability", None)
  if cc:
    out["compute_capability"] = str(cc)
  return out


def host_info() -> dict[str, Any]:
  """The host CPU model and core count (CPU numbers, and the peers' threads, depend on it)."""
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.lower().startswith("model name"):
          model = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  return {"cpu": model, "cores": os.cpu_count(), "system": platform.system()}


def git_commit(repo: pathlib.Path = REPO) -> str | None:
  """HEAD of the checkout the benchmark ran from, with "+dirty" for uncommitted tracked
  changes; None outside a git checkout."""
  try:
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain",
                            "--untracked-files=no"], capture_output=True, text=True,
                           timeout=10, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return head + ("+dirty" if dirty else "")


def command_line(argv: list[str] | None = None) -> str:
  """The command that ran this process, as ``python -m module args`` where it was a module."""
  argv = list(sys.argv if argv is None else argv)
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  if spec is not None and spec.name and not spec.name.endswith("__main__"):
    head = ["python", "-m", spec.name]
  else:
    head = ["python", argv[0] if argv else "?"]
  return shlex.join(head + argv[1:])


def bench_record(name: str, *, shapes: dict, results: dict, peer: str | None,
                 notes: str = "", command: str | None = None) -> dict:
  """One benchmark's result with what it needs to be read later: device, versions, host,
  date (UTC), git commit and command line. ``peer``: what the numbers are compared against
  (None: no peer)."""
  return {
      "schema": SCHEMA, "name": name,
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": command if command is not None else command_line(),
      "git_commit": git_commit(), "device": device_info(), "host": host_info(),
      "versions": versions(), "shapes": shapes, "peer": peer, "results": results,
      "notes": notes,
  }


def jsonable(x: Any) -> Any:
  """``x`` with NumPy / JAX scalars as Python numbers, tuples as lists and non-finite floats
  as None (strict JSON has no NaN; a missing number carries its reason beside it)."""
  if isinstance(x, dict):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, (bool, str)) or x is None:
    return x
  if hasattr(x, "item") and getattr(x, "shape", None) == ():
    x = x.item()
  if isinstance(x, float):
    return x if math.isfinite(x) else None
  if isinstance(x, int):
    return x
  return str(x)


def write_json(path: str | os.PathLike, record: dict) -> None:
  """Writes ``record`` as indented JSON, atomically (a temporary file renamed onto ``path``),
  creating the folder."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with atomic_path(path) as tmp, open(tmp, "w") as f:
    json.dump(jsonable(record), f, indent=1, allow_nan=False)
    f.write("\n")


def out_path(out: str, name: str) -> str | None:
  """Where ``--out`` puts a benchmark's JSON: ``out`` itself when it ends in .json, else
  ``out/<name>.json``; None when ``out`` is empty."""
  if not out:
    return None
  return out if out.endswith(".json") else os.path.join(out, f"{name}.json")
