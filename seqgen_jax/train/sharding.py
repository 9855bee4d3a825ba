"""Device mesh, partition specs for batches and state, and multi-host set-up.

The mesh has two axes: ``data`` (pure data parallelism) and ``fsdp`` (data parallelism that also
shards parameters and optimizer state). A batch's leading axis is split over both; a parameter is
split over ``fsdp`` along its largest divisible dimension, or replicated when it is small.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from seqgen_jax.errors import ConfigError

PyTree = Any
DATA = "data"
FSDP = "fsdp"
BATCH_AXES = (DATA, FSDP)
# Parameters with fewer elements than this stay replicated under FSDP: sharding a bias or a
# LayerNorm scale saves nothing and costs an all-gather.
FSDP_MIN_SIZE = 2**12

# Environment variables that mean "this process is one of several" (explicit coordinator, SLURM,
# Open MPI, multi-worker Cloud TPU). jax.distributed.initialize() auto-detects each of them.
_MULTIPROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE",
                     "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def _launched_as_several_processes() -> bool:
  for var in _MULTIPROCESS_ENV:
    val = os.environ.get(var)
    if not val:
      continue
    if var == "TPU_WORKER_HOSTNAMES":
      if "," in val:
        return True
    elif var in ("SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE"):
      if int(val) > 1:
        return True
    else:
      return True
  return False


def maybe_initialize_distributed(mode: str = "auto", *, coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> None:
  """Calls ``jax.distributed.initialize()`` when launched as several processes.

  Args:
    mode: "auto" (initialise when the environment or the arguments show a multi-process launch),
      "on" (always) or "off" (never). Must run before anything touches a JAX device.
    coordinator_address: "host:port" of process 0's coordinator; None: from the environment
      (``JAX_COORDINATOR_ADDRESS``, SLURM, Open MPI, Cloud TPU metadata).
    num_processes, process_id: this launch's size and this process's rank; None: detected from
      the environment as above. Give all three to launch by hand (e.g. several processes on one
      machine, each with its own CPU devices).

  With several processes on CPU, cross-process collectives go through gloo (JAX's default CPU
  collectives since 0.5; set here explicitly in case an older default is in force).
  """
  if mode not in ("auto", "on", "off"):
    raise ConfigError(f"unknown distributed mode '{mode}'; choose one of: auto, on, off")
  explicit = {"coordinator_address": coordinator_address, "num_processes": num_processes,
              "process_id": process_id}
  given = [k for k, v in explicit.items() if v is not None]
  if given and mode == "off":
    raise ConfigError(f"--{given[0]} was given but --distributed=off")
  if given and len(given) != 3:
    missing = ", ".join(f"--{k}" for k, v in explicit.items() if v is None)
    raise ConfigError(f"a hand-made multi-process launch needs --coordinator_address, "
                      f"--num_processes and --process_id together; missing {missing}")
  if num_processes is not None and not 0 <= process_id < num_processes:
    raise ConfigError(f"--process_id={process_id} must be in [0, --num_processes="
                      f"{num_processes})")
  if mode == "on" or (mode == "auto" and (given or _launched_as_several_processes())):
    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") is None:
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**explicit)
    logging.info("jax.distributed initialised: process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())


def make_mesh(fsdp: int = 1, devices: list[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp) mesh over all devices (or ``devices``); ``fsdp`` must divide their count."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if fsdp < 1 or n % fsdp:
    raise ConfigError(
        f"mesh.fsdp={fsdp} must be a positive divisor of the device count {n}")
  return jax.make_mesh((n // fsdp, fsdp), BATCH_AXES, axis_types=(AxisType.Auto,) * 2,
                       devices=devices)


def num_batch_shards(mesh: Mesh) -> int:
  """How many ways a batch's leading axis is split (data × fsdp)."""
  return mesh.shape[DATA] * mesh.shape[FSDP]


def check_batch_size(global_batch: int, mesh: Mesh, grad_accum_steps: int = 1) -> None:
  """Raises a one-line ConfigError unless the batch splits evenly over devices and micro-batches."""
  n = num_batch_shards(mesh)
  if global_batch % n:
    raise ConfigError(
        f"global batch size {global_batch} is not divisible by the {n} data-parallel devices "
        f"(mesh data={mesh.shape[DATA]} x fsdp={mesh.shape[FSDP]}); use a multiple of {n}")
  if grad_accum_steps < 1 or (global_batch // n) % grad_accum_steps:
    raise ConfigError(
        f"per-device batch {global_batch // n} (global {global_batch} over {n} devices) is not "
        f"divisible by grad_accum_steps={grad_accum_steps}")


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over data and fsdp; other axes replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int) -> P:
  """Shards the largest dimension divisible by ``fsdp_size``; small or indivisible: replicated."""
  if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
    return P()
  for dim in np.argsort(shape)[::-1]:
    if shape[dim] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[dim] = FSDP
      return P(*spec)
  return P()


def state_shardings(abstract_state: PyTree, mesh: Mesh) -> PyTree:
  """NamedShardings for every leaf of a (possibly abstract) state pytree."""
  fsdp_size = mesh.shape[FSDP]
  return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(tuple(x.shape), fsdp_size)),
                      abstract_state)


def process_batch_rows(mesh: Mesh, global_batch: int) -> tuple[int, int]:
  """The contiguous rows [start, stop) of the global batch that this process must load.

  Read off the batch sharding itself, so that host-local loading and
  ``jax.make_array_from_process_local_data`` agree for any device order.
  """
  sharding = batch_sharding(mesh)
  index_map = sharding.addressable_devices_indices_map((global_batch,))
  rows = sorted({(idx[0].start or 0, idx[0].stop or global_batch) for idx in index_map.values()})
  start, stop = rows[0][0], rows[-1][1]
  covered = sum(b - a for a, b in rows)
  if covered != stop - start:
    raise ValueError(f"this process's batch rows are not contiguous: {rows}")
  return start, stop


def make_global_batch(local_batch: PyTree, mesh: Mesh) -> PyTree:
  """Assembles each process's rows into global arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      local_batch)
