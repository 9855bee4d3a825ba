"""Score SDEs (Song et al. 2021, "Score-based generative modeling through SDEs"): VP and VE.

Forward SDE dx = f(x, t) dt + g(t) dw on t in [0, 1], with Gaussian marginals x_t = alpha_t x_0 +
sigma_t z:

* VP (eq. 11): f = -1/2 beta(t) x, g = sqrt(beta(t)), beta(t) = beta_min + t (beta_max -
  beta_min); alpha_t = exp(-1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min), sigma_t^2 = 1 -
  alpha_t^2. Its N-step discretisation is DDPM with beta_i = beta(i / (N - 1)) / N (N = 1000,
  beta in [0.1, 20] gives Ho et al.'s linear schedule).
* VE (eq. 9): f = 0, g = sigma(t) sqrt(2 log(sigma_max / sigma_min)), sigma(t) = sigma_min
  (sigma_max / sigma_min)^t; alpha_t = 1, sigma_t = sigma(t). As in score_sde, the t = 0
  distribution is the data convolved with N(0, sigma_min^2), so that std(t) = sigma(t) exactly.

A network enters through ``score_fn_from_model``: it predicts the score itself (``score``) or
one of eps | x0 | v at the noise level (alpha_t, sigma_t); score = -eps / sigma_t. The network is
called with continuous t_B in (0, 1]; wrap a discrete-time network (e.g. t -> t (N - 1)) outside:
``continuous_to_index`` is such a wrapper (it matches log-SNR), and ``continuous_vp`` is the VP
SDE of a discrete linear schedule (how a DDPM-trained network gets a likelihood).

Axis key: B batch, H height, W width, C channels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqgen_jax.diffusion import process
from seqgen_jax.diffusion.schedules import DiscreteSchedule, continuous_log_snr, vp_linear_log_alpha
from seqgen_jax.errors import ConfigError
from seqgen_jax.registry import Registry

SDE_PREDICTIONS = ("score", *process.PREDICTIONS)
ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]  # (x_BHWC, t_B) -> score


def _index(t: jax.Array, n: int, big_t: float) -> jax.Array:
  # Truncation, as in score_sde: on the grid linspace(T, eps, N) with eps * N < 1 the k-th time
  # maps to index N - 1 - k, down to 0 (whose step removes the last noise). The 2e-4 keeps the
  # exact grid times i / (N - 1), which float32 may round just below i, at index i.
  return jnp.clip(jnp.floor(t * (n - 1) / big_t + 2e-4), 0, n - 1)


def _flat_sq(x: jax.Array) -> jax.Array:
  return jnp.sum(jnp.square(x).reshape(x.shape[0], -1), axis=-1)


@dataclasses.dataclass(frozen=True)
class VPSDE:
  """Variance-preserving SDE with linear beta(t); ``num_steps`` is N of the discretisation."""

  beta_min: float = 0.1
  beta_max: float = 20.0
  num_steps: int = 1000
  T: float = 1.0

  def beta(self, t: jax.Array) -> jax.Array:
    """beta(t) = beta_min + t (beta_max - beta_min)."""
    return self.beta_min + t * (self.beta_max - self.beta_min)

  def sde(self, x: jax.Array, t_B: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(drift f(x, t), diffusion g(t) [B])."""
    beta_B = self.beta(t_B)
    return -0.5 * process.bcast(beta_B, x) * x, jnp.sqrt(beta_B)

  def marginal(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(alpha_t, sigma_t) of x_t = alpha_t x_0 + sigma_t z."""
    log_alpha = vp_linear_log_alpha(t, self.beta_min, self.beta_max)
    return jnp.exp(log_alpha), jnp.sqrt(-jnp.expm1(2.0 * log_alpha))

  def prior_sample(self, rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """x_T ~ N(0, I)."""
    return jax.random.normal(rng, shape, jnp.float32)

  def prior_logp(self, z: jax.Array) -> jax.Array:
    """log N(z; 0, I) per example [B]."""
    d = math.prod(z.shape[1:])
    return -0.5 * d * math.log(2 * math.pi) - 0.5 * _flat_sq(z)

  def discrete_beta(self, t: jax.Array) -> jax.Array:
    """beta_i = beta(i / (N - 1)) / N at the discretisation index i of t."""
    i = _index(t, self.num_steps, self.T)
    return self.beta(i / (self.num_steps - 1)) / self.num_steps

  def discretize(self, x: jax.Array, t_B: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(f_i, G_i) of the DDPM discretisation x_{i+1} = x_i + f_i + G_i z (score_sde)."""
    beta_B = self.discrete_beta(t_B)
    return (process.bcast(jnp.sqrt(1.0 - beta_B), x) - 1.0) * x, jnp.sqrt(beta_B)

  def langevin_scale(self, t_B: jax.Array) -> jax.Array:
    """alpha_i = 1 - beta_i, the extra factor of score_sde's Langevin step for VP."""
    return 1.0 - self.discrete_beta(t_B)


@dataclasses.dataclass(frozen=True)
class VESDE:
  """Variance-exploding SDE (NCSN++ defaults for CIFAR-10: sigma in [0.01, 50])."""

  sigma_min: float = 0.01
  sigma_max: float = 50.0
  num_steps: int = 1000
  T: float = 1.0

  def sigma(self, t: jax.Array) -> jax.Array:
    """sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
    return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

  def sde(self, x: jax.Array, t_B: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(drift f(x, t) = 0, diffusion g(t) [B])."""
    g = self.sigma(t_B) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))
    return jnp.zeros_like(x), g

  def marginal(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(alpha_t = 1, sigma_t = sigma(t))."""
    return jnp.ones_like(t), self.sigma(t)

  def prior_sample(self, rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """x_T ~ N(0, sigma_max^2 I)."""
    return self.sigma_max * jax.random.normal(rng, shape, jnp.float32)

  def prior_logp(self, z: jax.Array) -> jax.Array:
    """log N(z; 0, sigma_max^2 I) per example [B]."""
    d = math.prod(z.shape[1:])
    return (-0.5 * d * math.log(2 * math.pi * self.sigma_max**2)
            - 0.5 * _flat_sq(z) / self.sigma_max**2)

  def discretize(self, x: jax.Array, t_B: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(0, sqrt(sigma_i^2 - sigma_{i-1}^2)) on the geometric grid of N sigmas (SMLD)."""
    i = _index(t_B, self.num_steps, self.T)
    log_ratio = math.log(self.sigma_max / self.sigma_min)
    sig = self.sigma_min * jnp.exp(log_ratio * i / (self.num_steps - 1))
    prev = jnp.where(i > 0, self.sigma_min * jnp.exp(log_ratio * (i - 1) / (self.num_steps - 1)),
                     0.0)
    return jnp.zeros_like(x), jnp.sqrt(sig**2 - prev**2)

  def langevin_scale(self, t_B: jax.Array) -> jax.Array:
    """1: VE's Langevin step has no extra factor."""
    return jnp.ones_like(t_B)


SDES: Registry = Registry("SDE")
SDES.register("vp")(VPSDE)
SDES.register("ve")(VESDE)


def make_sde(name: str, **kwargs: Any) -> VPSDE | VESDE:
  """The registered SDE ``name`` (vp | ve) with its parameters."""
  cls = SDES.get(name)
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ConfigError(f"SDE '{name}' has no parameter(s) {', '.join(unknown)}; "
                      f"allowed: {', '.join(sorted(fields))}")
  return cls(**kwargs)


def check_sde_prediction(prediction: str) -> str:
  """``prediction`` if an SDE model can predict it (score, eps, x0, v); else ConfigError."""
  if prediction not in SDE_PREDICTIONS:
    raise ConfigError(f"unknown prediction type '{prediction}' for an SDE model; choose one of: "
                      f"{', '.join(SDE_PREDICTIONS)}")
  return prediction


def score_fn_from_model(model_fn: process.ModelFn, sde: VPSDE | VESDE, prediction: str = "eps",
                        cond: Any = None) -> ScoreFn:
  """s(x, t_B) = grad log p_t(x) from a network predicting score | eps | x0 | v."""
  check_sde_prediction(prediction)

  def score(x: jax.Array, t_B: jax.Array) -> jax.Array:
    pred = model_fn(x, t_B, cond).astype(jnp.float32)
    if prediction == "score":
      return pred
    alpha, sigma = sde.marginal(t_B)
    return -process.to_eps(pred, prediction, x, alpha, sigma) / process.bcast(sigma, x)

  return score


def sde_loss(model_fn: process.ModelFn, sde: VPSDE | VESDE, x0_BHWC: jax.Array, rng: jax.Array,
             *, prediction: str = "eps", likelihood_weighting: bool = False, eps: float = 1e-5,
             cond: Any = None) -> jax.Array:
  """Denoising score matching at t ~ U(eps, T) (Song et al. 2021, eq. 7); per-example [B].

  Without likelihood weighting the weight is sigma_t^2 (score_sde's default): the loss is
  mean |sigma_t s + z|^2, the eps-MSE for an eps-model. With it, the weight is g(t)^2, which
  makes the loss a bound on the negative log-likelihood (Song et al. 2021b).
  """
  b = x0_BHWC.shape[0]
  t_rng, z_rng = jax.random.split(rng)
  t_B = jax.random.uniform(t_rng, (b,), minval=eps, maxval=sde.T)
  z = jax.random.normal(z_rng, x0_BHWC.shape, jnp.float32)
  alpha, sigma = sde.marginal(t_B)
  x_t = process.q_sample(x0_BHWC, z, alpha, sigma)
  score = score_fn_from_model(model_fn, sde, prediction, cond)(x_t, t_B)
  sig = process.bcast(sigma, x0_BHWC)
  if not likelihood_weighting:
    return jnp.mean(jnp.square(score * sig + z).reshape(b, -1), axis=-1)
  g2_B = jnp.square(sde.sde(x0_BHWC, t_B)[1])
  return g2_B * jnp.mean(jnp.square(score + z / sig).reshape(b, -1), axis=-1)


def sampling_grid(sde: VPSDE | VESDE, eps: float, t_start: float | None = None) -> np.ndarray:
  """score_sde's reverse-time grid linspace(T, eps, N), cut to start at or below ``t_start``."""
  grid = np.linspace(sde.T, eps, sde.num_steps)
  if t_start is None:
    return grid
  if not eps < t_start <= sde.T:
    raise ConfigError(f"t_start must be in ({eps}, {sde.T}], got {t_start}")
  return grid[np.argmax(grid <= t_start):]


# ---------------------------------------------------------------- discrete training, continuous SDE


def continuous_vp(schedule: DiscreteSchedule) -> VPSDE:
  """The VP SDE whose N-step discretisation is a linear schedule: beta(t) in [beta_start N,
  beta_end N]; discrete index i <-> t = i / (N - 1) (Song et al. 2021, app. B)."""
  betas = np.asarray(schedule.betas_T, np.float64)
  n = schedule.num_timesteps
  if not np.allclose(np.diff(betas), (betas[-1] - betas[0]) / (n - 1), rtol=1e-3, atol=1e-9):
    raise ConfigError("the probability-flow likelihood needs the linear schedule")
  return VPSDE(beta_min=float(betas[0]) * n, beta_max=float(betas[-1]) * n, num_steps=n)


def continuous_to_index(schedule: DiscreteSchedule, vp: VPSDE
                        ) -> Callable[[jax.Array], jax.Array]:
  """t in [0, 1] -> the fractional training index with the same log-SNR (clamped to [0, T-1]).

  A network trained on the discrete steps knows noise levels from sigma_0 = sqrt(beta_0) up;
  matching log-SNR (rather than i = t (N - 1)) keeps its eps-prediction consistent with the
  SDE's sigma_t, which matters at small t, where score = -eps / sigma_t. Start likelihood
  integrations at t >= the level of index 0 (eval.bpd_eps, 1e-3 for Ho et al.'s schedule).
  """
  neg_log_snr_T = -schedule.log_snr_T  # increasing in the index

  def to_index(t: jax.Array) -> jax.Array:
    neg = -continuous_log_snr(vp_linear_log_alpha(t, vp.beta_min, vp.beta_max))
    return jnp.interp(neg, neg_log_snr_T, jnp.arange(schedule.num_timesteps, dtype=jnp.float32))

  return to_index
