"""The Gaussian reference for the diffusion tests: N(mu, Sigma) in D = 4 with its exact denoiser.

For x_t = alpha x0 + sigma z the marginal is N(alpha mu, C_t), C_t = alpha^2 Sigma + sigma^2 I,
and the exact noise prediction is eps(x_t) = sigma C_t^{-1} (x_t - alpha mu); the score is
-eps / sigma.
"""

import jax.numpy as jnp
import numpy as np

from seqgen_jax.diffusion import process

SHAPE = (1, 2, 2)  # one 1x2 "image" with 2 channels: D = 4
D = 4
_rs = np.random.default_rng(0)
U, _ = np.linalg.qr(_rs.standard_normal((D, D)))
LAM = np.array([0.5, 0.25, 0.1, 0.05])
SIGMA = U @ np.diag(LAM) @ U.T
MU = np.array([0.5, -0.4, 0.2, 0.0])
N_SAMPLES = 4096


def exact_eps(x, alpha, sigma):
  """sigma C_t^{-1} (x - alpha mu), in the eigenbasis of Sigma."""
  b = x.shape[0]
  u, lam, mu = (jnp.asarray(a, jnp.float32) for a in (U, LAM, MU))
  a = process.bcast(alpha, x[:, :1, 0, 0])
  s = process.bcast(sigma, x[:, :1, 0, 0])
  r = (x.reshape(b, D) - a * mu) @ u
  return (s * (r / (a**2 * lam + s**2)) @ u.T).reshape(x.shape)


def discrete_model(schedule, prediction="eps"):
  def model_fn(x, t_B, cond):
    del cond
    alpha, sigma = schedule.alpha_sigma(t_B)
    return process.convert(exact_eps(x, alpha, sigma), "eps", prediction, x, alpha, sigma)
  return model_fn


def sde_model(s, prediction="eps"):
  def model_fn(x, t_B, cond):
    del cond
    alpha, sigma = s.marginal(t_B)
    eps = exact_eps(x, alpha, sigma)
    if prediction == "score":
      return -eps / process.bcast(sigma, x)
    return process.convert(eps, "eps", prediction, x, alpha, sigma)
  return model_fn


def marginal_moments(s, t):
  """Mean and covariance of p_t for an SDE (the target of samplers that stop at t = eps)."""
  alpha, sigma = (float(v) for v in s.marginal(jnp.float32(t)))
  return alpha * MU, alpha**2 * SIGMA + sigma**2 * np.eye(D)


def check_moments(x, delta, mean=MU, cov=SIGMA):
  x = np.asarray(x, np.float64).reshape(x.shape[0], D)
  n = x.shape[0]
  se_mean = np.sqrt(np.diag(cov) / n)
  se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
  np.testing.assert_array_less(np.abs(x.mean(0) - mean), 5 * se_mean + delta)
  np.testing.assert_array_less(np.abs(np.cov(x.T) - cov), 5 * se_cov + delta)
