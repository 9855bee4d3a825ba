"""Train and evaluate any task / model from a config file.

  python -m experiments.main --config=experiments/configs/copy_gpt.py:runlocal \
      --workdir=/tmp/seqgen/copy_gpt

Config fields can be overridden on the command line (``--config.train.num_steps=100``). Bad
input (an unknown name, a batch that does not split over the devices, missing data) ends the run
with a one-line error and exit status 2.
"""

from __future__ import annotations

import logging as pylogging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally with ':arg'.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "Call jax.distributed.initialize(): 'auto' when launched as several processes.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries:
  """Drops INFO lines from orbax (dozens per checkpoint); its warnings and errors still show."""

  def filter(self, record) -> bool:
    return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # Imported here so that jax.distributed.initialize() runs before JAX touches a device.
  from seqgen_jax.errors import SeqgenError
  from seqgen_jax.train import loop, sharding

  try:
    sharding.maybe_initialize_distributed(_DISTRIBUTED.value)
    import jax
    logging.info("JAX %s on %s: %d devices, process %d of %d", jax.__version__,
                 jax.default_backend(), jax.device_count(), jax.process_index(),
                 jax.process_count())
    loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except SeqgenError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
