"""Pure model definitions (flax.linen). Importing this package registers every model."""

import seqgen_jax.nn.dit  # noqa: F401  (registers the denoiser "dit")
import seqgen_jax.nn.unet  # noqa: F401  (registers the denoiser "unet")
from seqgen_jax.nn import transformer  # noqa: F401  (registers "gpt")
