"""Evaluation over the training mesh: a task's per-batch sums added up over an eval source.

Every evaluation in the library goes through ``Evaluator.sums``: the loop's periodic eval
(``evaluate``: the first ``n`` batches of ``task.eval_source()``) and the whole-split metrics of
``Task.final_eval`` (every batch of a split, every example once: an ``EvalSampler``-backed
source pads the last batch with weight-0 rows). As in training, each process loads only its
rows of every global batch (``sharding.process_batch_rows``), the batch is assembled into
global arrays split over the mesh's batch axes, and the per-batch function runs under ``jit``
with replicated outputs, so the sums over devices and processes are XLA's reductions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from seqgen_jax.data.pipeline import StepSource
from seqgen_jax.train import sharding as sharding_lib

if TYPE_CHECKING:
  from seqgen_jax.train.task import Task

PyTree = Any
SumFn = Callable[[PyTree, PyTree], PyTree]  # (params, batch) -> sums over the batch


class Evaluator:
  """Adds up ``fn(params, batch)`` over the batches of an eval source, sharded over ``mesh``.

  ``fn`` returns sums over its batch (weighted by the batch's ``weight`` rows), so that batches,
  devices and processes add up; each ``fn`` is compiled once and reused.
  """

  def __init__(self, mesh: Mesh):
    self.mesh = mesh
    self._compiled: dict[SumFn, Callable] = {}

  def _jit(self, fn: SumFn) -> Callable:
    if fn not in self._compiled:
      self._compiled[fn] = jax.jit(fn, out_shardings=sharding_lib.replicated(self.mesh))
    return self._compiled[fn]

  def sums(self, fn: SumFn, params: PyTree, source: StepSource,
           num_batches: int | None = None) -> PyTree:
    """Sums of ``fn(params, batch)`` over batches 0 .. num_batches - 1 of ``source`` (NumPy).

    ``num_batches`` None: ``source.num_batches``, one full pass of an evaluation split.
    ``source.global_batch_size`` must split evenly over the mesh (ConfigError otherwise).
    """
    if num_batches is None:
      num_batches = getattr(source, "num_batches", None)
      if num_batches is None:
        raise ValueError(f"{type(source).__name__} has no num_batches; pass num_batches")
    global_batch = source.global_batch_size
    sharding_lib.check_batch_size(global_batch, self.mesh)
    rows = slice(*sharding_lib.process_batch_rows(self.mesh, global_batch))
    jitted = self._jit(fn)
    totals = None
    for i in range(num_batches):
      batch = sharding_lib.make_global_batch(source.batch(i, rows), self.mesh)
      out = jitted(params, batch)
      totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    if totals is None:
      raise ValueError("an evaluation needs at least one batch")
    return jax.tree.map(np.asarray, jax.device_get(totals))


def evaluate(task: Task, evaluator: Evaluator, params: PyTree) -> dict[str, float]:
  """The periodic eval: ``task.finalize_eval`` of ``task.eval_step`` summed over the batches
  that ``task.eval_source()`` names."""
  source, num_batches = task.eval_source()
  return task.finalize_eval(evaluator.sums(task.eval_step, params, source, num_batches))
