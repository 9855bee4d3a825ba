"""train_and_evaluate: the training loop shared by every task and model family.

The loop knows tasks only through the Task interface (train/task.py): the caller hands it
``make_task``, a function config -> Task (the entrypoint passes ``seqgen_jax.tasks.build_task``;
a test may pass a Task subclass itself). Order of work: check the mesh and batch sizes, then
build the task, which validates the config and finds the data (bad input fails here, before
anything is written) -> optimizer -> abstract state via ``jax.eval_shape`` -> compile the train
step ahead of time (its FLOPs and memory are known before anything is allocated; a configured
per-device memory budget is checked here) -> restore the latest checkpoint or initialise with a
jitted init that has ``out_shardings`` (fresh params, or the task's ``initial_params``, e.g.
imported pretrained weights, checked against the fresh shapes before anything is written) ->
train, logging (with TFLOP/s, MFU and peak memory), eval, sampling, profiling and checkpointing
on their intervals -> a final checkpoint. SIGTERM / SIGINT (and JAX's multi-host preemption
notice) make the loop save the current step and return normally.
"""

from __future__ import annotations

import functools
import json
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from seqgen_jax.data.pipeline import StepIterator
from seqgen_jax.errors import ConfigError
from seqgen_jax.train import perf
from seqgen_jax.train import sharding as sharding_lib
from seqgen_jax.train.checkpoint import Checkpointer
from seqgen_jax.train.evaluate import Evaluator, evaluate
from seqgen_jax.train.metrics import MetricWriter, Progress, copy_tree
from seqgen_jax.train.optim import build_optimizer
from seqgen_jax.train.state import TrainState, create_train_state
from seqgen_jax.train.step import make_train_step
from seqgen_jax.train.task import Task

PyTree = Any


class _StopRequest:
  """Turns SIGTERM / SIGINT into a flag the loop polls once per step (then restores handlers)."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: int | None = None
    self._previous: dict[int, Any] = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: stop without waiting for the checkpoint
    self.signum = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _should_stop(stop: _StopRequest, ckpt: Checkpointer, step: int) -> bool:
  """True when this process was signalled or the multi-host preemption service says so.

  With several processes a signal may reach only some of them, so the local flags are combined
  (every process then agrees on the step to stop at).
  """
  local = stop.signum is not None
  if jax.process_count() > 1:
    local = bool(np.any(multihost_utils.process_allgather(np.asarray(local))))
  return local or ckpt.reached_preemption(step)


def _abstract_with_shardings(abstract: PyTree, shardings: PyTree) -> PyTree:
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def _check_initial_params(initial: PyTree, abstract: PyTree) -> None:
  """One-line ConfigError unless the task's ``initial_params`` have the fresh params' shapes."""
  have = dict(jax.tree_util.tree_flatten_with_path(initial)[0])
  want = dict(jax.tree_util.tree_flatten_with_path(abstract)[0])
  for path in sorted(set(have) | set(want), key=jax.tree_util.keystr):
    name = jax.tree_util.keystr(path)
    if path not in have or path not in want:
      raise ConfigError(f"the task's initial params {'lack' if path not in have else 'have'} "
                        f"{name}, which the model {'has' if path not in have else 'lacks'}")
    if tuple(np.shape(have[path])) != tuple(want[path].shape):
      raise ConfigError(f"the task's initial params have {name} of shape "
                        f"{tuple(np.shape(have[path]))}, the model wants {tuple(want[path].shape)}")


def _num_params(params: PyTree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def _save_assets(task: Task, wd: epath.Path) -> None:
  """``task.save_assets`` into the workdir; tasks write local files, so a remote workdir
  (gs://...) gets them through a local directory."""
  if "://" not in str(wd):
    task.save_assets(str(wd))
    return
  with tempfile.TemporaryDirectory() as tmp:
    task.save_assets(tmp)
    copy_tree(tmp, str(wd))


def _abstract_batch(task: Task, mesh, global_batch: int, rows: slice) -> PyTree:
  """Global shapes and shardings of a training batch (read off this process's first rows)."""
  local = task.train_source().batch(0, rows)
  sharding = sharding_lib.batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct((global_batch, *np.shape(x)[1:]),
                                                     np.asarray(x).dtype, sharding=sharding),
                      local)


def step_flops(lowered: jax.stages.Lowered, mode: str) -> float | None:
  """FLOPs of one train step over all devices from XLA's cost analysis of the lowered step.

  A jit step is lowered as the global program; a shard_map step as the per-device program
  (which every device runs, optimizer update included), hence the device count.
  """
  flops = perf.lowered_flops(lowered)
  if flops is not None and mode == "shard_map":
    flops *= jax.device_count()
  if flops is not None and "stablehlo.while" in lowered.as_text():
    logging.warning("the train step contains a loop (a lax.scan over time steps or layers): "
                    "XLA counts a loop body once, so FLOPs/step, TFLOP/s and MFU below are "
                    "LOWER BOUNDS; for an exact count build the model unrolled "
                    "(model.unroll = sequence length, scan_layers=False), as "
                    "experiments/showdown_steps.py does")
  return flops


def _compile_step(train_step, abstract_state: PyTree, abstract_batch: PyTree, mesh, tc, *,
                  flops_step=None) -> tuple[Any, perf.MemoryEstimate, float | None]:
  """Compiles the train step for the abstract inputs and checks the per-device memory budget.

  Returns (compiled step, memory estimate, FLOPs per step). ``flops_step``: the same step built
  without gradient accumulation, whose FLOPs XLA counts in full (see perf.py).
  """
  t0 = time.perf_counter()
  lowered = train_step.lower(abstract_state, abstract_batch)
  compiled = lowered.compile()
  logging.info("compiled the train step in %.1f s", time.perf_counter() - t0)
  if flops_step is not None:
    lowered = flops_step.lower(abstract_state, abstract_batch)
  flops = step_flops(lowered, tc.get("step_mode", "jit"))
  if flops is None:
    flops = perf.compiled_flops(compiled, jax.device_count())
  memory = perf.estimate_memory(compiled, abstract_state, abstract_batch)
  budget = tc.get("device_memory_budget_gib", 0.0)
  if budget and memory.total > budget * perf.GiB:
    n = jax.device_count()
    full_mesh = sharding_lib.make_mesh(n)
    full = perf.shard_bytes(_abstract_with_shardings(
        abstract_state, sharding_lib.state_shardings(abstract_state, full_mesh)))
    perf.check_memory_budget(memory, budget, fully_sharded_state=full,
                             fsdp=mesh.shape[sharding_lib.FSDP], num_devices=n)
  return compiled, memory, flops


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       make_task: Callable[[ml_collections.ConfigDict], Task]) -> TrainState:
  """Trains ``make_task(config)``; checkpoints, metrics and logs go to workdir.

  ``make_task`` is called once, after the mesh and batch sizes are checked and before anything
  is written, so that a bad config fails fast and leaves no workdir behind.
  """
  tc = config.train
  t_start = time.time()
  # ------------------------------------------------ validate everything before writing anything
  mesh = sharding_lib.make_mesh(config.get("mesh", {}).get("fsdp", 1))
  sharding_lib.check_batch_size(tc.batch_size, mesh, tc.get("grad_accum_steps", 1))
  eval_bs = config.get("eval", {}).get("batch_size", None) or tc.batch_size
  sharding_lib.check_batch_size(eval_bs, mesh)
  task: Task = make_task(config)
  tx, schedule = build_optimizer(config.optimizer, tc.num_steps)
  ema_decay = tc.get("ema_decay", None)
  init_fn = functools.partial(create_train_state, task.init_params, tx,
                              use_ema=ema_decay is not None)
  rng = jax.random.PRNGKey(tc.seed)
  abstract_state = jax.eval_shape(init_fn, rng)
  initial_params = task.initial_params()
  if initial_params is not None:
    _check_initial_params(initial_params, abstract_state.params)
  state_sharding = sharding_lib.state_shardings(abstract_state, mesh)
  step_kw = dict(mesh=mesh, state_sharding=state_sharding, lr_schedule=schedule,
                 clip_grad_norm=config.optimizer.get("clip_grad_norm", None),
                 compute_dtype=tc.get("compute_dtype", "float32"), ema_decay=ema_decay,
                 ema_warmup=bool(tc.get("ema_warmup", False)), mode=tc.get("step_mode", "jit"))
  grad_accum = tc.get("grad_accum_steps", 1)
  train_step = make_train_step(task.loss_fn, tx, grad_accum_steps=grad_accum, **step_kw)
  evaluator = Evaluator(mesh)
  profile_steps = perf.check_profile_steps(tc.get("profile_steps", ()), tc.num_steps)
  rows = slice(*sharding_lib.process_batch_rows(mesh, tc.batch_size))
  abstract_state = _abstract_with_shardings(abstract_state, state_sharding)
  compiled_step, memory, flops = _compile_step(
      train_step, abstract_state, _abstract_batch(task, mesh, tc.batch_size, rows), mesh, tc,
      flops_step=(make_train_step(task.loss_fn, tx, donate=False, **step_kw)
                  if grad_accum > 1 else None))
  reporter = perf.PerfReporter(
      flops_per_step=flops,
      peak_tflops_per_device=(tc.get("peak_tflops", 0.0) or
                              perf.peak_tflops(jax.devices()[0].device_kind)),
      num_devices=jax.device_count(), devices=jax.local_devices())

  # ------------------------------------------------ workdir, checkpoints, metrics
  is_main = jax.process_index() == 0
  wd = epath.Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  config_dict = json.loads(config.to_json_best_effort())
  if is_main:
    (wd / "config.json").write_text(json.dumps(config_dict, indent=2))
    _save_assets(task, wd)
  ckpt = Checkpointer(str(wd / "checkpoints"), save_every=tc.checkpoint_every,
                      keep=tc.get("keep_checkpoints", 3),
                      async_save=tc.get("async_checkpoint", True))
  writer = MetricWriter(str(wd), enabled=is_main)
  data_iter = StepIterator(task.train_source(), rows=rows)
  trace = perf.StepTrace(profile_steps, str(wd / "profile"))

  latest = ckpt.latest_step()
  if latest is not None:
    state, data_state = ckpt.restore(latest, abstract_state)
    data_iter.set_state(data_state)
    logging.info("restored checkpoint at step %d from %s", latest, ckpt.directory)
  elif initial_params is None:
    state = jax.jit(init_fn, out_shardings=state_sharding)(rng)
  else:  # the params are an argument of the jitted init, not constants baked into it
    start_fn = lambda rng, params: create_train_state(
        lambda _: params, tx, rng, use_ema=ema_decay is not None)
    state = jax.jit(start_fn, out_shardings=state_sharding)(rng, initial_params)
    logging.info("initialised from the task's initial params (config.init)")
  step = int(state.step)
  last_saved = latest
  logging.info("task %s, model %s: %s parameters; mesh %s over %d devices (%d processes)",
               config.task, config.model.name, f"{_num_params(state.params):,}",
               dict(mesh.shape), jax.device_count(), jax.process_count())
  logging.info("process %d of %d loads rows [%d, %d) of each global batch of %d",
               jax.process_index(), jax.process_count(), rows.start, rows.stop, tc.batch_size)
  logging.info("train step: %s; memory %s", reporter.summary(jax.devices()[0].device_kind),
               memory.describe())
  writer.write_scalars(step, "perf", {
      "flops_per_step": reporter.flops_per_step or 0.0,
      "peak_tflops_per_device": reporter.peak_tflops_per_device or 0.0,
      "num_devices": jax.device_count(), "state_mib_per_device": memory.state / perf.MiB,
      "step_mib_per_device": memory.total / perf.MiB})

  def run_eval_and_sample(at_step: int, *, eval_now: bool, sample_now: bool) -> None:
    if eval_now:
      for name, params in (("eval", state.params), ("eval_ema", state.ema_params)):
        if params is None:
          continue
        metrics = evaluate(task, evaluator, params)
        writer.write_scalars(at_step, name, metrics)
        logging.info("%s @ %d: %s", name, at_step,
                     ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if sample_now:
      sample_rng = jax.random.fold_in(jax.random.PRNGKey(tc.seed + 1), at_step)
      for tag, value in task.sample(state.params, sample_rng).items():
        if isinstance(value, str):
          writer.write_text(at_step, tag, value)
          logging.info("%s @ %d:\n%s", tag, at_step, value)
        else:
          path = writer.write_image(at_step, tag, np.asarray(value))
          logging.info("%s @ %d: image %s", tag, at_step, path)

  def every(n, s):
    return n > 0 and s % n == 0

  progress = Progress(tc.num_steps, step)
  pending: list[dict[str, jax.Array]] = []
  with _StopRequest() as stop:
    while step < tc.num_steps:
      batch = sharding_lib.make_global_batch(next(data_iter), mesh)
      trace.before_step(step + 1)
      state, metrics = compiled_step(state, batch)
      step += 1
      trace.after_step(step, state)
      pending.append(metrics)
      if every(tc.log_every, step) or step == tc.num_steps:
        host = jax.device_get(pending)
        means = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        pending = []
        rate = progress.rate(step)
        perf_scalars = reporter.scalars(rate)
        logging.info(progress.format(step, means, rate, reporter.line(perf_scalars)))
        writer.write_scalars(step, "train", {**means, "steps_per_s": rate, **perf_scalars})
      eval_now = every(tc.eval_every, step)
      sample_now = every(tc.get("sample_every", 0), step)
      if eval_now or sample_now or ckpt.is_due(step):
        # Time spent on evaluation, sampling and saving is left out of steps/s and TFLOP/s.
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        run_eval_and_sample(step, eval_now=eval_now, sample_now=sample_now)
        if ckpt.save(step, state, data_iter.get_state(), config_dict):
          last_saved = step
        progress.exclude(time.perf_counter() - t0)
      if _should_stop(stop, ckpt, step):
        trace.stop(state)
        if last_saved != step:
          ckpt.save(step, state, data_iter.get_state(), config_dict, force=True)
          last_saved = step
        ckpt.wait()
        logging.info("stop requested (signal %s): saved checkpoint at step %d, exiting",
                     stop.signum, step)
        writer.close()
        ckpt.close()
        return state

  trace.stop(state)
  if step == tc.num_steps:
    sample_every = tc.get("sample_every", 0)
    run_eval_and_sample(step, eval_now=not every(tc.eval_every, step),
                        sample_now=sample_every >= 0 and not every(sample_every, step))
    if tc.get("final_eval", True):
      final_params = state.ema_params if state.ema_params is not None else state.params
      t0 = time.perf_counter()
      final = task.final_eval(final_params, jax.random.PRNGKey(tc.seed + 2), evaluator)
      if final:
        writer.write_scalars(step, "final", final)
        if is_main:
          (wd / "final_metrics.json").write_text(json.dumps({"step": step, **final}, indent=2))
        logging.info("final @ %d (%.1f s): %s", step, time.perf_counter() - t0,
                     ", ".join(f"{k} {v:.4f}" for k, v in final.items()))
  if last_saved != step:
    ckpt.save(step, state, data_iter.get_state(), config_dict, force=True)
  ckpt.wait()
  ckpt.close()
  writer.close()
  logging.info("done: step %d, workdir %s, %.1f s", step, workdir, time.time() - t_start)
  return state
