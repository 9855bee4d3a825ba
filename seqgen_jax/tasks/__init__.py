"""Tasks: model choice + loss + eval metrics + sampling. Importing this registers every task."""

import seqgen_jax.tasks.image_classify  # noqa: F401  (registers "image_classify")
from seqgen_jax.tasks import lm  # noqa: F401  (registers "lm")
