"""Image editing with any sampler: inpainting by known-region replacement, and SDEdit.

* Inpainting (Song et al. 2021, app. I.2; Lugmayr et al. 2022, "RePaint"): after every sampler
  step the known pixels are overwritten by the known image noised to the level just reached,
  alpha x_known + sigma z, so the unknown pixels are generated in agreement with them. The last
  step reaches the clean level (alpha = 1, sigma = 0), where the known pixels are copied exactly.
  RePaint's resampling (``resample=U``: each step U times, re-noising in between) is an option of
  the DDPM and DDIM samplers.
* SDEdit (Meng et al. 2022): noise the input image to an intermediate time t0 = strength * T
  with q(x_t0 | x_0), then run the sampler from t0; strength 1 ignores the image, small
  strengths stay close to it. For a discrete sampler the last round(strength * n) of its n
  timesteps are run (diffusers' img2img convention).

Both work with every discrete sampler (ddpm, ddim, dpm_solver_2m) and every SDE sampler
(pc_sample, ode_sample), through the samplers' ``post_step`` / ``x_start`` arguments.

Axis key: B batch, H height, W width, C channels.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from seqgen_jax.diffusion import process
from seqgen_jax.diffusion.samplers import PostStep, resolve_walk
from seqgen_jax.diffusion.schedules import DiscreteSchedule
from seqgen_jax.diffusion.sde import sampling_grid
from seqgen_jax.errors import ConfigError


def replace_known(x_known_BHWC: jax.Array, mask: jax.Array) -> PostStep:
  """A ``post_step`` hook: where ``mask`` is true, x <- alpha x_known + sigma z."""
  mask = jnp.asarray(mask, bool)

  def hook(x: jax.Array, alpha: jax.Array, sigma: jax.Array, key: jax.Array) -> jax.Array:
    z = jax.random.normal(key, x.shape, jnp.float32)
    return jnp.where(mask, process.q_sample(x_known_BHWC, z, alpha, sigma), x)

  return hook


def inpaint(sample_fn: Callable, model_fn: process.ModelFn, schedule_or_sde: Any,
            x_known_BHWC: jax.Array, mask: jax.Array, rng: jax.Array,
            **sampler_kwargs: Any) -> jax.Array:
  """Fills the pixels where ``mask`` is false; the known ones (mask true) are kept exactly."""
  hook = replace_known(x_known_BHWC.astype(jnp.float32), mask)
  return sample_fn(model_fn, schedule_or_sde, x_known_BHWC.shape, rng, post_step=hook,
                   **sampler_kwargs)


def sdedit(sample_fn: Callable, model_fn: process.ModelFn, schedule_or_sde: Any,
           x_image_BHWC: jax.Array, rng: jax.Array, *, strength: float,
           **sampler_kwargs: Any) -> jax.Array:
  """Image-to-image: noise ``x_image`` to t0 = strength * T, then sample from there."""
  if not 0.0 < strength <= 1.0:
    raise ConfigError(f"strength must be in (0, 1], got {strength}")
  x0 = x_image_BHWC.astype(jnp.float32)
  k_noise, k_sample = jax.random.split(rng)
  z = jax.random.normal(k_noise, x0.shape, jnp.float32)
  if isinstance(schedule_or_sde, DiscreteSchedule):
    schedule = schedule_or_sde
    params = inspect.signature(sample_fn).parameters
    default = lambda name: params[name].default if name in params else None
    # A sampler with prev_timesteps (DDIM) steps to diffusers' t - T // n: keep that rule on
    # the tail of the sequence too.
    stride_rule = "prev_timesteps" in params
    ts, t_prev = resolve_walk(schedule, sampler_kwargs.pop("num_steps", default("num_steps")),
                              sampler_kwargs.pop("timesteps", None),
                              sampler_kwargs.pop("spacing", default("spacing") or "leading"),
                              sampler_kwargs.pop("steps_offset", 0),
                              sampler_kwargs.pop("prev_timesteps", None), stride_rule=stride_rule)
    keep = max(1, round(strength * len(ts)))
    ts, t_prev = ts[len(ts) - keep:], t_prev[len(ts) - keep:]
    if stride_rule:
      sampler_kwargs["prev_timesteps"] = t_prev
    x_start = process.q_sample(x0, z, *schedule.alpha_sigma(ts[0]))
    return sample_fn(model_fn, schedule, x0.shape, k_sample, timesteps=ts, x_start=x_start,
                     **sampler_kwargs)
  sde = schedule_or_sde
  # Snap t0 to the predictor-corrector grid so the start level is exactly one of its times.
  t0 = float(sampling_grid(sde, sampler_kwargs.get("eps", 1e-3), strength * sde.T)[0])
  x_start = process.q_sample(x0, z, *sde.marginal(jnp.float32(t0)))
  return sample_fn(model_fn, sde, x0.shape, k_sample, t_start=t0, x_start=x_start,
                   **sampler_kwargs)
