"""Diffusion library: schedules, forward process, samplers, SDEs, likelihood, guidance, editing.

Denoiser-agnostic: every sampler takes ``model_fn(x_BHWC, t_B, cond) -> prediction``. Importing
this package fills the registries (SCHEDULES, SAMPLERS, SDES, PREDICTORS, CORRECTORS,
LOSS_WEIGHTINGS). See docs/diffusion.md for the contents and the formulas' sources.
"""

from seqgen_jax.diffusion import (  # noqa: F401
    editing,
    guidance,
    likelihood,
    ode,
    pc,
    process,
    samplers,
    schedules,
    sde,
)
