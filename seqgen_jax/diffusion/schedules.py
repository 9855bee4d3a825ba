"""Noise schedules: discrete (betas, alphas, alphas_cumprod, log-SNR) and continuous-time.

Discrete schedules index timesteps t = 0 .. T-1 (diffusers' convention: t = 0 is the least noisy
step, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps). ``t = -1`` stands for the clean data
(abar = 1), the target of a sampler's last step.

* ``linear``: beta_t evenly spaced from beta_start to beta_end (Ho et al. 2020, 1e-4 .. 0.02).
* ``cosine``: abar(t) = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi/2), s = 0.008, and
  beta_t = min(1 - abar(t+1) / abar(t), 0.999) (Nichol & Dhariwal 2021, eq. 17; diffusers'
  ``squaredcos_cap_v2``).
* ``scaled_linear``: sqrt(beta_t) evenly spaced (Stable Diffusion's schedule).

The values are computed in float64 and stored as float32. Continuous-time schedules (for the
SDEs and the probability-flow ODE) are at the bottom: the VP linear-beta schedule of Song et al.
(2021), whose discretisation with N = 1000 is the ``linear`` schedule, and the continuous cosine.

Axis key: B batch, T timesteps.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from seqgen_jax.errors import ConfigError
from seqgen_jax.registry import Registry


@flax.struct.dataclass
class DiscreteSchedule:
  """A discrete-time noise schedule; a pytree, so it can be passed into jitted functions.

  log(abar) is kept next to abar so that 1 - abar_t and the strided 1 - abar_t / abar_s are
  computed as -expm1(log differences): in float32, 1 - abar_1 / abar_0 would otherwise lose
  three of its seven digits to cancellation.
  """

  betas_T: jax.Array
  alphas_cumprod_T: jax.Array
  log_alphas_cumprod_T: jax.Array

  @property
  def num_timesteps(self) -> int:
    return self.betas_T.shape[0]

  @property
  def alphas_T(self) -> jax.Array:
    return 1.0 - self.betas_T

  @property
  def log_snr_T(self) -> jax.Array:
    """log(abar / (1 - abar)) for every timestep (decreasing in t)."""
    return self.log_alphas_cumprod_T - jnp.log(-jnp.expm1(self.log_alphas_cumprod_T))

  def log_alpha_bar(self, t: jax.Array) -> jax.Array:
    """log abar_t, elementwise over integer ``t``; 0 where t < 0 (the clean data)."""
    t = jnp.asarray(t, jnp.int32)
    return jnp.where(t >= 0, self.log_alphas_cumprod_T[jnp.maximum(t, 0)], 0.0)

  def alpha_bar(self, t: jax.Array) -> jax.Array:
    """abar_t, elementwise over integer ``t``; 1 where t < 0 (the clean data)."""
    t = jnp.asarray(t, jnp.int32)
    return jnp.where(t >= 0, self.alphas_cumprod_T[jnp.maximum(t, 0)], 1.0)

  def one_minus_alpha_bar(self, t: jax.Array) -> jax.Array:
    """1 - abar_t without cancellation (0 where t < 0)."""
    return -jnp.expm1(self.log_alpha_bar(t))

  def step_beta(self, t: jax.Array, s: jax.Array) -> jax.Array:
    """1 - abar_t / abar_s for s < t (s = -1: the clean data): beta of the strided step s -> t."""
    return -jnp.expm1(self.log_alpha_bar(t) - self.log_alpha_bar(s))

  def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sqrt(abar_t), sqrt(1 - abar_t)): the signal and noise scales of q(x_t | x_0)."""
    return jnp.sqrt(self.alpha_bar(t)), jnp.sqrt(self.one_minus_alpha_bar(t))

  def snr(self, t: jax.Array) -> jax.Array:
    """abar_t / (1 - abar_t) for integer ``t`` >= 0."""
    return self.alpha_bar(t) / self.one_minus_alpha_bar(t)


def from_betas(betas_T: np.ndarray) -> DiscreteSchedule:
  """A schedule from explicit betas (e.g. a checkpoint's ``trained_betas``)."""
  betas_T = np.asarray(betas_T, np.float64)
  if betas_T.ndim != 1 or not np.all((betas_T > 0) & (betas_T < 1)):
    raise ConfigError("betas must be a 1-D array with every value in (0, 1)")
  log_abar_T = np.cumsum(np.log1p(-betas_T))
  return DiscreteSchedule(betas_T=jnp.asarray(betas_T, jnp.float32),
                          alphas_cumprod_T=jnp.asarray(np.exp(log_abar_T), jnp.float32),
                          log_alphas_cumprod_T=jnp.asarray(log_abar_T, jnp.float32))


SCHEDULES: Registry = Registry("noise schedule")


@SCHEDULES.register("linear")
def linear(num_timesteps: int = 1000, beta_start: float = 1e-4,
           beta_end: float = 0.02) -> DiscreteSchedule:
  """Ho et al. (2020): betas evenly spaced from beta_start to beta_end."""
  return from_betas(np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64))


@SCHEDULES.register("scaled_linear")
def scaled_linear(num_timesteps: int = 1000, beta_start: float = 0.00085,
                  beta_end: float = 0.012) -> DiscreteSchedule:
  """Latent diffusion / Stable Diffusion: sqrt(beta) evenly spaced."""
  return from_betas(np.linspace(beta_start**0.5, beta_end**0.5, num_timesteps,
                                dtype=np.float64) ** 2)


def cosine_alpha_bar(t: jax.Array | np.ndarray, s: float = 0.008):
  """Continuous cosine abar(t) for t in [0, 1] (Nichol & Dhariwal 2021), abar(0) = 1."""
  xp = jnp if isinstance(t, jax.Array) else np
  f = lambda u: xp.cos((u + s) / (1 + s) * math.pi / 2) ** 2
  return f(t) / f(0.0)


@SCHEDULES.register("cosine")
def cosine(num_timesteps: int = 1000, s: float = 0.008,
           max_beta: float = 0.999) -> DiscreteSchedule:
  """Nichol & Dhariwal (2021) eq. 17: betas from the cosine abar, capped at ``max_beta``."""
  t = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
  abar = cosine_alpha_bar(t, s)
  return from_betas(np.minimum(1.0 - abar[1:] / abar[:-1], max_beta))


def make_schedule(name: str, num_timesteps: int = 1000, **kwargs) -> DiscreteSchedule:
  """The registered schedule ``name`` (linear | cosine | scaled_linear) with T steps."""
  if num_timesteps < 1:
    raise ConfigError(f"num_timesteps must be >= 1, got {num_timesteps}")
  return SCHEDULES.get(name)(num_timesteps, **kwargs)


SPACINGS = ("leading", "trailing", "linspace")


def make_timesteps(num_train_timesteps: int, num_steps: int,
                   spacing: str = "leading", steps_offset: int = 0) -> np.ndarray:
  """A descending sub-sequence of ``num_steps`` training timesteps (diffusers' definitions).

  leading:  arange(n) * (T // n) (+ offset)      e.g. T=1000, n=10: 900, 800, .., 0
  trailing: round(arange(T, 0, -T / n)) - 1       e.g. 999, 899, .., 99
  linspace: round(linspace(0, T - 1, n))          e.g. 999, 888, .., 0
  (Lin et al. 2023, "Common diffusion noise schedules and sample steps are flawed", table 2).
  """
  if not 1 <= num_steps <= num_train_timesteps:
    raise ConfigError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}")
  if spacing == "leading":
    ts = np.arange(num_steps)[::-1] * (num_train_timesteps // num_steps) + steps_offset
  elif spacing == "trailing":
    ts = np.round(np.arange(num_train_timesteps, 0, -num_train_timesteps / num_steps)) - 1
  elif spacing == "linspace":
    ts = np.round(np.linspace(0, num_train_timesteps - 1, num_steps))[::-1]
  else:
    raise ConfigError(f"unknown timestep spacing '{spacing}'; choose one of: "
                      f"{', '.join(SPACINGS)}")
  return check_timesteps(ts, num_train_timesteps)


def check_timesteps(ts: np.ndarray, num_train_timesteps: int) -> np.ndarray:
  """Validates a timestep sequence: 1-D, strictly decreasing, within [0, T)."""
  ts = np.asarray(ts)
  if ts.ndim != 1 or ts.size == 0:
    raise ConfigError("timesteps must be a non-empty 1-D sequence")
  if np.any(ts != np.round(ts)) or ts[0] >= num_train_timesteps or ts[-1] < 0:
    raise ConfigError(f"timesteps must be integers in [0, {num_train_timesteps})")
  if np.any(np.diff(ts) >= 0):
    raise ConfigError("timesteps must be strictly decreasing")
  return ts.astype(np.int32)


# --- continuous time (t in [0, 1]) -------------------------------------------------------------


def vp_linear_log_alpha(t: jax.Array, beta_min: float = 0.1, beta_max: float = 20.0) -> jax.Array:
  """log alpha_t = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min, for beta(t) linear in t.

  alpha_t = sqrt(abar(t)) is the mean coefficient of the VP SDE (Song et al. 2021, eq. 29); with
  beta_i = beta(i / (N - 1)) / N it is the continuous limit of the ``linear`` schedule.
  """
  return -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min


def continuous_log_snr(log_alpha: jax.Array) -> jax.Array:
  """log-SNR of a VP process from log alpha: log(alpha^2 / (1 - alpha^2))."""
  return 2.0 * log_alpha - jnp.log(-jnp.expm1(2.0 * log_alpha))
