"""The shared train step: sharding modes agree, accumulation is exact, precision, EMA, clipping."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_lm_config
from jax.sharding import PartitionSpec as P

from seqgen_jax.errors import ConfigError
from seqgen_jax.tasks import build_task
from seqgen_jax.train import sharding as sharding_lib
from seqgen_jax.train.optim import build_optimizer
from seqgen_jax.train.state import create_train_state
from seqgen_jax.train.step import make_train_step


def _sgd_config():
  # SGD, not Adam: Adam divides by sqrt(v), which turns float round-off in (theoretically) zero
  # gradients (e.g. the key bias) into lr-sized updates and hides real disagreements.
  return tiny_lm_config(optimizer__name="sgd", optimizer__lr=0.1, optimizer__momentum=0.9)


def _setup(config, devices, *, mode="jit", grad_accum=1, fsdp=1, compute_dtype="float32",
           ema_decay=None):
  mesh = sharding_lib.make_mesh(fsdp, devices)
  task = build_task(config)
  tx, schedule = build_optimizer(config.optimizer, config.train.num_steps)
  init_fn = functools.partial(create_train_state, task.init_params, tx,
                              use_ema=ema_decay is not None)
  abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  shardings = sharding_lib.state_shardings(abstract, mesh)
  state = jax.jit(init_fn, out_shardings=shardings)(jax.random.PRNGKey(0))
  step = make_train_step(task.loss_fn, tx, mesh=mesh, state_sharding=shardings,
                         lr_schedule=schedule, grad_accum_steps=grad_accum,
                         clip_grad_norm=config.optimizer.clip_grad_norm,
                         compute_dtype=compute_dtype, ema_decay=ema_decay, mode=mode)
  return mesh, task, state, step


def _run(config, devices, batches, **kw):
  mesh, _, state, step = _setup(config, devices, **kw)
  metrics = []
  for b in batches:
    state, m = step(state, sharding_lib.make_global_batch(b, mesh))
    metrics.append(jax.device_get(m))
  return jax.device_get(state), metrics


def _batches(config, n, *, ragged_weights=False):
  task = build_task(config)
  src = task.train_source()
  out = []
  for i in range(n):
    b = src.batch(i, slice(0, config.train.batch_size))
    if ragged_weights:  # unequal numbers of scored tokens per row: accumulation must weight them
      rng = np.random.default_rng(i)
      b["weights"] = b["weights"] * (rng.random(b["weights"].shape) < 0.5)
      b["weights"][0] = 0.0
      b["weights"][1, -1] = 1.0
    out.append(b)
  return out


def test_one_device_equals_eight_devices_jit_and_shard_map():
  config = _sgd_config()
  batches = _batches(config, 3)
  devs = jax.devices()
  assert len(devs) == 8
  one, m1 = _run(config, devs[:1], batches)
  jit8, m8 = _run(config, devs, batches)
  smap8, ms = _run(config, devs, batches, mode="shard_map")
  chex.assert_trees_all_close(one.params, jit8.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(one.params, smap8.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(one.opt_state, smap8.opt_state, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose([m["loss"] for m in m1], [m["loss"] for m in ms], rtol=1e-5)
  # The params really moved (a step that did nothing would also "agree").
  init = _setup(config, devs[:1])[2]
  diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), init.params, one.params)
  assert max(jax.tree.leaves(diff)) > 1e-3
  assert int(one.step) == int(jit8.step) == int(smap8.step) == 3


@pytest.mark.parametrize("mode", ["jit", "shard_map"])
def test_grad_accumulation_equals_full_batch(mode):
  config = _sgd_config()
  batches = _batches(config, 2, ragged_weights=True)
  full, mf = _run(config, jax.devices(), batches, mode=mode)
  accum, ma = _run(config, jax.devices()[:2] if mode == "shard_map" else jax.devices(), batches,
                   mode=mode, grad_accum=4)
  chex.assert_trees_all_close(full.params, accum.params, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose([m["loss"] for m in mf], [m["loss"] for m in ma], rtol=1e-5)
  np.testing.assert_allclose([m["grad_norm"] for m in mf], [m["grad_norm"] for m in ma],
                             rtol=1e-4)


def test_fsdp_shards_params_and_matches_data_parallel():
  config = tiny_lm_config()  # Adam: its moments must be sharded like the params
  batches = _batches(config, 2)
  dp, m_dp = _run(config, jax.devices(), batches)
  mesh, _, state, step = _setup(config, jax.devices(), fsdp=4)
  init_params = jax.device_get(state.params)
  specs = [x.sharding.spec for x in jax.tree.leaves(state.params)]
  assert any(sharding_lib.FSDP in tuple(s) for s in specs), specs
  # Adam's moments are sharded like the params.
  mu_specs = [x.sharding.spec for x in jax.tree.leaves(state.opt_state)]
  assert sum(sharding_lib.FSDP in tuple(s) for s in mu_specs) >= 2 * sum(
      sharding_lib.FSDP in tuple(s) for s in specs)
  # Each device really holds a quarter of every sharded array (not a replicated copy).
  dev0 = jax.devices()[0]
  for x in jax.tree.leaves((state.params, state.opt_state)):
    (shard,) = [s for s in x.addressable_shards if s.device == dev0]
    dims = [i for i, a in enumerate(x.sharding.spec) if a == sharding_lib.FSDP]
    expected = list(x.shape)
    for i in dims:
      expected[i] //= 4
    assert list(shard.data.shape) == expected
  metrics = []
  for b in batches:
    state, m = step(state, sharding_lib.make_global_batch(b, mesh))
    metrics.append(jax.device_get(m))
  state = jax.device_get(state)
  chex.assert_trees_all_close(dp.params, state.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(dp.opt_state, state.opt_state, rtol=1e-5, atol=1e-7)
  for key in ("loss", "grad_norm", "accuracy"):
    np.testing.assert_allclose([m[key] for m in metrics], [m[key] for m in m_dp], rtol=1e-5)
  # The params moved, so agreeing is not trivial.
  moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), init_params, state.params)
  assert max(jax.tree.leaves(moved)) > 1e-3


def test_bf16_compute_keeps_float32_master_params():
  config = tiny_lm_config()
  batches = _batches(config, 2)
  f32, m32 = _run(config, jax.devices(), batches)
  bf16, m16 = _run(config, jax.devices(), batches, compute_dtype="bfloat16")
  for x in jax.tree.leaves(bf16.params) + jax.tree.leaves(bf16.opt_state):
    if jnp.issubdtype(x.dtype, jnp.floating):
      assert x.dtype == jnp.float32
  # Close to float32 training, but not identical: the matmuls really ran in bfloat16.
  np.testing.assert_allclose(m32[0]["loss"], m16[0]["loss"], rtol=2e-2)
  assert m32[0]["loss"] != m16[0]["loss"]
  mesh, task, state, step = _setup(config, jax.devices(), compute_dtype="bfloat16")
  hlo = step.lower(state, sharding_lib.make_global_batch(batches[0], mesh)).as_text()
  assert "bf16" in hlo and "dot_general" in hlo


def test_ema_clipping_and_lr_against_closed_form():
  """Quadratic loss, SGD: every quantity of the step has a closed form."""
  mesh = sharding_lib.make_mesh(1, jax.devices())
  target = np.arange(8, dtype=np.float32)

  def loss_fn(params, batch, rng):
    del rng
    return 0.5 * jnp.sum((params["w"] - batch["x"].mean(0)) ** 2), {}

  lr = 0.5
  tx = optax.sgd(lr)
  state = create_train_state(lambda r: {"w": jnp.zeros(8)}, tx, jax.random.PRNGKey(0),
                             use_ema=True)
  shardings = sharding_lib.state_shardings(state, mesh)
  step = make_train_step(loss_fn, tx, mesh=mesh, state_sharding=shardings,
                         lr_schedule=lambda s: lr, clip_grad_norm=1.0, ema_decay=0.9)
  batch = {"x": np.tile(target, (8, 1))}
  new, metrics = step(state, sharding_lib.make_global_batch(batch, mesh))
  grad = -target  # d/dw at w=0
  norm = np.linalg.norm(grad)
  np.testing.assert_allclose(metrics["grad_norm"], norm, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss"], 0.5 * np.sum(target**2), rtol=1e-6)
  np.testing.assert_allclose(metrics["lr"], lr)
  w1 = -lr * grad / norm  # clipped to norm 1
  np.testing.assert_allclose(new.params["w"], w1, rtol=1e-6)
  np.testing.assert_allclose(new.ema_params["w"], 0.9 * 0 + 0.1 * w1, rtol=1e-6)
  assert int(new.step) == 1
  # With the warm-up the first updates use min(0.9, (1 + n) / (10 + n)): 2/11, then 3/12.
  step_w = make_train_step(loss_fn, tx, mesh=mesh, state_sharding=shardings,
                           lr_schedule=lambda s: lr, clip_grad_norm=1.0, ema_decay=0.9,
                           ema_warmup=True)
  state = create_train_state(lambda r: {"w": jnp.zeros(8)}, tx, jax.random.PRNGKey(0),
                             use_ema=True)
  s1, _ = step_w(state, sharding_lib.make_global_batch(batch, mesh))
  np.testing.assert_allclose(s1.ema_params["w"], (2 / 11) * 0 + (9 / 11) * w1, rtol=1e-6)
  w2 = np.asarray(s1.params["w"])
  s2, _ = step_w(s1, sharding_lib.make_global_batch(batch, mesh))
  want = (3 / 12) * (9 / 11) * w1 + (9 / 12) * np.asarray(s2.params["w"])
  np.testing.assert_allclose(s2.ema_params["w"], want, rtol=1e-5)
  assert not np.allclose(w2, s2.params["w"])


def test_batch_not_divisible_names_both_numbers():
  mesh = sharding_lib.make_mesh(1, jax.devices())
  with pytest.raises(ConfigError, match=r"global batch size 12 .* 8 data-parallel devices"):
    sharding_lib.check_batch_size(12, mesh)
  with pytest.raises(ConfigError, match=r"grad_accum_steps=3"):
    sharding_lib.check_batch_size(16, mesh, 3)


def test_shard_map_rejects_sharded_params():
  with pytest.raises(ConfigError, match="data-parallel only"):
    _setup(tiny_lm_config(), jax.devices(), mode="shard_map", fsdp=2)


def test_unknown_step_mode_lists_modes():
  mesh = sharding_lib.make_mesh(1, jax.devices())
  with pytest.raises(ConfigError, match="unknown step mode 'pmap'; choose one of: jit, shard_map"):
    make_train_step(lambda p, b, r: (0.0, {}), optax.sgd(0.1), mesh=mesh, state_sharding=None,
                    mode="pmap")


def test_process_rows_cover_the_batch_single_process():
  mesh = sharding_lib.make_mesh(2, jax.devices())
  assert sharding_lib.process_batch_rows(mesh, 32) == (0, 32)
  assert sharding_lib.fsdp_spec((64, 4096), 4) == P(None, sharding_lib.FSDP)
  assert sharding_lib.fsdp_spec((7,), 4) == P()
