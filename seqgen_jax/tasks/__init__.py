"""Tasks: model choice + loss + eval metrics + sampling. Importing this registers every task."""

# ruff: noqa: I001  (one import line per task family, appended, so that merges stay trivial)
import seqgen_jax.tasks.image_classify  # noqa: F401  (registers "image_classify")
from seqgen_jax.tasks import lm  # noqa: F401  (registers "lm")
from seqgen_jax.tasks import autoencoder, diffusion  # noqa: F401  (registers their tasks)
