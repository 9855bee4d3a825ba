"""Train and evaluate any task / model from a config file.

  python -m experiments.main --config=experiments/configs/copy.py:runlocal \
      --workdir=/tmp/seqgen/copy_gpt

Several processes (one per host, or several on one machine for testing):

  python -m experiments.main ... --coordinator_address=localhost:12345 --num_processes=2 \
      --process_id=0   # and --process_id=1 in a second process

On SLURM, Open MPI and Cloud TPU the three are detected (see launch/).

Config fields can be overridden on the command line (``--config.train.num_steps=100``). Bad
input (an unknown flag, config file, ``:arg`` or field, a value of the wrong type, an unknown name,
a batch that does not split over the devices, missing data) ends the run with a one-line error and
exit status 2. The console shows the run summary, progress, eval and sample lines; libraries' INFO
logs (orbax, JAX backends) appear with ``--verbosity=1``.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally with ':arg'.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "Call jax.distributed.initialize(): 'auto' when launched as several processes.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0 for a hand-made multi-process launch (with --num_processes and "
    "--process_id); unset: detected from SLURM / Open MPI / Cloud TPU / JAX_COORDINATOR_ADDRESS.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a hand-made launch.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's rank in a hand-made launch.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Imported here so that jax.distributed.initialize() runs before JAX touches a device.
  from seqgen_jax.errors import SeqgenError
  from seqgen_jax.tasks import build_task
  from seqgen_jax.train import loop, sharding

  try:
    sharding.maybe_initialize_distributed(
        _DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
    import jax
    logging.info("JAX %s on %s: %d devices, process %d of %d", jax.__version__,
                 jax.default_backend(), jax.device_count(), jax.process_index(),
                 jax.process_count())
    loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value, build_task)
  except SeqgenError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  cli.run(main)
