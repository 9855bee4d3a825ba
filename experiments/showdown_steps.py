"""The showdown's use of the shared training library's pieces (seqgen_jax/train).

``prepare`` builds a task's train step exactly as ``train.loop.train_and_evaluate`` does (mesh,
optimizer, abstract state via ``jax.eval_shape``, ``make_train_step``) and compiles it ahead of
time, which gives the step's FLOPs (XLA cost analysis, ``loop.step_flops``, of the step with its
time scans unrolled: ``count_flops``) and its per-device memory (``perf.estimate_memory``:
state + batch + XLA temporaries) before anything runs.
``time_steps`` measures the median step time of that compiled step (compilation excluded);
``train_briefly`` runs a short training with it and evaluates with ``train.evaluate`` (the
dependency-length sweeps, where one number per run is all that is kept);
``input_gradient_norms`` measures how much gradient reaches each input position.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from seqgen_jax.tasks import build_task
from seqgen_jax.train import loop, perf
from seqgen_jax.train import sharding as sharding_lib
from seqgen_jax.train.evaluate import Evaluator, evaluate
from seqgen_jax.train.optim import build_optimizer
from seqgen_jax.train.state import create_train_state
from seqgen_jax.train.step import make_train_step
from seqgen_jax.train.task import Task


@dataclasses.dataclass
class PreparedStep:
  """A task's compiled train step and what XLA says about it."""

  config: ml_collections.ConfigDict
  task: Task
  mesh: Any
  compiled: Any  # None when prepared with compile=False
  init: Any  # jitted rng -> TrainState
  flops: float | None  # per step, whole batch
  memory: perf.MemoryEstimate | None  # None when not compiled
  num_params: int
  tokens_per_step: int


def _abstract(tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      tree, shardings)


def _build(config: ml_collections.ConfigDict):
  """Task, mesh, jitted init and the lowered train step of ``config`` (the loop's recipe)."""
  tc = config.train
  mesh = sharding_lib.make_mesh(1)
  sharding_lib.check_batch_size(tc.batch_size, mesh)
  task = build_task(config)
  tx, schedule = build_optimizer(config.optimizer, tc.num_steps)
  init_fn = functools.partial(create_train_state, task.init_params, tx, use_ema=False)
  abstract_state = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  state_sharding = sharding_lib.state_shardings(abstract_state, mesh)
  step = make_train_step(task.loss_fn, tx, mesh=mesh, state_sharding=state_sharding,
                         lr_schedule=schedule,
                         clip_grad_norm=config.optimizer.get("clip_grad_norm", None),
                         compute_dtype=tc.get("compute_dtype", "float32"))
  local = task.train_source().batch(0, slice(0, tc.batch_size))
  batch_sharding = sharding_lib.batch_sharding(mesh)
  abstract_batch = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=batch_sharding),
      local)
  abstract_state = _abstract(abstract_state, state_sharding)
  lowered = step.lower(abstract_state, abstract_batch)
  init = jax.jit(init_fn, out_shardings=state_sharding)
  return task, mesh, init, lowered, abstract_state, abstract_batch


def count_flops(config: ml_collections.ConfigDict) -> float | None:
  """FLOPs of one train step, every time scan unrolled.

  XLA's cost analysis counts a while loop's body once, so a recurrence written as a
  ``lax.scan`` over time would be counted for one time step. The count is therefore taken from
  the same step built with ``config.model.unroll`` = the sequence length (the scan fully
  unrolled: the same arithmetic, no loop); models without a time loop ignore the field.
  """
  task = build_task(config)
  seq_len = int(np.shape(task.train_source().batch(0, slice(0, 1))["inputs"])[1])
  unrolled = ml_collections.ConfigDict(config.to_dict())
  unrolled.model.unroll = seq_len
  return loop.step_flops(_build(unrolled)[3], "jit")


def prepare(config: ml_collections.ConfigDict, *, compile: bool = True,
            count: bool = True) -> PreparedStep:
  """``config``'s train step, with ``count`` its FLOPs (``count_flops``) and with ``compile``
  the compiled step (for timing) and XLA's memory analysis of it."""
  task, mesh, init, lowered, abstract_state, abstract_batch = _build(config)
  compiled = lowered.compile() if compile else None
  tokens = int(np.prod(np.shape(abstract_batch["inputs"])))
  n_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract_state.params)))
  return PreparedStep(config=config, task=task, mesh=mesh, compiled=compiled, init=init,
                      flops=count_flops(config) if count else None,
                      memory=(perf.estimate_memory(compiled, abstract_state, abstract_batch)
                              if compile else None),
                      num_params=n_params, tokens_per_step=tokens)


def _batch(prep: PreparedStep, index: int):
  bs = prep.config.train.batch_size
  return sharding_lib.make_global_batch(prep.task.train_source().batch(index, slice(0, bs)),
                                        prep.mesh)


def time_steps(prep: PreparedStep, *, warmup: int = 2, repeats: int = 5) -> float:
  """Median seconds of one train step (already compiled; warm-up steps not timed)."""
  state = prep.init(jax.random.PRNGKey(prep.config.train.seed))
  batch = _batch(prep, 0)
  for _ in range(warmup):
    state, m = prep.compiled(state, batch)
  jax.block_until_ready((state, m))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    state, m = prep.compiled(state, batch)
    jax.block_until_ready((state, m))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def train_briefly(prep: PreparedStep) -> tuple[dict[str, float], Any]:
  """``config.train.num_steps`` steps of the compiled step; (the task's eval metrics, params)."""
  state = prep.init(jax.random.PRNGKey(prep.config.train.seed))
  for i in range(prep.config.train.num_steps):
    state, _ = prep.compiled(state, _batch(prep, i))
  metrics = evaluate(prep.task, Evaluator(prep.mesh), state.params)
  return metrics, state.params


def input_gradient_norms(task: Task, params, batch: dict[str, Any]) -> np.ndarray:
  """||dL/de_t|| per input position t (mean over the batch), e_t the token embedding.

  L is the task's training loss on ``batch`` (for the synthetic tasks: the answer tokens only),
  so entry t says how much learning signal reaches the token t positions back from the answer:
  the measurement behind "vanishing gradients". Model-agnostic: a zero perturbation is added to
  the output of the model's token-embedding layer (the one ``nn.Embed`` called on [B, T] tokens)
  through ``flax.linen.intercept_methods`` and the loss is differentiated with respect to it.
  """
  import flax.linen as nn
  import jax.numpy as jnp

  tokens = np.asarray(batch["inputs"])
  hits: list[tuple] = []

  def loss_with(delta_BTD):
    def interceptor(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if (type(context.module) is nn.Embed and context.method_name == "__call__"
          and out.shape[:2] == tokens.shape):
        hits.append(out.shape)
        return out if delta_BTD is None else out + delta_BTD.astype(out.dtype)
      return out

    with nn.intercept_methods(interceptor):
      loss, _ = task.loss_fn(params, batch, jax.random.PRNGKey(0))
    return loss

  jax.eval_shape(lambda: loss_with(None))
  if len(hits) != 1:
    raise ValueError(f"input_gradient_norms: expected one token embedding (an nn.Embed applied "
                     f"to the [B, T] inputs), found {len(hits)}")
  grads_BTD = jax.jit(jax.grad(loss_with))(jnp.zeros(hits[0], jnp.float32))
  return np.asarray(jnp.mean(jnp.linalg.norm(grads_BTD, axis=-1), axis=0))
