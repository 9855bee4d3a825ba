"""Summing a task's eval_step over one full pass of an evaluation source (for final_eval)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def split_sums(fn: Callable[[Any, dict], dict], params: Any, source) -> dict[str, Any]:
  """Sums of ``fn(params, batch)`` over every batch of an eval source (one full pass).

  ``source`` has ``num_batches`` and ``global_batch_size`` (an EvalSampler-backed source, whose
  padding rows carry weight 0); runs in this process on whole batches.
  """
  totals = None
  for i in range(source.num_batches):
    sums = jax.device_get(fn(params, source.batch(i, slice(0, source.global_batch_size))))
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
  return jax.tree.map(np.asarray, totals)
