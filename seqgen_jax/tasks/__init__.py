"""Tasks: model choice + loss + eval metrics + sampling. Importing this registers every task."""

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
