"""Golden tests of the diffusion library against diffusers' schedulers (PyTorch, CPU).

Same model output, timestep, schedule and noise on both sides. diffusers keeps its schedule in
float32, where 1 - abar_t / abar_s loses digits to cancellation near t = 0; ours is derived in
float64 (log-space differences) and stored as float32. The step comparisons therefore hand
diffusers our betas as a float64 schedule and evaluate its step code in float64, which makes it
the exact reference for our float32 steps (tolerance: 2e-5 of the output's scale). One test also
runs diffusers' own float32 schedule, with the looser tolerance that its rounding needs.
"""

import diffusers
import diffusers.schedulers.scheduling_ddpm as diffusers_ddpm
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from seqgen_jax.diffusion import process, samplers, schedules
from seqgen_jax.errors import ConfigError

DIFFUSERS_PRED = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
DIFFUSERS_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2",
                      "scaled_linear": "scaled_linear"}
SHAPE_NCHW = (2, 3, 4, 4)


def _nhwc(a: np.ndarray) -> jax.Array:
  return jnp.asarray(np.transpose(a, (0, 2, 3, 1)), jnp.float32)


def _nchw(a) -> np.ndarray:
  return np.transpose(np.asarray(a, np.float64), (0, 3, 1, 2))


def _f64(sched, schedule: schedules.DiscreteSchedule):
  """Puts our betas into a diffusers scheduler as a float64 schedule."""
  sched.betas = torch.from_numpy(np.asarray(schedule.betas_T, np.float64))
  sched.alphas = 1.0 - sched.betas
  sched.alphas_cumprod = torch.cumprod(sched.alphas, 0)
  sched.one = torch.tensor(1.0, dtype=torch.float64)
  sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
  return sched


def _arrays(seed=0):
  rs = np.random.default_rng(seed)
  return [rs.standard_normal(SHAPE_NCHW) for _ in range(3)]  # x_t, model output, noise


def _close(got, ref, rel=2e-5):
  got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
  np.testing.assert_allclose(got, ref, rtol=0, atol=rel * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("name", ["linear", "cosine", "scaled_linear"])
def test_alphas_cumprod_match_diffusers(name):
  kw = {"beta_start": 0.00085, "beta_end": 0.012} if name == "scaled_linear" else {}
  ref = diffusers.DDPMScheduler(beta_schedule=DIFFUSERS_SCHEDULE[name], **kw)
  ours = schedules.make_schedule(name, 1000)
  np.testing.assert_allclose(np.asarray(ours.betas_T), ref.betas.numpy(), rtol=1e-6, atol=1e-9)
  # diffusers' float32 cumprod drifts by ~1e-5 relative over 1000 steps; ours is float64-exact.
  np.testing.assert_allclose(np.asarray(ours.alphas_cumprod_T), ref.alphas_cumprod.numpy(),
                             rtol=2e-5, atol=1e-7)
  # And to the float64 formulas themselves (Ho et al.; Nichol & Dhariwal eq. 17).
  if name == "cosine":
    f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
    u = np.arange(1001) / 1000
    betas = np.minimum(1 - f(u[1:]) / f(u[:-1]), 0.999)
  elif name == "linear":
    betas = np.linspace(1e-4, 0.02, 1000)
  else:
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
  exact = np.cumprod(1.0 - betas)
  np.testing.assert_allclose(np.asarray(ours.alphas_cumprod_T), exact, rtol=2e-6)
  log_snr = np.log(exact / (1 - exact))
  np.testing.assert_allclose(np.asarray(ours.log_snr_T), log_snr, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 7, 50, 1000])
def test_timestep_spacings_match_diffusers(spacing, n):
  ref = diffusers.DDIMScheduler(timestep_spacing=spacing)
  ref.set_timesteps(n)
  np.testing.assert_array_equal(schedules.make_timesteps(1000, n, spacing), ref.timesteps.numpy())


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_step_matches_diffusers(name, prediction, variance, clip, monkeypatch):
  schedule = schedules.make_schedule(name)
  x, out, z = _arrays()
  ref = _f64(diffusers.DDPMScheduler(beta_schedule=DIFFUSERS_SCHEDULE[name], variance_type=variance,
                                     prediction_type=DIFFUSERS_PRED[prediction],
                                     clip_sample=clip), schedule)
  # diffusers draws the step's noise inside step(); hand it ours.
  monkeypatch.setattr(diffusers_ddpm, "randn_tensor", lambda *a, **k: torch.from_numpy(z))
  # Eager, not jitted: 72 parametrised cases would otherwise compile 72 times.
  step = lambda o, x, t, tp, z: samplers.ddpm_step(
      o, x, jnp.int32(t), jnp.int32(tp), z, schedule, prediction=prediction, variance=variance,
      clip_x0=1.0 if clip else None)[0]
  for t in (999, 640, 1, 0):  # full chain: previous timestep t - 1
    want = ref.step(torch.from_numpy(out), t, torch.from_numpy(x)).prev_sample.numpy()
    _close(_nchw(step(_nhwc(out), _nhwc(x), t, t - 1, _nhwc(z))), want)
  ref.set_timesteps(20)  # strided chain (leading spacing): 950 -> 900 -> .. -> 0
  ts = ref.timesteps.numpy()
  for i in (0, 7, 18, 19):
    tp = ts[i + 1] if i + 1 < len(ts) else -1
    want = ref.step(torch.from_numpy(out), int(ts[i]), torch.from_numpy(x)).prev_sample.numpy()
    _close(_nchw(step(_nhwc(out), _nhwc(x), int(ts[i]), int(tp), _nhwc(z))), want)


def test_ddpm_step_matches_diffusers_float32_schedule(monkeypatch):
  """diffusers' own float32 schedule: agreement to its rounding (1 - abar_1/abar_0 in float32)."""
  schedule = schedules.make_schedule("linear")
  x, out, z = (a.astype(np.float32) for a in _arrays(1))
  ref = diffusers.DDPMScheduler(prediction_type="epsilon", clip_sample=False)
  monkeypatch.setattr(diffusers_ddpm, "randn_tensor", lambda *a, **k: torch.from_numpy(z))
  for t in (999, 500, 10, 1):
    want = ref.step(torch.from_numpy(out), t, torch.from_numpy(x)).prev_sample.numpy()
    got, _ = samplers.ddpm_step(_nhwc(out), _nhwc(x), t, t - 1, _nhwc(z), schedule)
    _close(_nchw(got), want, rel=1e-3)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("clip,clipped_output", [(False, False), (True, False), (True, True)])
def test_ddim_step_matches_diffusers(name, prediction, eta, clip, clipped_output):
  schedule = schedules.make_schedule(name)
  x, out, z = _arrays(2)
  ref = _f64(diffusers.DDIMScheduler(beta_schedule=DIFFUSERS_SCHEDULE[name],
                                     prediction_type=DIFFUSERS_PRED[prediction],
                                     clip_sample=clip), schedule)
  ref.set_timesteps(50)
  kw = {"use_clipped_model_output": True} if clipped_output else {}  # default: as diffusers'
  step = lambda o, x, t, tp, z: samplers.ddim_step(
      o, x, jnp.int32(t), jnp.int32(tp), z, schedule, prediction=prediction, eta=eta,
      clip_x0=1.0 if clip else None, **kw)[0]
  for t in ref.timesteps.numpy()[[0, 10, 48, 49]]:
    # diffusers' previous timestep is t - T // n.
    want = ref.step(torch.from_numpy(out), int(t), torch.from_numpy(x), eta=eta,
                    variance_noise=torch.from_numpy(z), **kw).prev_sample.numpy()
    _close(_nchw(step(_nhwc(out), _nhwc(x), int(t), int(t) - 20, _nhwc(z))), want)


def test_clipped_model_output_changes_the_ddim_step():
  """With clipping active, the two eps choices give different steps (the switch is real)."""
  schedule = schedules.make_schedule("linear")
  x, out, z = (_nhwc(a) for a in _arrays(3))
  out = 3.0 * out  # a predicted x0 far outside [-1, 1]: clipping bites
  step = lambda c: samplers.ddim_step(out, x, jnp.int32(500), jnp.int32(480), z, schedule,
                                      eta=0.5, clip_x0=1.0, use_clipped_model_output=c)[0]
  assert float(jnp.max(jnp.abs(step(True) - step(False)))) > 0.1


def _model_np(x, t):
  """A smooth nonlinear stand-in network, written once for torch (float64) and once for JAX."""
  return 0.8 * np.tanh(x) + 0.05 * x * np.cos(t / 150.0)


def _model_jax(x_BHWC, t_B, cond):
  del cond
  return 0.8 * jnp.tanh(x_BHWC) + 0.05 * x_BHWC * jnp.cos(t_B[:, None, None, None] / 150.0)


def _initial_and_keys(rng, shape, n):
  """The x_T and per-step keys our samplers derive from ``rng`` (see samplers._initial)."""
  rng, k0 = jax.random.split(rng)
  return jax.random.normal(k0, shape, jnp.float32), jax.random.split(rng, n)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_ddim_loop_matches_diffusers_loop(prediction):
  schedule = schedules.make_schedule("cosine")
  shape = (2, 4, 4, 3)
  rng = jax.random.PRNGKey(3)
  x_T, _ = _initial_and_keys(rng, shape, 25)
  ref = _f64(diffusers.DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False,
                                     prediction_type=DIFFUSERS_PRED[prediction]), schedule)
  ref.set_timesteps(25)
  x = torch.from_numpy(_nchw(x_T))
  for t in ref.timesteps:
    x = ref.step(torch.from_numpy(_model_np(x.numpy(), float(t))), t, x).prev_sample
  ours = jax.jit(lambda r: samplers.ddim_sample(_model_jax, schedule, shape, r, num_steps=25,
                                                prediction=prediction))(rng)
  _close(_nchw(ours), x.numpy(), rel=1e-4)


def _diffusers_ddim_loop(ref, x_T, n, eta, noise, clipped_output):
  """diffusers' DDIMScheduler loop over the stand-in network, with our per-step noise."""
  ref.set_timesteps(n)
  x = torch.from_numpy(_nchw(x_T))
  for i, t in enumerate(ref.timesteps):
    x = ref.step(torch.from_numpy(_model_np(x.numpy(), float(t))), t, x, eta=eta,
                 variance_noise=torch.from_numpy(_nchw(noise[i])),
                 use_clipped_model_output=clipped_output).prev_sample
  return x.numpy()


LOOPS = [  # spacing, steps, steps_offset, eta, clip_sample, use_clipped_model_output
    ("trailing", 30, 0, 0.0, False, False), ("trailing", 30, 0, 0.7, True, False),
    ("linspace", 17, 0, 0.0, True, True), ("linspace", 17, 0, 1.0, False, False),
    ("leading", 23, 1, 0.3, True, False), ("leading", 23, 1, 0.0, True, True)]


@pytest.mark.parametrize("spacing,n,offset,eta,clip,clipped_output", LOOPS)
def test_ddim_spacing_loops_match_diffusers(spacing, n, offset, eta, clip, clipped_output):
  """Whole DDIM loops against DDIMScheduler(timestep_spacing, steps_offset, clip_sample) with
  diffusers' previous timestep t - T // n, at a shape no other test uses; the per-step noise is
  the documented key schedule (samplers.sampler_noise), handed to diffusers as variance_noise.
  Tolerance 1e-4 of the output's scale (float32 over up to 30 chained steps; measured max
  |ours - diffusers| / max |diffusers| <= 5.3e-7, against 1.3e-2 .. 0.40 for the walk that
  steps to the next entry of the sequence)."""
  schedule = schedules.make_schedule("linear")
  shape = (3, 5, 5, 2)
  rng = jax.random.PRNGKey(7)
  x_T, noise = samplers.sampler_noise(rng, shape, n)
  ref = _f64(diffusers.DDIMScheduler(timestep_spacing=spacing, steps_offset=offset,
                                     clip_sample=clip), schedule)
  want = _diffusers_ddim_loop(ref, x_T, n, eta, noise, clipped_output)
  kw = dict(num_steps=n, spacing=spacing, steps_offset=offset, eta=eta,
            clip_x0=1.0 if clip else None, use_clipped_model_output=clipped_output)
  ours = jax.jit(lambda r: samplers.ddim_sample(_model_jax, schedule, shape, r, **kw))(rng)
  _close(_nchw(ours), want, rel=1e-4)
  if spacing != "leading":
    # Stepping to the next entry of the sequence instead (explicit timesteps) is another walk.
    ts = schedules.make_timesteps(1000, n, spacing)
    other = samplers.ddim_sample(_model_jax, schedule, shape, rng, timesteps=ts, eta=eta,
                                 clip_x0=kw["clip_x0"], use_clipped_model_output=clipped_output)
    assert np.abs(_nchw(other) - want).max() / np.abs(want).max() > 1e-2


def test_explicit_noise_drives_ddim_and_ddpm_like_diffusers(monkeypatch):
  """noise= takes an array per step: numpy noise handed to diffusers and to us gives the same
  loop; and a sampler run from a key equals the run fed sampler_noise(key) (the rng then
  unused: a different one is passed)."""
  schedule = schedules.make_schedule("cosine")
  shape, n = (2, 3, 3, 4), 12
  rs = np.random.default_rng(9)
  x_T = rs.standard_normal(shape).astype(np.float32)
  noise = rs.standard_normal((n, *shape)).astype(np.float32)
  ref = _f64(diffusers.DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False,
                                     timestep_spacing="trailing"), schedule)
  want = _diffusers_ddim_loop(ref, x_T, n, 0.8, noise, False)
  ours = samplers.ddim_sample(_model_jax, schedule, shape, jax.random.PRNGKey(0), num_steps=n,
                              spacing="trailing", eta=0.8, x_start=jnp.asarray(x_T),
                              noise=jnp.asarray(noise))
  _close(_nchw(ours), want, rel=1e-4)
  ref = _f64(diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False,
                                     timestep_spacing="linspace"), schedule)
  ref.set_timesteps(n)
  x = torch.from_numpy(_nchw(x_T))
  for i, t in enumerate(ref.timesteps):
    monkeypatch.setattr(diffusers_ddpm, "randn_tensor",
                        lambda *a, i=i, **k: torch.from_numpy(_nchw(noise[i])))
    x = ref.step(torch.from_numpy(_model_np(x.numpy(), float(t))), t, x).prev_sample
  ours = samplers.ddpm_sample(_model_jax, schedule, shape, jax.random.PRNGKey(0), num_steps=n,
                              spacing="linspace", x_start=jnp.asarray(x_T),
                              noise=jnp.asarray(noise))
  _close(_nchw(ours), x.numpy(), rel=1e-4)
  key = jax.random.PRNGKey(5)
  x_T, drawn = samplers.sampler_noise(key, shape, n)
  for fn in (samplers.ddim_sample, samplers.ddpm_sample):
    kw = dict(num_steps=n, **({"eta": 1.0} if fn is samplers.ddim_sample else {}))
    # Equal up to float32 rounding (XLA fuses the in-loop draw into the update differently).
    np.testing.assert_allclose(fn(_model_jax, schedule, shape, key, **kw),
                               fn(_model_jax, schedule, shape, jax.random.PRNGKey(1),
                                  x_start=x_T, noise=drawn, **kw), rtol=1e-5, atol=1e-5)
  with pytest.raises(ConfigError, match=r"noise has shape \(3, 2, 3, 3, 4\), expected"):
    samplers.ddim_sample(_model_jax, schedule, shape, key, num_steps=n, noise=drawn[:3])


def test_ddpm_loop_matches_diffusers_loop_with_the_same_noise(monkeypatch):
  schedule = schedules.make_schedule("linear")
  shape, n = (2, 4, 4, 3), 30
  rng = jax.random.PRNGKey(4)
  x_T, keys = _initial_and_keys(rng, shape, n)
  # Our loop draws each step's noise from jax.random.split(key)[0].
  noises = [_nchw(jax.random.normal(jax.random.split(k)[0], shape)) for k in keys]
  ref = _f64(diffusers.DDPMScheduler(clip_sample=False), schedule)
  ref.set_timesteps(n)
  x = torch.from_numpy(_nchw(x_T))
  for i, t in enumerate(ref.timesteps):
    monkeypatch.setattr(diffusers_ddpm, "randn_tensor",
                        lambda *a, i=i, **k: torch.from_numpy(noises[i]))
    x = ref.step(torch.from_numpy(_model_np(x.numpy(), float(t))), t, x).prev_sample
  ours = jax.jit(lambda r: samplers.ddpm_sample(_model_jax, schedule, shape, r,
                                                num_steps=n))(rng)
  _close(_nchw(ours), x.numpy(), rel=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 copy= note in diffusers
@pytest.mark.parametrize("name,prediction", [("linear", "eps"), ("cosine", "v")])
def test_dpm_solver_2m_loop_matches_diffusers(name, prediction):
  schedule = schedules.make_schedule(name)
  shape, n = (2, 4, 4, 3), 12
  rng = jax.random.PRNGKey(5)
  x_T, _ = _initial_and_keys(rng, shape, n)
  ts = schedules.make_timesteps(1000, n, "trailing")
  ref = diffusers.DPMSolverMultistepScheduler(
      beta_schedule=DIFFUSERS_SCHEDULE[name], prediction_type=DIFFUSERS_PRED[prediction],
      algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
      final_sigmas_type="zero")
  _f64(ref, schedule)
  ref.set_timesteps(timesteps=ts.tolist())
  x = torch.from_numpy(_nchw(x_T))
  for t in ref.timesteps:
    x = ref.step(torch.from_numpy(_model_np(x.numpy(), float(t))), t, x).prev_sample
  ours = jax.jit(lambda r: samplers.dpm_solver_2m_sample(
      _model_jax, schedule, shape, r, timesteps=ts, prediction=prediction))(rng)
  # diffusers keeps its sigmas in float32.
  _close(_nchw(ours), x.numpy(), rel=2e-4)


def test_forward_process_and_velocity_match_diffusers():
  schedule = schedules.make_schedule("linear")
  ref = _f64(diffusers.DDPMScheduler(), schedule)
  x0, noise, _ = _arrays(6)
  t = np.array([0, 999])
  want = ref.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t))
  got = process.q_sample_discrete(schedule, _nhwc(x0), jnp.asarray(t), _nhwc(noise))
  _close(_nchw(got), want.numpy())
  want_v = ref.get_velocity(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t))
  got_v = process.target("v", _nhwc(x0), _nhwc(noise), *schedule.alpha_sigma(jnp.asarray(t)))
  _close(_nchw(got_v), want_v.numpy())
