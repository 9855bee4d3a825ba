"""Tasks: model choice + loss + eval metrics + sampling. Importing this registers every task."""

from seqgen_jax.tasks import (  # noqa: F401  (importing a module registers its task)
    classify,  # registers "classify"
    forecast,  # registers "forecast"
    lm,  # registers "lm"
    mdlm,  # registers "mdlm"
    mlm,  # registers "mlm"
)
