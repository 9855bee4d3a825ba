"""Efficiency reporting: FLOPs per step, achieved TFLOP/s and MFU, device memory, a memory budget.

* FLOPs come from XLA's HLO cost analysis of the train step's global (pre-partitioning) program:
  model FLOPs for the whole batch over all devices, without work that each device repeats
  (a replicated optimizer update) and without rematerialisation. XLA counts every op, including
  softmax, GELU, LayerNorm and the optimizer, so for a Transformer it sits a little above the
  analytic 6·N·tokens + attention count (1% at GPT-2 small shapes; tests/test_perf.py pins it).
  XLA counts a while loop's body once, so with gradient accumulation (a ``lax.scan`` over k
  micro-batches) the count is taken from the same step built with k=1: the same arithmetic.
  A ``shard_map`` step is lowered as the per-device program; loop.step_flops scales it.
  Any other loop in the step (a ``lax.scan`` over time steps in the recurrent models, over
  layers with ``scan_layers``) is also counted once: loop.step_flops then warns that the count
  is a lower bound; the showdown counts such models built unrolled.
* MFU = achieved FLOP/s / (devices x peak FLOP/s of one device), against the dense bf16 peak of
  the device kind (``peak_tflops``) (or ``train.peak_tflops`` when set). Unknown kinds
  (CPU, other GPUs) report TFLOP/s only and say "peak unknown".
* Memory: the per-device footprint of the step is known before anything is allocated: the state's
  real shard sizes plus XLA's memory analysis of the compiled step (its temporaries are the
  activations, gradients and gathered FSDP params). ``check_memory_budget`` turns a configured
  per-device budget into a one-line refusal. Peak memory during the run comes from
  ``Device.memory_stats()`` (GPU, TPU); CPU has none ("n/a").
"""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Any

import jax
import numpy as np
from absl import logging

from seqgen_jax.errors import ConfigError
from seqgen_jax.train.metrics import copy_tree

PyTree = Any
MiB = 2**20
GiB = 2**30

# Dense (no sparsity) bf16 peak TFLOP/s of one JAX device, by ``Device.device_kind``.
# One JAX device is one chip on TPU v4 / v5p (megacore) and v5e / v6e, one GPU on NVIDIA.
# Sources:
#   TPU v4   275  cloud.google.com/tpu/docs/v4        ("TPU v4")
#   TPU v5e  197  cloud.google.com/tpu/docs/v5e       ("TPU v5 lite")
#   TPU v5p  459  cloud.google.com/tpu/docs/v5p       ("TPU v5", "TPU v5p")
#   TPU v6e  918  cloud.google.com/tpu/docs/v6e       ("TPU v6 lite")
#   A100     312  NVIDIA A100 Tensor Core GPU datasheet (SXM4 and PCIe; 624 is with sparsity)
#   H100 SXM 989  NVIDIA H100 Tensor Core GPU datasheet ("NVIDIA H100 80GB HBM3"; 1979 sparse)
#   H100 PCIe 756, H100 NVL 835  same datasheet (1513 / 1671 with sparsity)
#   H200 SXM 989, H200 NVL 835   NVIDIA H200 Tensor Core GPU datasheet (1979 / 1671 sparse)
_TPU_PEAKS = {"tpu v4": 275.0, "tpu v5 lite": 197.0, "tpu v5e": 197.0, "tpu v5": 459.0,
              "tpu v5p": 459.0, "tpu v6 lite": 918.0, "tpu v6e": 918.0}
# NVIDIA names carry the form factor after the model ("NVIDIA H100 PCIe"); first match wins.
_GPU_PEAKS = (("h200", "nvl", 835.0), ("h200", "", 989.0),
              ("h100", "pcie", 756.0), ("h100", "nvl", 835.0), ("h100", "", 989.0),
              ("a100", "", 312.0))


def peak_tflops(device_kind: str) -> float | None:
  """Dense bf16 peak TFLOP/s of one device of this kind, or None when it is not in the table."""
  kind = device_kind.strip().lower()
  if kind in _TPU_PEAKS:
    return _TPU_PEAKS[kind]
  if kind.startswith("nvidia"):
    for model, form, peak in _GPU_PEAKS:
      if model in kind and form in kind:
        return peak
  return None


def _flops(cost: Any) -> float | None:
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
    cost = cost[0] if cost else None
  if not cost or cost.get("flops", -1.0) <= 0:
    return None
  return float(cost["flops"])


def lowered_flops(lowered: jax.stages.Lowered) -> float | None:
  """FLOPs of one call of the global program (XLA HLO cost analysis before partitioning)."""
  try:
    return _flops(lowered.cost_analysis())
  except Exception:  # noqa: BLE001  (a backend without cost analysis: report n/a)
    return None


def compiled_flops(compiled: jax.stages.Compiled, num_devices: int) -> float | None:
  """FLOPs of one call summed over devices (XLA cost analysis of the per-device program)."""
  try:
    flops = _flops(compiled.cost_analysis())
  except Exception:  # noqa: BLE001
    return None
  return None if flops is None else flops * num_devices


def peak_memory_bytes(devices: list[jax.Device]) -> int | None:
  """The largest ``peak_bytes_in_use`` over ``devices``, or None where the backend has none."""
  peaks = []
  for d in devices:
    try:
      stats = d.memory_stats()
    except Exception:  # noqa: BLE001
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(int(stats["peak_bytes_in_use"]))
  return max(peaks) if peaks else None


# --------------------------------------------------------------------------- memory estimate


def shard_bytes(tree: PyTree) -> int:
  """Bytes one device holds of ``tree`` (abstract leaves with shardings), from shard shapes."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    total += int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
  return total


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
  """Per-device bytes of one train step, before anything is allocated."""

  params: int
  opt_state: int
  ema_params: int
  batch: int
  temp: int  # XLA's temporaries: activations, gradients, gathered FSDP params

  @property
  def state(self) -> int:
    return self.params + self.opt_state + self.ema_params

  @property
  def total(self) -> int:
    return self.state + self.batch + self.temp

  def describe(self) -> str:
    mib = lambda b: f"{b / MiB:.1f}"
    return (f"{mib(self.total)} MiB per device (params {mib(self.params)} + optimizer "
            f"{mib(self.opt_state)} + EMA {mib(self.ema_params)} + batch {mib(self.batch)} + "
            f"XLA temporaries {mib(self.temp)})")


def estimate_memory(compiled: jax.stages.Compiled, abstract_state: PyTree,
                    abstract_batch: PyTree) -> MemoryEstimate:
  """Per-device memory of a train step: real shard sizes + XLA's temporaries for the step."""
  temp = 0
  try:
    analysis = compiled.memory_analysis()
    temp = int(getattr(analysis, "temp_size_in_bytes", 0) or 0)
  except Exception:  # noqa: BLE001  (backend without memory analysis: count the state only)
    pass
  ema = abstract_state.ema_params
  return MemoryEstimate(params=shard_bytes(abstract_state.params),
                        opt_state=shard_bytes(abstract_state.opt_state),
                        ema_params=shard_bytes(ema) if ema is not None else 0,
                        batch=shard_bytes(abstract_batch), temp=temp)


def check_memory_budget(estimate: MemoryEstimate, budget_gib: float, *,
                        fully_sharded_state: int | None = None, fsdp: int = 1,
                        num_devices: int = 1) -> None:
  """Raises a one-line ConfigError when the step needs more than ``budget_gib`` per device."""
  if not budget_gib or budget_gib <= 0 or estimate.total <= budget_gib * GiB:
    return
  hint = ""
  if fully_sharded_state is not None and fsdp < num_devices:
    hint = (f"; with mesh.fsdp={num_devices} the state would take "
            f"{fully_sharded_state / MiB:.1f} MiB instead of {estimate.state / MiB:.1f}")
  raise ConfigError(
      f"the train step needs {estimate.describe()} but train.device_memory_budget_gib="
      f"{budget_gib:g} ({budget_gib * GiB / MiB:.1f} MiB) with mesh.fsdp={fsdp}{hint}; shard "
      f"the state with a larger mesh.fsdp, or lower the batch / use train.grad_accum_steps")


# --------------------------------------------------------------------------- reporting


@dataclasses.dataclass
class PerfReporter:
  """Turns steps/s into TFLOP/s, MFU and peak memory for the progress line and metrics."""

  flops_per_step: float | None
  peak_tflops_per_device: float | None
  num_devices: int
  devices: list[jax.Device]

  def scalars(self, steps_per_s: float) -> dict[str, float]:
    """Metrics for metrics.jsonl / TensorBoard (only what is known)."""
    out = {}
    if self.flops_per_step is not None:
      out["tflops_per_s"] = self.flops_per_step * steps_per_s / 1e12
      if self.peak_tflops_per_device:
        out["mfu"] = out["tflops_per_s"] / (self.peak_tflops_per_device * self.num_devices)
    mem = peak_memory_bytes(self.devices)
    if mem is not None:
      out["peak_memory_gib"] = mem / GiB
    return out

  def line(self, scalars: dict[str, float]) -> str:
    """'1.23 TFLOP/s | MFU 41.2% | peak mem 3.21 GiB', with 'peak unknown' / 'n/a' gaps."""
    if "tflops_per_s" not in scalars:
      parts = ["TFLOP/s n/a"]
    else:
      parts = [f"{scalars['tflops_per_s']:.4g} TFLOP/s"]
      parts.append(f"MFU {100 * scalars['mfu']:.1f}%" if "mfu" in scalars else "peak unknown")
    mem = scalars.get("peak_memory_gib")
    parts.append(f"peak mem {mem:.3g} GiB" if mem is not None else "peak mem n/a")
    return " | ".join(parts)

  def summary(self, device_kind: str) -> str:
    """The one-off line logged before training."""
    flops = (f"{self.flops_per_step:.4g} FLOP per step (XLA cost analysis, whole batch "
             f"over {self.num_devices} device(s))" if self.flops_per_step else "FLOPs per step n/a")
    peak = (f"peak {self.peak_tflops_per_device:g} TFLOP/s per device ({device_kind})"
            if self.peak_tflops_per_device else f"peak unknown for device kind '{device_kind}'")
    return f"{flops}; {peak}"


# --------------------------------------------------------------------------- profiling


def check_profile_steps(profile_steps: Any, num_steps: int) -> tuple[int, int] | None:
  """``train.profile_steps`` as (first, last), or None when off; one-line ConfigError if bad."""
  if not profile_steps:
    return None
  try:
    first, last = (int(x) for x in profile_steps)
  except (TypeError, ValueError):
    first = last = None
  if first is None or not 1 <= first <= last:
    raise ConfigError(f"train.profile_steps must be () (off) or (first, last) with "
                      f"1 <= first <= last; got {profile_steps!r}")
  if first > num_steps:
    raise ConfigError(f"train.profile_steps starts at step {first}, after the last step "
                      f"{num_steps}")
  return first, min(last, num_steps)


class StepTrace:
  """A ``jax.profiler`` trace of the train steps first..last (1-based, both included).

  The trace goes to ``<logdir>/plugins/profile/<run>/`` (TensorBoard's profile plugin and
  Perfetto read it). For a remote logdir (gs://...) it is written locally, then copied.
  """

  def __init__(self, steps: tuple[int, int] | None, logdir: str):
    self.steps = steps
    self.logdir = logdir
    self._local = logdir if "://" not in logdir else tempfile.mkdtemp(prefix="seqgen_trace_")
    self.active = False
    self.done = steps is None

  def before_step(self, step: int) -> None:
    """Starts tracing if ``step`` (the step about to run) is in the window."""
    if not self.done and not self.active and self.steps[0] <= step <= self.steps[1]:
      jax.profiler.start_trace(self._local)
      self.active = True
      logging.info("profiling steps %d..%d into %s", step, self.steps[1], self.logdir)

  def after_step(self, step: int, state: PyTree) -> None:
    """Stops once ``step`` (the step just run) is the last of the window."""
    if self.active and step >= self.steps[1]:
      self.stop(state)

  def stop(self, state: PyTree = None) -> None:
    if not self.active:
      return
    jax.block_until_ready(state)  # the traced steps have really run
    jax.profiler.stop_trace()
    self.active, self.done = False, True
    if self._local != self.logdir:
      copy_tree(self._local, self.logdir)
    logging.info("profile written to %s", self.logdir)
