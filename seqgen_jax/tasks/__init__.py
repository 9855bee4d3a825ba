"""Tasks: model choice + loss + eval metrics + sampling. Importing this registers every task."""

from seqgen_jax.tasks import lm  # noqa: F401  (registers "lm")

# isort: split
from seqgen_jax.tasks import translate  # noqa: F401  (registers "translate")
