"""Forward process, targets, conversions, loss weightings, schedules and their errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqgen_jax.diffusion import process, samplers, schedules, sde
from seqgen_jax.errors import ConfigError


def test_q_sample_marginal_moments_by_monte_carlo():
  """E[x_t] = sqrt(abar) x0 and Var[x_t] = 1 - abar, per pixel, within 5 standard errors."""
  schedule = schedules.make_schedule("cosine")
  n = 20000
  x0 = jax.random.uniform(jax.random.PRNGKey(0), (1, 2, 2, 3), minval=-1, maxval=1)
  for t in (0, 300, 700, 999):
    noise = jax.random.normal(jax.random.PRNGKey(t + 1), (n, 2, 2, 3))
    x_t = np.asarray(process.q_sample_discrete(schedule, jnp.broadcast_to(x0, noise.shape),
                                               jnp.full((n,), t), noise), np.float64)
    abar = float(np.asarray(schedule.alphas_cumprod_T, np.float64)[t])
    var = 1 - abar
    # SE of a mean: sqrt(var / n); of a Gaussian sample variance: var sqrt(2 / n).
    np.testing.assert_array_less(np.abs(x_t.mean(0) - math.sqrt(abar) * np.asarray(x0[0])),
                                 5 * math.sqrt(var / n))
    np.testing.assert_array_less(np.abs(x_t.var(0) - var), 5 * var * math.sqrt(2 / n))


@pytest.mark.parametrize("alpha,sigma", [(0.8, 0.6), (0.05, math.sqrt(1 - 0.05**2)),
                                         (1.0, 3.0)])  # two VP levels and a VE level
def test_conversions_invert(alpha, sigma):
  k1, k2 = jax.random.split(jax.random.PRNGKey(1))
  x0 = jax.random.normal(k1, (3, 4, 4, 2))
  eps = jax.random.normal(k2, x0.shape)
  x_t = alpha * x0 + sigma * eps
  truth = {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0}  # the definitions
  for src in process.PREDICTIONS:
    np.testing.assert_allclose(process.target(src, x0, eps, alpha, sigma), truth[src],
                               atol=1e-6)
    for dst in process.PREDICTIONS:
      got = process.convert(truth[src], src, dst, x_t, alpha, sigma)
      np.testing.assert_allclose(got, truth[dst], atol=2e-4 * (1 + sigma / alpha))
      back = process.convert(got, dst, src, x_t, alpha, sigma)
      np.testing.assert_allclose(back, truth[src], atol=2e-4 * (1 + sigma / alpha))


def test_loss_weightings_are_the_stated_x0_space_weights():
  """Each weighting times the model's own MSE equals the loss it names, computed directly."""
  schedule = schedules.make_schedule("linear")
  keys = jax.random.split(jax.random.PRNGKey(2), 3)
  x0 = jax.random.normal(keys[0], (6, 2, 2, 1))
  eps = jax.random.normal(keys[1], x0.shape)
  t = jnp.array([0, 10, 100, 400, 800, 999])
  alpha, sigma = schedule.alpha_sigma(t)
  x_t = process.q_sample(x0, eps, alpha, sigma)
  snr = np.asarray(schedule.snr(t), np.float64)
  mse = lambda a, b: np.mean(np.square(np.asarray(a, np.float64) - np.asarray(b))
                             .reshape(6, -1), axis=-1)
  for pred_type in process.PREDICTIONS:
    pred = process.target(pred_type, x0, eps, alpha, sigma) + 0.3 * jax.random.normal(
        keys[2], x0.shape)
    own = mse(pred, process.target(pred_type, x0, eps, alpha, sigma))
    x0_err = mse(process.to_x0(pred, pred_type, x_t, alpha, sigma), x0)
    eps_err = mse(process.to_eps(pred, pred_type, x_t, alpha, sigma), eps)
    v_err = mse(process.to_v(pred, pred_type, x_t, alpha, sigma), alpha[:, None, None, None]
                * eps - sigma[:, None, None, None] * x0)
    w = lambda name, p=pred_type: np.asarray(process.loss_weight(name, p, jnp.asarray(snr)))
    np.testing.assert_allclose(w("simple") * own, own, rtol=1e-6)
    np.testing.assert_allclose(w("eps_mse") * own, eps_err, rtol=2e-3)
    np.testing.assert_allclose(w("v_mse") * own, v_err, rtol=2e-3)
    np.testing.assert_allclose(w("min_snr") * own, np.minimum(snr, 5.0) * x0_err, rtol=2e-3)


def _oracle(schedule_or_sde, x0, prediction):
  """A 'network' that knows the clean batch x0, so its prediction is exact."""

  def model_fn(x_t, t_B, cond):
    del cond
    if isinstance(schedule_or_sde, schedules.DiscreteSchedule):
      alpha, sigma = schedule_or_sde.alpha_sigma(t_B)
    else:
      alpha, sigma = schedule_or_sde.marginal(t_B)
    a, s = process.bcast(alpha, x_t), process.bcast(sigma, x_t)
    eps = (x_t - a * x0) / s
    if prediction == "score":
      return -eps / s
    return process.target(prediction, x0, eps, alpha, sigma)

  return model_fn


@pytest.mark.parametrize("prediction", process.PREDICTIONS)
@pytest.mark.parametrize("weighting", ["simple", "eps_mse", "v_mse", "min_snr"])
def test_diffusion_loss_is_zero_for_an_exact_model_and_one_for_zero_eps(prediction, weighting):
  schedule = schedules.make_schedule("cosine")
  x0 = jax.random.uniform(jax.random.PRNGKey(3), (512, 2, 2, 1), minval=-1, maxval=1)
  loss, aux = process.diffusion_loss(_oracle(schedule, x0, prediction), schedule, x0,
                                     jax.random.PRNGKey(4), prediction=prediction,
                                     weighting=weighting)
  assert loss.shape == (512,) and aux["t"].shape == (512,)
  assert float(jnp.max(loss)) < 1e-3 * max(1.0, float(jnp.max(aux["mse"])))
  if prediction == "eps" and weighting == "simple":
    zero, _ = process.diffusion_loss(lambda x, t, c: jnp.zeros_like(x), schedule, x0,
                                     jax.random.PRNGKey(4))
    assert abs(float(jnp.mean(zero)) - 1.0) < 5 * math.sqrt(2 / zero.size)  # E[eps^2] = 1


@pytest.mark.parametrize("name", ["vp", "ve"])
@pytest.mark.parametrize("prediction", ["eps", "score", "v"])
def test_sde_loss_is_zero_for_an_exact_model(name, prediction):
  s = sde.make_sde(name)
  x0 = jax.random.uniform(jax.random.PRNGKey(5), (64, 2, 2, 1), minval=-1, maxval=1)
  for weighting in (False, True):
    loss = sde.sde_loss(_oracle(s, x0, prediction), s, x0, jax.random.PRNGKey(6),
                        prediction=prediction, likelihood_weighting=weighting)
    assert loss.shape == (64,)
    assert float(jnp.max(loss)) < 1e-3


def test_vp_sde_is_the_limit_of_the_linear_schedule():
  """Song et al.: beta_i = beta(i / (N-1)) / N, and log abar_i ~ 2 log alpha(t), t = (i+1) / N.

  -log(1 - beta) = beta + beta^2 / 2 + ..: the sum of the beta^2 / 2 terms (up to 0.07 at the
  end of the chain, where log abar = -10) and the O(1/N) offset of the Riemann sum (1e-3 at
  most) separate the two.
  """
  vp = sde.VPSDE()
  lin = schedules.make_schedule("linear")
  i = jnp.arange(1000)
  np.testing.assert_allclose(vp.discrete_beta(i / 999.0), lin.betas_T, rtol=1e-5)
  alpha, _ = vp.marginal((i + 1) / 1000.0)
  np.testing.assert_allclose(2 * jnp.log(alpha), lin.log_alphas_cumprod_T, rtol=1e-2, atol=1e-3)


def test_continuous_vp_matches_the_discrete_linear_schedule():
  """bits/dim integrates the VP SDE; at t = i / (N - 1) its alpha^2 must be the schedule's
  abar_i (the closed form exp(-t^2 (b1 - b0) / 2 - t b0) against the cumulative product)."""
  sched = schedules.make_schedule("linear", 1000)
  vp = sde.continuous_vp(sched)
  i = np.array([0, 10, 100, 500, 999])
  t = i / 999.0
  abar_closed = np.exp(-0.5 * t**2 * (vp.beta_max - vp.beta_min) - t * vp.beta_min)
  abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[i]
  # Equal up to the first step (abar_i has i + 1 betas) and O(1/N) discretisation.
  np.testing.assert_allclose(np.log(abar_closed), np.log(abar), rtol=0.01, atol=1e-3)
  np.testing.assert_allclose(np.asarray(vp.marginal(jnp.asarray(t))[0]) ** 2, abar_closed,
                             rtol=1e-4, atol=1e-7)
  # The log-SNR-matched index is i up to the first step and the O(1/N) discretisation gap.
  index = np.asarray(sde.continuous_to_index(sched, vp)(jnp.asarray(t, jnp.float32)))
  np.testing.assert_allclose(index, i, atol=4.0)
  with pytest.raises(ConfigError, match="linear schedule"):
    sde.continuous_vp(schedules.make_schedule("cosine", 1000))


def test_continuous_cosine_matches_the_discrete_grid():
  cos = schedules.make_schedule("cosine")
  t = np.arange(1, 900) / 1000  # below the 0.999 cap of the betas
  np.testing.assert_allclose(schedules.cosine_alpha_bar(t), cos.alphas_cumprod_T[:899],
                             rtol=1e-5)
  abar = schedules.cosine_alpha_bar(t)
  got = schedules.continuous_log_snr(jnp.asarray(0.5 * np.log(abar), jnp.float32))
  np.testing.assert_allclose(got, np.log(abar / (1 - abar)), rtol=1e-4, atol=1e-4)


def test_bad_input_is_a_one_line_config_error():
  cases = [
      (lambda: schedules.make_schedule("quadratic"), "cosine, linear, scaled_linear"),
      (lambda: schedules.make_timesteps(1000, 10, "uniform"), "leading, trailing, linspace"),
      (lambda: schedules.make_timesteps(1000, 1001), "num_steps must be in [1, 1000]"),
      (lambda: schedules.check_timesteps(np.array([5, 7]), 1000), "strictly decreasing"),
      (lambda: process.to_x0(jnp.zeros(1), "noise", jnp.zeros(1), 1.0, 0.0), "eps, x0, v"),
      (lambda: process.loss_weight("p2", "eps", jnp.ones(1)), "eps_mse, min_snr, simple"),
      (lambda: samplers.sample("euler", None, None, (1,), None), "ddim, ddpm, dpm_solver_2m"),
      (lambda: samplers.sample("ddim", None, schedules.make_schedule("linear"), (1,), None,
                               eta=0.0, variance="fixed_small"), "no option(s) variance"),
      (lambda: sde.make_sde("vp", sigma_max=50.0), "beta_max, beta_min"),
      (lambda: sde.make_sde("subvp"), "choose one of: ve, vp"),
      (lambda: samplers.parse_sampler("ddim50"), "must be NAME-STEPS, e.g. ddim-50"),
      (lambda: samplers.parse_sampler("euler-10"), "choose one of: ddim, ddpm"),
  ]
  for fn, fragment in cases:
    with pytest.raises(ConfigError) as err:
      fn()
    assert fragment in str(err.value) and "\n" not in str(err.value)
