"""Tasks: model choice + loss + eval metrics + sampling. Importing this registers every task."""

from seqgen_jax.tasks import (  # noqa: F401  (importing a module registers its task)
    lm,  # registers "lm"
    mdlm,  # registers "mdlm"
)
