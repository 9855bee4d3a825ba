"""Classifier-free guidance, label dropout, inpainting (incl. RePaint) and SDEdit."""

import functools
import math

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
  marginal_moments,
  sde_model,
)

from seqgen_jax.diffusion import editing, guidance, ode, pc, samplers, schedules, sde
from seqgen_jax.errors import ConfigError

LIN = schedules.make_schedule("linear")


def _labelled_model(x, t_B, cond):
  """A stand-in network whose output depends on the label (null label 10 included)."""
  return jnp.tanh(x) * (1.0 + cond[:, None, None, None] / 10.0) + 1e-3 * t_B[:, None, None, None]


def test_classifier_free_guidance_is_the_stated_combination_in_one_call():
  calls = []

  def model_fn(x, t_B, cond):
    calls.append(x.shape[0])
    return _labelled_model(x, t_B, cond)

  x = jax.random.normal(jax.random.PRNGKey(0), (5, *SHAPE))
  t = jnp.arange(5) * 100
  labels = jnp.array([0, 3, 7, 9, 1])
  null = guidance.null_label(10)
  for w in (0.0, 1.5, 4.0):
    calls.clear()
    got = guidance.classifier_free_guidance(model_fn, w, null)(x, t, labels)
    assert calls == [10]  # both branches in one batched call
    cond_out = _labelled_model(x, t, labels)
    uncond_out = _labelled_model(x, t, jnp.full((5,), null))
    np.testing.assert_allclose(got, (1 + w) * cond_out - w * uncond_out, rtol=1e-6, atol=1e-6)


def test_guided_model_runs_inside_a_sampler():
  """Guidance wraps model_fn, so any sampler takes it; the labels reach every call."""
  guided = guidance.classifier_free_guidance(_labelled_model, 2.0, guidance.null_label(10))
  run = lambda labels: samplers.ddim_sample(guided, LIN, (4, *SHAPE), jax.random.PRNGKey(1),
                                            cond=labels, num_steps=3)
  x = run(jnp.arange(4))
  assert x.shape == (4, *SHAPE) and bool(jnp.all(jnp.isfinite(x)))
  assert not np.allclose(x, run(jnp.arange(4) + 5))


def test_label_dropout_rate_and_null_class():
  labels = jax.random.randint(jax.random.PRNGKey(2), (20000,), 0, 10)
  dropped = guidance.drop_labels(labels, jax.random.PRNGKey(3), 0.15, num_classes=10)
  is_null = np.asarray(dropped == 10)
  assert abs(is_null.mean() - 0.15) < 5 * math.sqrt(0.15 * 0.85 / labels.size)
  np.testing.assert_array_equal(np.asarray(dropped)[~is_null], np.asarray(labels)[~is_null])


MASK = jnp.asarray(np.array([1, 0, 1, 0], bool).reshape(1, *SHAPE))
X_KNOWN = jnp.broadcast_to(jnp.asarray([0.9, 0.0, -0.3, 0.0], jnp.float32).reshape(1, *SHAPE),
                           (64, *SHAPE))
VP = sde.VPSDE(num_steps=30)

INPAINTERS = {
    "ddpm_repaint": (samplers.ddpm_sample, LIN, {"num_steps": 50, "resample": 3}),
    "ddim": (samplers.ddim_sample, LIN, {"num_steps": 20}),
    "dpm_solver_2m": (samplers.dpm_solver_2m_sample, LIN, {"num_steps": 10}),
    "pc": (pc.pc_sample, VP, {}),
    "ode": (ode.ode_sample, VP, {"num_steps": 20}),
}


@pytest.mark.parametrize("name", sorted(INPAINTERS))
def test_inpainting_keeps_the_known_region_exactly(name):
  fn, schedule, kw = INPAINTERS[name]
  model = sde_model(schedule) if isinstance(schedule, sde.VPSDE) else discrete_model(schedule)
  out = jax.jit(lambda r: editing.inpaint(fn, model, schedule, X_KNOWN, MASK, r, **kw))(
      jax.random.PRNGKey(4))
  known = np.broadcast_to(np.asarray(MASK), out.shape)
  np.testing.assert_array_equal(np.asarray(out)[known], np.asarray(X_KNOWN)[known])
  free = np.asarray(out)[~known].reshape(64, -1)
  assert np.all(np.isfinite(free)) and free.std(axis=0).min() > 0.1  # really generated


def test_sdedit_maps_the_data_distribution_to_itself():
  """Noising data to t0 gives exactly p_t0, which a sampler carries back to the data law."""
  x_data = jnp.asarray(np.random.default_rng(5).multivariate_normal(MU, SIGMA, N_SAMPLES)
                       .reshape(N_SAMPLES, *SHAPE), jnp.float32)
  out = jax.jit(lambda r: editing.sdedit(samplers.ddim_sample, discrete_model(LIN), LIN, x_data,
                                         r, strength=0.5, num_steps=100))(jax.random.PRNGKey(6))
  # DDIM's bias at 100 steps is 0.020 for the full chain (test_diffusion_gaussian); half the
  # chain, from a lower noise level, cannot do worse.
  check_moments(out, 0.03)
  s = sde.VPSDE()
  out = jax.jit(lambda r: editing.sdedit(ode.ode_sample, sde_model(s), s, x_data, r,
                                         strength=0.5, num_steps=25))(jax.random.PRNGKey(7))
  check_moments(out, 0.003, *marginal_moments(s, 1e-3))


def test_sdedit_strength_sets_how_far_the_output_moves():
  x = jnp.asarray(np.random.default_rng(8).multivariate_normal(MU, SIGMA, 256)
                  .reshape(256, *SHAPE), jnp.float32)
  run = jax.jit(functools.partial(editing.sdedit, samplers.ddim_sample, discrete_model(LIN), LIN,
                                  x, num_steps=25), static_argnames="strength")
  moved = [float(jnp.sqrt(jnp.mean(jnp.square(run(jax.random.PRNGKey(9), strength=s) - x))))
           for s in (0.04, 1.0)]
  # Strength 0.04 runs the last of 25 DDIM steps, from t = 0 (noise std 0.01): barely moves. At
  # strength 1 the output is a fresh sample: RMS distance sqrt(2 tr(Sigma) / D).
  fresh = math.sqrt(2 * np.trace(SIGMA) / D)
  assert moved[0] < 0.05 * fresh, (moved, fresh)
  assert abs(moved[1] - fresh) < 0.15 * fresh, (moved, fresh)
  with pytest.raises(ConfigError, match="strength must be in"):
    editing.sdedit(samplers.ddim_sample, discrete_model(LIN), LIN, x, jax.random.PRNGKey(0),
                   strength=0.0)
