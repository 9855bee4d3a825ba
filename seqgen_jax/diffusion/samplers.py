"""Discrete-time samplers: ancestral DDPM, DDIM and DPM-Solver++(2M), each one compiled loop.

Every sampler starts from x_T ~ N(0, I) (or ``x_start``), walks a descending sequence of training
timesteps t_0 > t_1 > .. > t_{n-1} and finishes with a step to the clean data (written t = -1,
abar = 1). The whole walk is one ``lax.scan``; nothing loops over steps in Python, so a jitted
sampler compiles once. Any network plugs in as ``model_fn(x_BHWC, t_B, cond) -> prediction`` with
``prediction`` in eps | x0 | v (t_B holds integer timesteps).

Update rules (abar_s at the current step s, abar_t at the next one, beta = 1 - abar_s / abar_t):

* DDPM (Ho et al. 2020, eq. 7; strided as in Nichol & Dhariwal 2021 when the sequence skips
  steps): x_t = sqrt(abar_t) beta / (1 - abar_s) x0 + sqrt(1 - beta) (1 - abar_t) / (1 - abar_s)
  x_s + std z, with variance beta~ = (1 - abar_t) / (1 - abar_s) beta (``fixed_small``, the
  posterior variance) or beta (``fixed_large``). The last step adds no noise (Ho et al., Alg. 2).
* DDIM (Song et al. 2021, eq. 12): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t - std^2) eps + std z,
  std = eta sqrt((1 - abar_t) / (1 - abar_s) beta); eta = 0 is deterministic, eta = 1 is DDPM.
* DPM-Solver++(2M) (Lu et al. 2022, alg. 2): multistep second order in lambda = log(alpha /
  sigma) on the data prediction; first order (= DDIM) on the first step and on the last one
  to sigma = 0, as in diffusers' ``DPMSolverMultistepScheduler``.

``clip_x0=r`` clips the predicted x0 to [-r, r] before the update (Ho et al. clip pixels to
[-1, 1]). DDIM's direction term uses the model's eps by default, as diffusers'
``use_clipped_model_output=False``; ``use_clipped_model_output=True`` re-derives eps from the
clipped x0 (as guided-diffusion and GLIDE do). Samplers take an optional
``post_step(x, alpha, sigma, key) -> x`` hook, called after every step with the noise level just
reached; inpainting (seqgen_jax.diffusion.editing) uses it. DDPM and DDIM also take
``resample=U`` for RePaint's resampling (Lugmayr et al. 2022): each step is repeated U times,
re-noising x_t -> x_s in between.

Timesteps: ``num_steps`` with ``spacing`` (leading | trailing | linspace) and ``steps_offset``
(leading only) give diffusers' sequences (``schedules.make_timesteps``), or ``timesteps`` is an
explicit descending sequence. The step from t goes to the *previous timestep*: for DDIM with
``num_steps``, diffusers' DDIMScheduler rule t - T // num_steps (the clean data once that is
negative), which differs from the next entry of a trailing or linspace sequence; for DDPM, and
for any explicit ``timesteps``, the next entry of the sequence (diffusers' DDPMScheduler rule);
DDIM also takes ``prev_timesteps``, an explicit previous timestep per step (-1: the clean data).

Randomness (API, so an external loop can be driven with the same numbers): from ``rng`` a
sampler takes ``rng, k0 = split(rng)``, draws x_T = normal(k0, shape) (unless ``x_start``), then
``keys = split(rng, num_steps)``; step i's noise is normal(split(keys[i])[0], shape) and
split(keys[i])[1] is the key handed to ``post_step``. ``sampler_noise(rng, shape, n)`` returns
exactly these x_T and noises. DDPM and DDIM also take ``noise``, an explicit [n, *shape] array
of per-step noises, used instead of the drawn ones.

Axis key: B batch, H height, W width, C channels.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqgen_jax.diffusion import process
from seqgen_jax.diffusion.schedules import DiscreteSchedule, check_timesteps, make_timesteps
from seqgen_jax.errors import ConfigError
from seqgen_jax.registry import Registry

PostStep = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
VARIANCES = ("fixed_small", "fixed_large")


def _clip(x0: jax.Array, clip_x0: float | None) -> jax.Array:
  return x0 if clip_x0 is None else jnp.clip(x0, -clip_x0, clip_x0)


def ddpm_step(pred: jax.Array, x_t: jax.Array, t: jax.Array, t_prev: jax.Array,
              noise: jax.Array, schedule: DiscreteSchedule, *, prediction: str = "eps",
              variance: str = "fixed_small", clip_x0: float | None = None
              ) -> tuple[jax.Array, jax.Array]:
  """One ancestral step t -> t_prev (t_prev = -1: the clean data); returns (x_prev, x0_hat)."""
  if variance not in VARIANCES:
    raise ConfigError(f"unknown DDPM variance '{variance}'; choose one of: {', '.join(VARIANCES)}")
  abar_p = schedule.alpha_bar(t_prev)
  alpha, sigma = schedule.alpha_sigma(t)
  omab_t, omab_p = schedule.one_minus_alpha_bar(t), schedule.one_minus_alpha_bar(t_prev)
  x0 = _clip(process.to_x0(pred, prediction, x_t, alpha, sigma), clip_x0)
  beta = schedule.step_beta(t, t_prev)
  mean = (jnp.sqrt(abar_p) * beta / omab_t * x0
          + jnp.sqrt(1 - beta) * omab_p / omab_t * x_t)
  if variance == "fixed_small":
    var = jnp.maximum(omab_p / omab_t * beta, 1e-20)
  else:
    var = beta
  std = jnp.where(t_prev >= 0, jnp.sqrt(var), 0.0)
  return mean + std * noise, x0


def ddim_step(pred: jax.Array, x_t: jax.Array, t: jax.Array, t_prev: jax.Array,
              noise: jax.Array, schedule: DiscreteSchedule, *, prediction: str = "eps",
              eta: float = 0.0, clip_x0: float | None = None,
              use_clipped_model_output: bool = False) -> tuple[jax.Array, jax.Array]:
  """One DDIM step t -> t_prev (t_prev = -1: the clean data); returns (x_prev, x0_hat).

  ``use_clipped_model_output``: with ``clip_x0``, derive eps from the clipped x0 (diffusers'
  option of the same name, default False there too).
  """
  abar_p, omab_p = schedule.alpha_bar(t_prev), schedule.one_minus_alpha_bar(t_prev)
  alpha, sigma = schedule.alpha_sigma(t)
  x0 = process.to_x0(pred, prediction, x_t, alpha, sigma)
  eps = process.to_eps(pred, prediction, x_t, alpha, sigma)
  if clip_x0 is not None:
    x0 = _clip(x0, clip_x0)
    if use_clipped_model_output:
      eps = (x_t - alpha * x0) / sigma
  std = eta * jnp.sqrt(omab_p / sigma**2 * schedule.step_beta(t, t_prev))
  # max(., 0): 1 - abar_p - std^2 is 0 at eta = 1 up to rounding.
  direction = jnp.sqrt(jnp.maximum(omab_p - std**2, 0.0)) * eps
  return jnp.sqrt(abar_p) * x0 + direction + std * noise, x0


def resolve_timesteps(schedule: DiscreteSchedule, num_steps: int | None,
                      timesteps: Any, spacing: str, steps_offset: int = 0) -> np.ndarray:
  """Explicit ``timesteps``, else ``num_steps`` with ``spacing``, else all T steps."""
  n_train = schedule.num_timesteps
  if timesteps is not None:
    return check_timesteps(np.asarray(timesteps), n_train)
  if num_steps is None:
    return np.arange(n_train, dtype=np.int32)[::-1]
  return make_timesteps(n_train, num_steps, spacing, steps_offset)


def resolve_walk(schedule: DiscreteSchedule, num_steps: int | None, timesteps: Any,
                 spacing: str, steps_offset: int = 0, prev_timesteps: Any = None,
                 stride_rule: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """(timesteps, previous timestep of each): see the module docstring for the rules.

  ``stride_rule``: diffusers' DDIM rule t - T // num_steps when the sequence comes from
  ``num_steps``; otherwise (and for explicit ``timesteps``) the next entry.
  """
  ts = resolve_timesteps(schedule, num_steps, timesteps, spacing, steps_offset)
  if prev_timesteps is not None:
    return ts, check_previous(ts, prev_timesteps)
  if stride_rule and timesteps is None and num_steps is not None:
    return ts, previous_timesteps(ts, schedule.num_timesteps // num_steps)
  return ts, previous_timesteps(ts)


def check_previous(ts: np.ndarray, prev_timesteps: Any) -> np.ndarray:
  """Validates explicit previous timesteps: one per step, each in [-1, t)."""
  tp = np.asarray(prev_timesteps)
  if tp.shape != ts.shape or np.any(tp != np.round(tp)) or np.any(tp < -1) or np.any(tp >= ts):
    raise ConfigError(f"prev_timesteps must hold one integer in [-1, t) per timestep "
                      f"({len(ts)} of them)")
  return tp.astype(np.int32)


def previous_timesteps(ts: np.ndarray, stride: int | None = None) -> np.ndarray:
  """The step targets of ``ts``: the next entry (-1 after the last), or t - stride (-1 where
  that is negative)."""
  if stride is None:
    return np.append(ts[1:], -1).astype(np.int32)
  return np.where(ts - stride >= 0, ts - stride, -1).astype(np.int32)


def sampler_noise(rng: jax.Array, shape: tuple[int, ...], num_steps: int
                  ) -> tuple[jax.Array, jax.Array]:
  """(x_T, noise [num_steps, *shape]): what DDPM / DDIM draw from ``rng`` (module docstring)."""
  x_T, rng = _initial(shape, rng, None)
  return x_T, jax.vmap(lambda k: step_noise(k, shape))(jax.random.split(rng, num_steps))


def step_noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """A step's noise from its key (the other half of split(key) goes to ``post_step``)."""
  return jax.random.normal(jax.random.split(key)[0], shape, jnp.float32)


def _initial(shape: tuple[int, ...], rng: jax.Array, x_start: jax.Array | None
             ) -> tuple[jax.Array, jax.Array]:
  rng, k0 = jax.random.split(rng)
  if x_start is None:
    return jax.random.normal(k0, shape, jnp.float32), rng
  if tuple(x_start.shape) != tuple(shape):
    raise ConfigError(f"x_start has shape {tuple(x_start.shape)}, expected {tuple(shape)}")
  return x_start.astype(jnp.float32), rng


def _check_noise(noise: jax.Array | None, n: int, shape: tuple[int, ...], resample: int) -> None:
  if noise is None:
    return
  if tuple(noise.shape) != (n, *shape):
    raise ConfigError(f"noise has shape {tuple(noise.shape)}, expected {(n, *shape)} "
                      f"(one array per step)")
  if resample > 1:
    raise ConfigError("explicit noise and resample > 1 cannot be combined")


def _scan_single_steps(step: Callable, model_fn: process.ModelFn, schedule: DiscreteSchedule,
                       x: jax.Array, ts: np.ndarray, t_prev: np.ndarray, rng: jax.Array,
                       cond: Any, post_step: PostStep | None, resample: int,
                       draw_noise: bool = True, noise: jax.Array | None = None) -> jax.Array:
  """Runs a stateless step rule over ``ts`` -> ``t_prev`` under one lax.scan (with RePaint
  resampling).

  ``draw_noise=False`` (deterministic DDIM) hands the step zeros instead of drawing noise it
  would multiply by 0; ``noise`` ([n, *shape]) replaces the drawn noise.
  """
  if resample < 1:
    raise ConfigError(f"resample must be >= 1, got {resample}")
  _check_noise(noise, len(ts), tuple(x.shape), resample)
  b = x.shape[0]

  def transition(x_t, t, tp, key, z):
    k_hook = jax.random.split(key)[1]
    pred = model_fn(x_t, jnp.full((b,), t, jnp.int32), cond).astype(jnp.float32)
    if z is None:
      z = step_noise(key, x_t.shape) if draw_noise else jnp.zeros_like(x_t)
    x_p, _ = step(pred, x_t, t, tp, z.astype(jnp.float32), schedule)
    if post_step is not None:
      x_p = post_step(x_p, *schedule.alpha_sigma(tp), k_hook)
    return x_p

  def body(x_t, inp):
    t, tp, key, z = inp
    if resample > 1:
      # RePaint: step down, then re-noise with q(x_t | x_tp) and step again, U times in all.
      beta = schedule.step_beta(t, tp)

      def again(_, carry):
        x_t, key = carry
        key, k_step, k_up = jax.random.split(key, 3)
        x_p = transition(x_t, t, tp, k_step, None)
        z_up = jax.random.normal(k_up, x_p.shape, jnp.float32)
        return jnp.sqrt(1 - beta) * x_p + jnp.sqrt(beta) * z_up, key

      x_t, key = jax.lax.fori_loop(0, resample - 1, again, (x_t, key))
    return transition(x_t, t, tp, key, z), None

  keys = jax.random.split(rng, len(ts))
  x, _ = jax.lax.scan(body, x, (jnp.asarray(ts), jnp.asarray(t_prev), keys, noise))
  return x


SAMPLERS: Registry = Registry("sampler")


@SAMPLERS.register("ddpm")
def ddpm_sample(model_fn: process.ModelFn, schedule: DiscreteSchedule, shape: tuple[int, ...],
                rng: jax.Array, *, prediction: str = "eps", cond: Any = None,
                num_steps: int | None = None, timesteps: Any = None, spacing: str = "leading",
                steps_offset: int = 0, variance: str = "fixed_small",
                clip_x0: float | None = None, x_start: jax.Array | None = None,
                noise: jax.Array | None = None, post_step: PostStep | None = None,
                resample: int = 1) -> jax.Array:
  """Ancestral sampling (all T steps unless ``num_steps`` / ``timesteps`` pick a subset)."""
  process.check_prediction(prediction)
  if variance not in VARIANCES:
    raise ConfigError(f"unknown DDPM variance '{variance}'; choose one of: {', '.join(VARIANCES)}")
  ts, t_prev = resolve_walk(schedule, num_steps, timesteps, spacing, steps_offset)
  x, rng = _initial(shape, rng, x_start)
  step = functools.partial(ddpm_step, prediction=prediction, variance=variance, clip_x0=clip_x0)
  return _scan_single_steps(step, model_fn, schedule, x, ts, t_prev, rng, cond, post_step,
                            resample, noise=noise)


@SAMPLERS.register("ddim")
def ddim_sample(model_fn: process.ModelFn, schedule: DiscreteSchedule, shape: tuple[int, ...],
                rng: jax.Array, *, prediction: str = "eps", cond: Any = None,
                num_steps: int | None = 50, timesteps: Any = None, spacing: str = "leading",
                steps_offset: int = 0, prev_timesteps: Any = None, eta: float = 0.0,
                clip_x0: float | None = None, use_clipped_model_output: bool = False,
                x_start: jax.Array | None = None, noise: jax.Array | None = None,
                post_step: PostStep | None = None, resample: int = 1) -> jax.Array:
  """DDIM over ``num_steps`` timesteps (or an explicit ``timesteps`` sequence), each step to
  diffusers' previous timestep t - T // num_steps (see the module docstring)."""
  process.check_prediction(prediction)
  if isinstance(eta, (int, float)) and eta < 0:
    raise ConfigError(f"eta must be >= 0, got {eta}")
  ts, t_prev = resolve_walk(schedule, num_steps, timesteps, spacing, steps_offset,
                            prev_timesteps, stride_rule=True)
  x, rng = _initial(shape, rng, x_start)
  step = functools.partial(ddim_step, prediction=prediction, eta=eta, clip_x0=clip_x0,
                           use_clipped_model_output=use_clipped_model_output)
  deterministic = isinstance(eta, (int, float)) and eta == 0
  return _scan_single_steps(step, model_fn, schedule, x, ts, t_prev, rng, cond, post_step,
                            resample, draw_noise=not deterministic, noise=noise)


@SAMPLERS.register("dpm_solver_2m")
def dpm_solver_2m_sample(model_fn: process.ModelFn, schedule: DiscreteSchedule,
                         shape: tuple[int, ...], rng: jax.Array, *, prediction: str = "eps",
                         cond: Any = None, num_steps: int | None = 20, timesteps: Any = None,
                         spacing: str = "trailing", steps_offset: int = 0,
                         x_start: jax.Array | None = None,
                         post_step: PostStep | None = None) -> jax.Array:
  """DPM-Solver++(2M), deterministic; 20 steps are typically enough (Lu et al. 2022). Steps go
  to the next entry of the sequence, as in diffusers' DPMSolverMultistepScheduler."""
  process.check_prediction(prediction)
  ts, t_prev = resolve_walk(schedule, num_steps, timesteps, spacing, steps_offset)
  x, rng = _initial(shape, rng, x_start)
  b = x.shape[0]

  def body(carry, inp):
    x, x0_prev, h_prev, i = carry
    t, tp, key = inp
    alpha_s, sigma_s = schedule.alpha_sigma(t)
    alpha_t, sigma_t = schedule.alpha_sigma(tp)
    pred = model_fn(x, jnp.full((b,), t, jnp.int32), cond).astype(jnp.float32)
    x0 = process.to_x0(pred, prediction, x, alpha_s, sigma_s)
    last = tp < 0
    # On the last step sigma_t = 0 (lambda = inf): the update is x0 itself; keep the discarded
    # branch finite.
    h = jnp.where(last, 1.0, jnp.log(alpha_t / jnp.where(last, 1.0, sigma_t))
                  - jnp.log(alpha_s / sigma_s))
    phi = jnp.expm1(-h)
    first = (sigma_t / sigma_s) * x - alpha_t * phi * x0
    r = jnp.where(i > 0, h_prev / h, 1.0)
    second = first - 0.5 * alpha_t * phi * (x0 - x0_prev) / r
    x_next = jnp.where(last, x0, jnp.where(i > 0, second, first))
    if post_step is not None:
      x_next = post_step(x_next, alpha_t, sigma_t, key)
    return (x_next, x0, h, i + 1), None

  init = (x, jnp.zeros_like(x), jnp.float32(1.0), jnp.int32(0))
  keys = jax.random.split(rng, len(ts))
  (x, *_), _ = jax.lax.scan(body, init, (jnp.asarray(ts), jnp.asarray(t_prev), keys))
  return x


def sample(name: str, model_fn: process.ModelFn, schedule: DiscreteSchedule,
           shape: tuple[int, ...], rng: jax.Array, **options: Any) -> jax.Array:
  """Runs the registered sampler ``name``; unknown options raise ConfigError listing the known."""
  fn = SAMPLERS.get(name)
  allowed = [p for p in inspect.signature(fn).parameters
             if p not in ("model_fn", "schedule", "shape", "rng")]
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    raise ConfigError(f"sampler '{name}' has no option(s) {', '.join(unknown)}; "
                      f"allowed: {', '.join(allowed)}")
  return fn(model_fn, schedule, shape, rng, **options)


def parse_sampler(spec: str) -> tuple[str, int]:
  """'ddim-50' -> ('ddim', 50); the name must be a registered sampler."""
  m = re.fullmatch(r"([a-z0-9_]+)-(\d+)", spec)
  if not m:
    raise ConfigError(f"sampler spec '{spec}' must be NAME-STEPS, e.g. ddim-50 or ddpm-1000")
  SAMPLERS.get(m.group(1))
  return m.group(1), int(m.group(2))
