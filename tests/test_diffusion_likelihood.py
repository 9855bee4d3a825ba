"""Probability-flow ODE likelihoods against closed-form Gaussian log-densities; bits/dim."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffusion_gaussian import MU, SHAPE, SIGMA, D, exact_eps, marginal_moments, sde_model
from scipy.stats import multivariate_normal

from seqgen_jax.diffusion import likelihood, process, sde

EPS = 1e-5


def _points(n, seed=1):
  x = np.random.default_rng(seed).multivariate_normal(MU, SIGMA, n)
  return jnp.asarray(x.reshape(n, *SHAPE), jnp.float32)


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_exact_divergence_log_likelihood_matches_the_closed_form(name):
  """log p_eps(x) of the data Gaussian, point by point.

  The ODE returns prior_logp(z) + int div, where z = x_T is the latent it returns and the
  integral equals log p_eps(x) - log p_T(z) exactly; so it must equal log N(x; p_eps) +
  prior_logp(z) - log N(z; p_T) to the integrator's error (RK4, 50 steps: 1e-5 nats measured).
  The remaining gap to log N(x; p_eps) is only the prior's mismatch with p_T (VP: alpha_1 =
  0.0066 leaves a mean offset 0.0066 mu; VE: the prior ignores the data's spread); measured
  0.008 (VP) and 0.023 (VE) nats.
  """
  s = sde.make_sde(name)
  x = _points(16)
  logp, z = jax.jit(lambda r: likelihood.log_likelihood(
      sde_model(s), s, x, r, num_steps=50, method="rk4", divergence="exact"))(
      jax.random.PRNGKey(0))
  m_eps, c_eps = marginal_moments(s, EPS)
  m_T, c_T = marginal_moments(s, 1.0)
  z_flat = np.asarray(z, np.float64).reshape(16, D)
  truth = multivariate_normal(m_eps, c_eps).logpdf(np.asarray(x, np.float64).reshape(16, D))
  bookkept = truth + np.asarray(s.prior_logp(z), np.float64) - multivariate_normal(
      m_T, c_T).logpdf(z_flat)
  np.testing.assert_allclose(logp, bookkept, atol=1e-3)
  np.testing.assert_allclose(logp, truth, atol=0.05)
  bpd = likelihood.bits_per_dim(logp, D)
  np.testing.assert_allclose(bpd, -truth / (D * math.log(2)) + 7, atol=0.05 / (D * math.log(2)))


def test_hutchinson_estimate_is_unbiased():
  """Each row gets its own Rademacher probe: the mean over 200 copies of a point is within
  5 standard errors (from the rows' spread) of the exact-divergence value."""
  s = sde.VPSDE()
  reps = 200
  x = jnp.repeat(_points(1, seed=2), reps, axis=0)
  run = jax.jit(lambda r, div: likelihood.log_likelihood(
      sde_model(s), s, x, r, num_steps=10, method="rk4", divergence=div)[0], static_argnums=1)
  exact = float(run(jax.random.PRNGKey(0), "exact")[0])
  est = np.asarray(run(jax.random.PRNGKey(1), "hutchinson"), np.float64)
  assert est.std() > 1e-3  # the probes really differ
  assert abs(est.mean() - exact) < 5 * est.std(ddof=1) / math.sqrt(reps)


def test_bits_per_dim_of_a_uniform_density_is_eight_bits():
  """Uniform over the data range is uniform over the 256 levels: exactly 8 bits per dimension."""
  d = 12
  for lo, hi in ((-1.0, 1.0), (0.0, 1.0), (0.0, 255.0)):
    logp = jnp.full((3,), -d * math.log(hi - lo))  # density 1 / (hi - lo)^d
    np.testing.assert_allclose(likelihood.bits_per_dim(logp, d, data_range=(lo, hi)), 8.0,
                               atol=1e-5)


def test_dequantize_stays_in_each_integers_bin():
  k = jnp.arange(256, dtype=jnp.uint8).reshape(1, 16, 16, 1).repeat(64, axis=0)
  y = np.asarray(likelihood.dequantize(k, jax.random.PRNGKey(0)), np.float64)
  bins = np.floor((y + 1.0) / 2.0 * 256)
  np.testing.assert_array_equal(bins, np.asarray(k))
  frac = (y + 1.0) / 2.0 * 256 - np.asarray(k)
  assert abs(frac.mean() - 0.5) < 5 * math.sqrt(1 / 12 / frac.size)  # u ~ U[0, 1)


def test_exact_divergence_slices_per_example_conditioning():
  """Class c shifts the data mean by 0.3 c: each point's likelihood uses its own label."""
  s = sde.VPSDE()
  shift = lambda c: 0.3 * c.astype(jnp.float32)[:, None, None, None]

  def model_fn(x, t_B, cond):  # data N(mu + 0.3 c, Sigma): eps(x) = eps_mu(x - alpha 0.3 c)
    alpha, sigma = s.marginal(t_B)
    return exact_eps(x - process.bcast(alpha, x) * shift(cond), alpha, sigma)

  labels = jnp.arange(4)
  x = _points(4, seed=3) + shift(labels)
  logp, _ = jax.jit(lambda r: likelihood.log_likelihood(
      model_fn, s, x, r, cond=labels, num_steps=20, method="rk4", divergence="exact"))(
      jax.random.PRNGKey(0))
  m_eps, c_eps = marginal_moments(s, EPS)
  alpha_eps = float(s.marginal(jnp.float32(EPS))[0])
  truth = [multivariate_normal(m_eps + alpha_eps * 0.3 * c, c_eps).logpdf(
      np.asarray(x[c], np.float64).reshape(D)) for c in range(4)]
  np.testing.assert_allclose(logp, truth, atol=0.05)  # the prior mismatch, as above
