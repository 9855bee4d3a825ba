"""make_train_step: the one jitted training step every task uses.

A task supplies ``loss_fn(params, batch, rng) -> (loss, aux)`` where ``loss`` is a mean over the
(micro-)batch and ``aux`` is a dict of scalar metrics (also means). If ``aux`` holds ``"weight"``
(the denominator of that mean, e.g. the number of target tokens), micro-batches and devices are
combined with those weights, so k micro-batches of B/k give exactly the update of one batch of B
even when masks make the micro-batches unequal.

Two ways to run the same step:
  * ``mode="jit"``: one ``jax.jit`` over the global batch with explicit NamedShardings; XLA inserts
    the collectives (and FSDP's gathers / reduce-scatters when params are sharded).
  * ``mode="shard_map"``: the pmap-style step written per device with ``jax.shard_map``; gradients
    are combined with an explicit ``psum`` over the data axes. Data-parallel only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from seqgen_jax.dtypes import cast_floating, compute_dtype_from_name
from seqgen_jax.errors import ConfigError
from seqgen_jax.train import sharding as sharding_lib
from seqgen_jax.train.state import TrainState

PyTree = Any
Batch = PyTree
Metrics = dict[str, jax.Array]
LossFn = Callable[[PyTree, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
STEP_MODES = ("jit", "shard_map")


def _split_micro(batch: Batch, k: int) -> Batch:
  """(B, ...) -> (k, B/k, ...) with micro-batch j = rows j, j+k, j+2k, ...

  Taking every k-th row (rather than contiguous blocks) keeps each micro-batch spread over all
  devices: the reshape (B,) -> (B/k, k) splits inside each device's contiguous shard and the
  swap of axes moves no data between devices.
  """
  return jax.tree.map(lambda x: jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1),
                      batch)


def _weighted_grads(loss_fn: LossFn, params: PyTree, batch: Batch, rng: jax.Array, k: int,
                    compute_dtype: jnp.dtype):
  """Sums of weight * (loss, grads, aux) and of weights over k micro-batches (a lax.scan)."""

  def one(micro_batch, micro_rng):
    def f(p):
      loss, aux = loss_fn(cast_floating(p, compute_dtype), micro_batch, micro_rng)
      return loss.astype(jnp.float32), aux

    (loss, aux), grads = jax.value_and_grad(f, has_aux=True)(params)
    aux = dict(aux)
    w = jnp.asarray(aux.pop("weight", 1.0), jnp.float32)
    aux = {name: jnp.asarray(v, jnp.float32) * w for name, v in aux.items()}
    grads = jax.tree.map(lambda g: g.astype(jnp.float32) * w, grads)
    return w, loss * w, grads, aux

  if k == 1:
    return one(batch, rng)

  micro = _split_micro(batch, k)
  rngs = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(k))
  # The first micro-batch seeds the carry, so its types (incl. shard_map's per-device
  # "varying" annotation) match the body's outputs without hand-made zeros.
  first = one(jax.tree.map(lambda x: x[0], micro), rngs[0])

  def body(acc, xs):
    return jax.tree.map(jnp.add, acc, one(*xs)), None

  rest = jax.tree.map(lambda x: x[1:], (micro, rngs))
  acc, _ = jax.lax.scan(body, first, rest)
  return acc


def _apply_update(state: TrainState, tx: optax.GradientTransformation, w, loss_w, grads_w,
                  aux_w, *, clip_grad_norm, ema_decay, ema_warmup, lr_schedule
                  ) -> tuple[TrainState, Metrics]:
  grads = jax.tree.map(lambda g: g / w, grads_w)
  grad_norm = optax.tree.norm(grads)
  if clip_grad_norm is not None:
    scale = jnp.where(grad_norm < clip_grad_norm, 1.0, clip_grad_norm / grad_norm)
    grads = jax.tree.map(lambda g: g * scale, grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema_params = state.ema_params
  if ema_decay is not None:
    if ema_params is None:
      raise ValueError("ema_decay is set but the TrainState has no ema_params")
    decay = jnp.float32(ema_decay)
    if ema_warmup:  # min(decay, (1 + n) / (10 + n)) after n updates: forgets the init quickly
      n = (state.step + 1).astype(jnp.float32)
      decay = jnp.minimum(decay, (1.0 + n) / (10.0 + n))
    ema_params = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)
  metrics = {"loss": loss_w / w, "grad_norm": grad_norm}
  metrics.update({name: v / w for name, v in aux_w.items()})
  if lr_schedule is not None:
    metrics["lr"] = jnp.asarray(lr_schedule(state.step), jnp.float32)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            ema_params=ema_params)
  return new_state, metrics


def make_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    mesh: Mesh,
    state_sharding: PyTree,
    lr_schedule: Callable[[jax.Array], jax.Array] | None = None,
    grad_accum_steps: int = 1,
    clip_grad_norm: float | None = None,
    compute_dtype: jnp.dtype | str = jnp.float32,
    ema_decay: float | None = None,
    ema_warmup: bool = False,
    mode: str = "jit",
    donate: bool = True,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """Builds ``step(state, batch) -> (state, metrics)``, compiled once over ``mesh``.

  Args:
    loss_fn: ``(params, batch, rng) -> (mean loss, aux dict)``; see the module docstring.
    tx: the optax optimizer (without clipping: ``clip_grad_norm`` does it so that the reported
      grad norm is the one before clipping).
    mesh: the (data, fsdp) mesh from ``sharding.make_mesh``.
    state_sharding: NamedShardings for the TrainState (``sharding.state_shardings``).
    lr_schedule: step -> learning rate, reported as the ``lr`` metric.
    grad_accum_steps: number of micro-batches the (per-device) batch is split into.
    clip_grad_norm: global-norm clipping threshold, or None.
    compute_dtype: dtype the params are cast to for the forward/backward pass; the master
      params, optimizer state and gradients stay float32.
    ema_decay: EMA decay of the params, or None for no EMA.
    ema_warmup: use min(ema_decay, (1 + n) / (10 + n)) at the n-th update (the num_updates
      rule of tf.train.ExponentialMovingAverage), so that a short run's EMA does not keep a
      share ema_decay**n of the initial params.
    mode: "jit" (NamedSharding, XLA-partitioned) or "shard_map" (explicit psum, pmap-style).
    donate: donate the input state's buffers to the output state.
  """
  if mode not in STEP_MODES:
    raise ConfigError(f"unknown step mode '{mode}'; choose one of: {', '.join(STEP_MODES)}")
  if isinstance(compute_dtype, str):
    compute_dtype = compute_dtype_from_name(compute_dtype)
  k = int(grad_accum_steps)
  if k < 1:
    raise ConfigError(f"grad_accum_steps must be >= 1, got {k}")
  update_kw = dict(clip_grad_norm=clip_grad_norm, ema_decay=ema_decay, ema_warmup=ema_warmup,
                   lr_schedule=lr_schedule)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  replicated = sharding_lib.replicated(mesh)

  if mode == "jit":

    def step(state: TrainState, batch: Batch):
      rng = jax.random.fold_in(state.rng, state.step)
      sums = _weighted_grads(loss_fn, state.params, batch, rng, k, compute_dtype)
      return _apply_update(state, tx, *sums, **update_kw)

  else:
    specs = jax.tree.map(lambda s: s.spec, state_sharding,
                         is_leaf=lambda x: isinstance(x, NamedSharding))
    if any(spec != P() for spec in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))):
      raise ConfigError("the shard_map step is data-parallel only (replicated state); "
                        "use mesh.fsdp=1 or step mode 'jit' for sharded params")
    axes = sharding_lib.BATCH_AXES

    def per_device(state: TrainState, batch: Batch):
      rng = jax.random.fold_in(state.rng, state.step)
      # Distinct randomness (e.g. dropout) per device, as pmap-style code does.
      for axis in axes:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis))
      # Marking the replicated params as per-device ("varying") makes their gradients local to
      # each device, as under pmap; without it shard_map would already sum them over devices.
      local_params = jax.lax.pcast(state.params, axes, to="varying")
      sums = _weighted_grads(loss_fn, local_params, batch, rng, k, compute_dtype)
      sums = jax.lax.psum(sums, axes)  # the explicit cross-device reduction
      return _apply_update(state, tx, *sums, **update_kw)

    def step(state: TrainState, batch: Batch):
      return jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(axes)),
                           out_specs=(P(), P()))(state, batch)

  return jax.jit(step, in_shardings=(state_sharding, batch_sharding),
                 out_shardings=(state_sharding, replicated),
                 donate_argnums=(0,) if donate else ())
