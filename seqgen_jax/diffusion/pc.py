"""Predictor-corrector sampling of a score SDE (Song et al. 2021, alg. 1-5), one lax.scan.

Each of the N steps on the grid t = linspace(T, eps, N) runs the corrector at t, then the
predictor from t to the next time:

* predictors: ``reverse_diffusion`` (the reverse of the SDE's own discretisation, eq. 46:
  x <- x - f_i + G_i^2 s + G_i z), ``euler_maruyama`` (x <- x + (f - g^2 s) dt + g sqrt(|dt|) z)
  or ``none``;
* correctors: ``langevin`` (x <- x + e s + sqrt(2 e) z with step e = 2 a (r |z| / |s|)^2, r the
  target signal-to-noise ratio ``snr`` and a = 1 - beta_i for VP, 1 for VE; alg. 4 and 5) or
  ``none``. As in score_sde the norms are averaged over the batch (so the step size, and with it
  a sample, depends on the rest of the batch): per-example ratios explode whenever a score is
  near zero, which in low dimension happens often.

With ``denoise`` (score_sde's noise removal) the noise-free mean of the last predictor step is
returned. ``t_start`` / ``x_start`` start the walk part-way (SDEdit); ``post_step(x, alpha,
sigma, key)`` runs after every step with the noise level reached (inpainting).

Axis key: B batch, H height, W width, C channels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqgen_jax.diffusion import process
from seqgen_jax.diffusion.sde import (
  VESDE,
  VPSDE,
  ScoreFn,
  check_sde_prediction,
  sampling_grid,
  score_fn_from_model,
)
from seqgen_jax.errors import ConfigError
from seqgen_jax.registry import Registry

# (sde, score_fn, x, t_B, t_next_B, key) -> (x, x_mean)
Predictor = Callable[..., tuple[jax.Array, jax.Array]]
PREDICTORS: Registry = Registry("predictor")
CORRECTORS: Registry = Registry("corrector")


@PREDICTORS.register("reverse_diffusion")
def reverse_diffusion(sde: VPSDE | VESDE, score_fn: ScoreFn, x: jax.Array, t_B: jax.Array,
                      t_next_B: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """x_mean = x - f_i + G_i^2 s(x, t); x = x_mean + G_i z (the discretisation's reverse)."""
  del t_next_B
  f, g_B = sde.discretize(x, t_B)
  x_mean = x - f + process.bcast(g_B**2, x) * score_fn(x, t_B)
  return x_mean + process.bcast(g_B, x) * jax.random.normal(key, x.shape), x_mean


@PREDICTORS.register("euler_maruyama")
def euler_maruyama(sde: VPSDE | VESDE, score_fn: ScoreFn, x: jax.Array, t_B: jax.Array,
                   t_next_B: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One Euler-Maruyama step of the reverse SDE dx = (f - g^2 s) dt + g dw, dt < 0."""
  f, g_B = sde.sde(x, t_B)
  dt_B = t_next_B - t_B
  x_mean = x + process.bcast(dt_B, x) * (f - process.bcast(g_B**2, x) * score_fn(x, t_B))
  noise = process.bcast(g_B * jnp.sqrt(-dt_B), x) * jax.random.normal(key, x.shape)
  return x_mean + noise, x_mean


@PREDICTORS.register("none")
def no_predictor(sde, score_fn, x, t_B, t_next_B, key):
  del sde, score_fn, t_B, t_next_B, key
  return x, x


@CORRECTORS.register("langevin")
def langevin(sde: VPSDE | VESDE, score_fn: ScoreFn, x: jax.Array, t_B: jax.Array,
             key: jax.Array, *, snr: float, n_steps: int) -> tuple[jax.Array, jax.Array]:
  """``n_steps`` Langevin steps at time t with step size set by the target ``snr``."""
  scale_B = sde.langevin_scale(t_B)

  def one(_, carry):
    x, _, key = carry
    key, k = jax.random.split(key)
    grad = score_fn(x, t_B)
    z = jax.random.normal(k, x.shape)
    norm = lambda a: jnp.mean(jnp.sqrt(jnp.sum(jnp.square(a).reshape(a.shape[0], -1), axis=-1)))
    step_B = 2.0 * scale_B * jnp.square(snr * norm(z) / norm(grad))
    x_mean = x + process.bcast(step_B, x) * grad
    return x_mean + process.bcast(jnp.sqrt(2.0 * step_B), x) * z, x_mean, key

  x, x_mean, _ = jax.lax.fori_loop(0, n_steps, one, (x, x, key))
  return x, x_mean


@CORRECTORS.register("none")
def no_corrector(sde, score_fn, x, t_B, key, *, snr, n_steps):
  del sde, score_fn, t_B, key, snr, n_steps
  return x, x


def pc_sample(model_fn: process.ModelFn, sde: VPSDE | VESDE, shape: tuple[int, ...],
              rng: jax.Array, *, prediction: str = "eps", cond: Any = None,
              predictor: str = "reverse_diffusion", corrector: str = "langevin",
              snr: float = 0.16, n_corrector_steps: int = 1, eps: float = 1e-3,
              denoise: bool = True, t_start: float | None = None,
              x_start: jax.Array | None = None,
              post_step: Callable | None = None) -> jax.Array:
  """Predictor-corrector sampling from the prior (or from ``x_start`` at ``t_start``)."""
  check_sde_prediction(prediction)
  pred_fn, corr_fn = PREDICTORS.get(predictor), CORRECTORS.get(corrector)
  if snr <= 0 or n_corrector_steps < 0:
    raise ConfigError(f"need snr > 0 and n_corrector_steps >= 0, got {snr}, {n_corrector_steps}")
  score_fn = score_fn_from_model(model_fn, sde, prediction, cond)
  grid = sampling_grid(sde, eps, t_start)
  t_next = np.append(grid[1:], 0.0)
  if t_start is not None and x_start is None:
    raise ConfigError("t_start needs x_start (a sample of the marginal at t_start)")
  rng, k0 = jax.random.split(rng)
  if x_start is not None and tuple(x_start.shape) != tuple(shape):
    raise ConfigError(f"x_start has shape {tuple(x_start.shape)}, expected {tuple(shape)}")
  x = sde.prior_sample(k0, shape) if x_start is None else x_start.astype(jnp.float32)
  b = shape[0]

  def body(carry, inp):
    x, _ = carry
    t, tn, key = inp
    k_c, k_p, k_h = jax.random.split(key, 3)
    t_B, tn_B = jnp.full((b,), t), jnp.full((b,), tn)
    x, _ = corr_fn(sde, score_fn, x, t_B, k_c, snr=snr, n_steps=n_corrector_steps)
    x, x_mean = pred_fn(sde, score_fn, x, t_B, tn_B, k_p)
    if post_step is not None:
      x = post_step(x, *sde.marginal(tn), k_h)
    return (x, x_mean), None

  keys = jax.random.split(rng, len(grid) + 1)
  (x, x_mean), _ = jax.lax.scan(
      body, (x, x), (jnp.asarray(grid, jnp.float32), jnp.asarray(t_next, jnp.float32), keys[1:]))
  out = x_mean if denoise else x
  if post_step is not None:
    out = post_step(out, jnp.float32(1.0), jnp.float32(0.0), keys[0])
  return out
