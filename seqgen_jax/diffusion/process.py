"""The forward process q(x_t | x_0), the three prediction targets and the training losses.

x_t = alpha_t x_0 + sigma_t eps with eps ~ N(0, I). For a discrete schedule alpha_t =
sqrt(abar_t) and sigma_t = sqrt(1 - abar_t); for a VE process alpha_t = 1. A network predicts
one of

* ``eps``: the noise (Ho et al. 2020);
* ``x0``:  the clean data;
* ``v``:   v = alpha_t eps - sigma_t x_0 (Salimans & Ho 2022, "progressive distillation").

Conversions (from x_t = alpha x0 + sigma eps and v = alpha eps - sigma x0; for a VP process
alpha^2 + sigma^2 = 1 and the denominators below are 1):
  x0  = (x_t - sigma eps) / alpha                 eps = (x_t - alpha x0) / sigma
  x0  = (alpha x_t - sigma v) / (alpha^2 + sigma^2)
  eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2)

Loss weightings. With SNR = alpha^2 / sigma^2, the squared errors of the three parametrisations
are multiples of the error in x0: |d eps|^2 = SNR |d x0|^2 and, for VP, |d v|^2 = (1 + SNR)
|d x0|^2. Every weighting is therefore an x0-space weight lambda(SNR), and the loss on the
model's own output is multiplied by lambda(SNR) / factor(prediction):
  simple   lambda = factor: plain MSE on the model's own target. For ``eps`` this is L_simple of
           Ho et al.; for ``v`` it is the v-loss of Salimans & Ho.
  eps_mse  lambda = SNR: the eps-MSE whatever the parametrisation.
  v_mse    lambda = 1 + SNR: the v-loss whatever the parametrisation.
  min_snr  lambda = min(SNR, gamma): min-SNR-gamma (Hang et al. 2023; gamma = 5 there), i.e. eps
           models weighted by min(SNR, gamma) / SNR, v models by min(SNR, gamma) / (SNR + 1).

Axis key: B batch, H height, W width, C channels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from seqgen_jax.diffusion.schedules import DiscreteSchedule
from seqgen_jax.errors import ConfigError
from seqgen_jax.registry import Registry

PREDICTIONS = ("eps", "x0", "v")
# model_fn(x_BHWC, t_B, cond) -> prediction with the shape of x.
ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def check_prediction(prediction: str) -> str:
  """Returns ``prediction`` or raises ConfigError listing the allowed ones."""
  if prediction not in PREDICTIONS:
    raise ConfigError(f"unknown prediction type '{prediction}'; choose one of: "
                      f"{', '.join(PREDICTIONS)}")
  return prediction


def bcast(a: jax.Array, x: jax.Array) -> jax.Array:
  """A scalar or [B] coefficient shaped to broadcast against x_B...: [B, 1, .., 1]."""
  a = jnp.asarray(a, jnp.float32)
  return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) if a.ndim else a


def q_sample(x0: jax.Array, noise: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
  """x_t = alpha x0 + sigma noise (alpha, sigma: scalars or [B])."""
  return bcast(alpha, x0) * x0 + bcast(sigma, x0) * noise


def q_sample_discrete(schedule: DiscreteSchedule, x0_BHWC: jax.Array, t_B: jax.Array,
                      noise_BHWC: jax.Array) -> jax.Array:
  """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise for integer timesteps t_B."""
  alpha, sigma = schedule.alpha_sigma(t_B)
  return q_sample(x0_BHWC, noise_BHWC, alpha, sigma)


def to_x0(pred: jax.Array, prediction: str, x_t: jax.Array, alpha: jax.Array,
          sigma: jax.Array) -> jax.Array:
  """The x0 implied by a model output of type ``prediction`` at noise level (alpha, sigma)."""
  a, s = bcast(alpha, x_t), bcast(sigma, x_t)
  if check_prediction(prediction) == "eps":
    return (x_t - s * pred) / a
  if prediction == "x0":
    return pred
  return (a * x_t - s * pred) / (a * a + s * s)


def to_eps(pred: jax.Array, prediction: str, x_t: jax.Array, alpha: jax.Array,
           sigma: jax.Array) -> jax.Array:
  """The eps implied by a model output of type ``prediction`` at noise level (alpha, sigma)."""
  a, s = bcast(alpha, x_t), bcast(sigma, x_t)
  if check_prediction(prediction) == "eps":
    return pred
  if prediction == "x0":
    return (x_t - a * pred) / s
  return (s * x_t + a * pred) / (a * a + s * s)


def to_v(pred: jax.Array, prediction: str, x_t: jax.Array, alpha: jax.Array,
         sigma: jax.Array) -> jax.Array:
  """The v = alpha eps - sigma x0 implied by a model output of type ``prediction``."""
  if check_prediction(prediction) == "v":
    return pred
  a, s = bcast(alpha, x_t), bcast(sigma, x_t)
  return (a * to_eps(pred, prediction, x_t, alpha, sigma)
          - s * to_x0(pred, prediction, x_t, alpha, sigma))


def convert(pred: jax.Array, src: str, dst: str, x_t: jax.Array, alpha: jax.Array,
            sigma: jax.Array) -> jax.Array:
  """A model output of type ``src`` re-expressed as type ``dst`` (eps | x0 | v)."""
  check_prediction(src)
  fn = {"eps": to_eps, "x0": to_x0, "v": to_v}.get(check_prediction(dst))
  return fn(pred, src, x_t, alpha, sigma)


def target(prediction: str, x0: jax.Array, noise: jax.Array, alpha: jax.Array,
           sigma: jax.Array) -> jax.Array:
  """The regression target of a ``prediction``-type model for x_t = alpha x0 + sigma noise."""
  check_prediction(prediction)
  if prediction == "eps":
    return noise
  if prediction == "x0":
    return x0
  return bcast(alpha, x0) * noise - bcast(sigma, x0) * x0


# --- loss weightings ---------------------------------------------------------------------------

# name -> lambda(snr, gamma, factor): the weight on |x0_hat - x0|^2, where factor is
# x0_error_factor(prediction, snr).
LOSS_WEIGHTINGS: Registry = Registry("loss weighting")
LOSS_WEIGHTINGS.register("simple")(lambda snr, gamma, factor: factor)
LOSS_WEIGHTINGS.register("eps_mse")(lambda snr, gamma, factor: snr)
LOSS_WEIGHTINGS.register("v_mse")(lambda snr, gamma, factor: 1.0 + snr)
LOSS_WEIGHTINGS.register("min_snr")(lambda snr, gamma, factor: jnp.minimum(snr, gamma))


def x0_error_factor(prediction: str, snr: jax.Array) -> jax.Array:
  """|d pred|^2 / |d x0|^2 at a given SNR (VP): eps -> SNR, x0 -> 1, v -> 1 + SNR."""
  check_prediction(prediction)
  if prediction == "eps":
    return snr
  if prediction == "x0":
    return jnp.ones_like(snr)
  return 1.0 + snr


def loss_weight(weighting: str, prediction: str, snr: jax.Array,
                gamma: float = 5.0) -> jax.Array:
  """The multiplier on the MSE of a ``prediction``-type output that realises ``weighting``."""
  factor = x0_error_factor(prediction, snr)
  return LOSS_WEIGHTINGS.get(weighting)(snr, gamma, factor) / factor


def diffusion_loss(model_fn: ModelFn, schedule: DiscreteSchedule, x0_BHWC: jax.Array,
                   rng: jax.Array, *, prediction: str = "eps", weighting: str = "simple",
                   gamma: float = 5.0, cond: Any = None) -> tuple[jax.Array, dict]:
  """Per-example weighted denoising loss [B] at t ~ U{0..T-1}; aux holds t_B and the raw MSE."""
  b = x0_BHWC.shape[0]
  t_rng, n_rng = jax.random.split(rng)
  t_B = jax.random.randint(t_rng, (b,), 0, schedule.num_timesteps)
  noise = jax.random.normal(n_rng, x0_BHWC.shape, x0_BHWC.dtype)
  alpha, sigma = schedule.alpha_sigma(t_B)
  x_t = q_sample(x0_BHWC, noise, alpha, sigma)
  pred = model_fn(x_t, t_B, cond).astype(jnp.float32)
  tgt = target(prediction, x0_BHWC, noise, alpha, sigma)
  mse_B = jnp.mean(jnp.square(pred - tgt).reshape(b, -1), axis=-1)
  w_B = loss_weight(weighting, prediction, schedule.snr(t_B), gamma)
  return w_B * mse_B, {"t": t_B, "mse": mse_B}
