"""Every sampler on a Gaussian data distribution N(mu, Sigma) with its exact denoiser.

For x_t = alpha x0 + sigma z the marginal is N(alpha mu, C_t), C_t = alpha^2 Sigma + sigma^2 I,
and the exact noise prediction is eps(x_t) = sigma C_t^{-1} (x_t - alpha mu) (the score is
-eps / sigma). With it, a sampler's output law differs from N(mu, Sigma) only by its
discretisation error, which the tolerances state per sampler:

* stochastic samplers are checked by Monte Carlo: |mean - mu| <= 5 SE + delta and |cov - Sigma|
  <= 5 SE + delta entrywise, SE from the sample count (sqrt(Sigma_ii / n) for a mean,
  sqrt((Sigma_ii Sigma_jj + Sigma_ij^2) / n) for a covariance entry), delta the discretisation
  bias allowance at that step count (about twice the bias measured with 100k samples);
* deterministic samplers (DDIM eta = 0, DPM-Solver++, probability-flow ODE) are affine maps
  x_T -> A x_T + b here, so their output law is exactly N(b, A A^T): no sampling error at all,
  and the test checks the discretisation error and its order of convergence in the step count.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffusion_gaussian import (
  MU,
  N_SAMPLES,
  SHAPE,
  SIGMA,
  D,
  check_moments,
  discrete_model,
  exact_eps,
  marginal_moments,
  sde_model,
)

from seqgen_jax.diffusion import ode, pc, process, samplers, schedules, sde

LIN = schedules.make_schedule("linear")
VP = sde.VPSDE(num_steps=300)
VE = sde.VESDE(num_steps=300)

# name -> (sampler(shape, rng), delta). Measured biases (max over mean / cov entries, 100k
# samples): ddpm beta~ 0.005, ddpm beta 0.003, ddim eta=1 at 250 steps 0.021 (first order:
# about 5 / n), pc vp 0.005, pc ve 0.005, pc vp euler-maruyama 0.005.
STOCHASTIC = {
    "ddpm_fixed_small_1000": (functools.partial(samplers.ddpm_sample, discrete_model(LIN), LIN),
                              0.01),
    "ddim_eta1_250": (functools.partial(samplers.ddim_sample, discrete_model(LIN), LIN,
                                        num_steps=250, eta=1.0), 0.04),
    "pc_vp_reverse_diffusion_langevin_300": (
        functools.partial(pc.pc_sample, sde_model(VP), VP, snr=0.16), 0.01),
    "pc_ve_reverse_diffusion_langevin_300": (
        functools.partial(pc.pc_sample, sde_model(VE), VE, snr=0.16), 0.01),
}
STOCHASTIC_SLOW = {
    "ddpm_fixed_large_1000": (functools.partial(samplers.ddpm_sample, discrete_model(LIN), LIN,
                                                variance="fixed_large"), 0.01),
    "pc_vp_euler_maruyama_langevin_300": (
        functools.partial(pc.pc_sample, sde_model(VP), VP, predictor="euler_maruyama"), 0.01),
    "pc_ve_reverse_diffusion_langevin_1000": (
        functools.partial(pc.pc_sample, sde_model(sde.VESDE()), sde.VESDE()), 0.01),
}


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_stochastic_samplers_reproduce_the_gaussian(name):
  fn, delta = STOCHASTIC[name]
  x = jax.jit(lambda r: fn((N_SAMPLES, *SHAPE), r))(jax.random.PRNGKey(11))
  check_moments(x, delta)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STOCHASTIC_SLOW))
def test_more_stochastic_samplers_reproduce_the_gaussian(name):
  fn, delta = STOCHASTIC_SLOW[name]
  x = jax.jit(lambda r: fn((4 * N_SAMPLES, *SHAPE), r))(jax.random.PRNGKey(13))
  check_moments(x, delta)


def affine_law(sample_fn):
  """(b, A A^T) of a sampler that is affine in its start x_T ~ N(0, sigma_T^2 I)."""
  def from_start(z_D):
    return sample_fn(x_start=z_D.reshape(1, *SHAPE)).reshape(D)
  b, A = jax.jit(lambda z: (from_start(z), jax.jacfwd(from_start)(z)))(jnp.zeros(D))
  return np.asarray(b, np.float64), np.asarray(A, np.float64)


def _discrete(fn, **kw):
  return lambda x_start: fn(discrete_model(LIN), LIN, (1, *SHAPE), jax.random.PRNGKey(0),
                            x_start=x_start, **kw)


def _ode(s, **kw):
  return lambda x_start: ode.ode_sample(sde_model(s), s, (1, *SHAPE), jax.random.PRNGKey(0),
                                        x_start=x_start, **kw)


# name -> (sampler(n), two step counts, (min, max) error ratio for the step doubling, error
# bound at the larger count, prior std, target moments). Measured errors: ddim 0.039 / 0.020
# (50 / 100 steps), dpm 0.096 / 0.022 (10 / 20), ode vp heun 0.0015 at 25, ode ve heun 0.083 /
# 0.017 (25 / 50; VE's uniform grid in t is a poor fit for its exponential sigma(t)).
DETERMINISTIC = {
    # First order (DDIM is Euler on the probability-flow ODE in a rescaled time).
    "ddim": (lambda n: _discrete(samplers.ddim_sample, num_steps=n), (50, 100), (1.7, 2.3),
             0.025, 1.0, (MU, SIGMA)),
    # Second order.
    "dpm_solver_2m": (lambda n: _discrete(samplers.dpm_solver_2m_sample, num_steps=n),
                      (10, 20), (3.0, 6.0), 0.03, 1.0, (MU, SIGMA)),
    "ode_vp_heun": (lambda n: _ode(VP, num_steps=n), (12, 25), (3.0, 6.0), 0.003, 1.0,
                    marginal_moments(VP, 1e-3)),
    "ode_ve_heun": (lambda n: _ode(VE, num_steps=n), (25, 50), (3.0, 6.0), 0.025,
                    VE.sigma_max, marginal_moments(VE, 1e-3)),
}


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_samplers_converge_to_the_gaussian(name):
  make, steps, (lo, hi), bound, prior_std, (mean, cov) = DETERMINISTIC[name]
  errors = []
  for n in steps:
    b, A = affine_law(make(n))
    errors.append(max(np.abs(prior_std**2 * A @ A.T - cov).max(), np.abs(b - mean).max()))
  assert lo < errors[0] / errors[1] < hi, errors
  assert errors[1] < bound, errors


def test_ddim_sampler_from_noise_by_monte_carlo():
  """The whole DDIM pipeline from drawn noise (100 steps: covariance bias 0.020, exact law)."""
  x = jax.jit(lambda r: samplers.ddim_sample(discrete_model(LIN), LIN, (N_SAMPLES, *SHAPE), r,
                                             num_steps=100))(jax.random.PRNGKey(12))
  check_moments(x, 0.03)


def test_ddim_eta0_is_deterministic_and_eta1_is_not():
  """Same x_T -> same x_0 whatever the rng at eta = 0; the rng matters at eta = 1."""
  fn = jax.jit(lambda r, x_T, eta: samplers.ddim_sample(
      discrete_model(LIN), LIN, (16, *SHAPE), r, num_steps=20, eta=eta, x_start=x_T),
      static_argnums=2)
  x_T = jax.random.normal(jax.random.PRNGKey(0), (16, *SHAPE))
  a = fn(jax.random.PRNGKey(1), x_T, 0.0)
  np.testing.assert_array_equal(a, fn(jax.random.PRNGKey(2), x_T, 0.0))
  assert not np.allclose(fn(jax.random.PRNGKey(1), x_T, 1.0), fn(jax.random.PRNGKey(2), x_T, 1.0))


@pytest.mark.parametrize("sampler", ["ddim", "dpm_solver_2m"])
def test_samplers_agree_across_prediction_types(sampler):
  """The same exact denoiser given as eps, x0 or v yields the same samples."""
  schedule = schedules.make_schedule("cosine")
  run = jax.jit(lambda r: [samplers.sample(sampler, discrete_model(schedule, p), schedule,
                                           (64, *SHAPE), r, prediction=p, num_steps=25)
                           for p in process.PREDICTIONS])
  ref, *others = run(jax.random.PRNGKey(4))
  for got in others:
    np.testing.assert_allclose(got, ref, atol=2e-4, rtol=2e-4)


def test_sde_score_is_the_same_from_every_prediction_type():
  """The SDE samplers see the network only through score_fn_from_model."""
  for s in (sde.VPSDE(), sde.VESDE()):
    x = jax.random.normal(jax.random.PRNGKey(5), (8, *SHAPE))
    t = jnp.linspace(0.01, 1.0, 8)
    alpha, sigma = s.marginal(t)
    want = -exact_eps(x, alpha, sigma) / process.bcast(sigma, x)
    for p in sde.SDE_PREDICTIONS:
      got = sde.score_fn_from_model(sde_model(s, p), s, p)(x, t)
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(want))))


def test_langevin_corrector_alone_samples_the_marginal():
  """Corrector-only sampling at a fixed time: Langevin MCMC whose target is p_t itself."""
  s = sde.VESDE(num_steps=2)
  t = 0.3
  mean, cov = marginal_moments(s, t)
  score = sde.score_fn_from_model(sde_model(s), s)
  x0 = jnp.zeros((N_SAMPLES, *SHAPE))
  x, _ = jax.jit(lambda k: pc.langevin(s, score, x0, jnp.full((N_SAMPLES,), t), k, snr=0.15,
                                       n_steps=200))(jax.random.PRNGKey(6))
  # Unadjusted Langevin with step e inflates a variance lam by about e / (2 lam) relatively; the
  # snr rule sets e = 2 (r |z| / |s|)^2 ~ 2 r^2 D / tr(C^-1) (C = Sigma + sigma_t^2 I here), so
  # the inflation is at most r^2 D / (lam_min tr(C^-1)) < r^2 = 0.0225 of the largest variance.
  check_moments(x, 0.0225 * np.max(np.diag(cov)), mean, cov)


def test_sampling_loops_trace_the_network_a_fixed_number_of_times():
  """One lax.scan per loop: the network is traced per solver stage, never per step."""
  calls = []

  def counting(model_fn):
    def fn(x, t, cond):
      calls.append(1)
      return model_fn(x, t, cond)
    return fn

  cases = [
      (lambda n: samplers.ddpm_sample(counting(discrete_model(LIN)), LIN, (2, *SHAPE),
                                      jax.random.PRNGKey(0), num_steps=n), 1),
      (lambda n: samplers.ddim_sample(counting(discrete_model(LIN)), LIN, (2, *SHAPE),
                                      jax.random.PRNGKey(0), num_steps=n), 1),
      (lambda n: samplers.dpm_solver_2m_sample(counting(discrete_model(LIN)), LIN, (2, *SHAPE),
                                               jax.random.PRNGKey(0), num_steps=n), 1),
      (lambda n: pc.pc_sample(counting(sde_model(sde.VPSDE(num_steps=n))),
                              sde.VPSDE(num_steps=n), (2, *SHAPE), jax.random.PRNGKey(0)), 2),
      (lambda n: ode.ode_sample(counting(sde_model(VP)), VP, (2, *SHAPE), jax.random.PRNGKey(0),
                                num_steps=n, method="rk4"), 4),
  ]
  for run, per_loop in cases:
    for n in (5, 50):
      calls.clear()
      jax.make_jaxpr(functools.partial(run, n))()
      assert len(calls) == per_loop, (n, len(calls))
