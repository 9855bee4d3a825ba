"""Tasks: model choice + loss + eval metrics + sampling, each a ``seqgen_jax.train.task.Task``.

Importing this package registers every task in ``seqgen_jax.registry.TASKS``; ``build_task``
is what an entrypoint hands to ``seqgen_jax.train.loop.train_and_evaluate``.
"""

import ml_collections

from seqgen_jax.registry import TASKS
from seqgen_jax.tasks import (  # noqa: F401  (importing a module registers its task)
    autoencoder,  # registers "autoencoder"
    classify,  # registers "classify"
    diffusion,  # registers "diffusion"
    forecast,  # registers "forecast"
    image_classify,  # registers "image_classify"
    lm,  # registers "lm"
    mdlm,  # registers "mdlm"
    mlm,  # registers "mlm"
    translate,  # registers "translate"
)
from seqgen_jax.train.task import Task


def build_task(config: ml_collections.ConfigDict) -> Task:
  """The task ``config.task`` names, built from ``config`` (validates it and finds the data)."""
  return TASKS.get(config.task)(config)
