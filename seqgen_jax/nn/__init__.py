"""Pure model definitions (flax.linen). Importing this package registers every model."""

from seqgen_jax.nn import transformer  # noqa: F401  (registers "gpt")
