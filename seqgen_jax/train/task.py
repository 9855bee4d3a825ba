"""The Task interface: how a model family plugs into the one training loop.

A task owns the model choice, the loss, the evaluation metrics, the data sources and an optional
sampling hook. The loop (seqgen_jax/train/loop.py) only ever calls these methods, so it never
imports a specific model or task: the tasks (seqgen_jax/tasks/) implement this class, and the
entrypoint hands the loop a way to build one (``seqgen_jax.tasks.build_task``).
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import ml_collections
import numpy as np

from seqgen_jax.data.pipeline import StepSource
from seqgen_jax.train.evaluate import Evaluator

PyTree = Any


class Task(abc.ABC):
  """Base class; a subclass in seqgen_jax/tasks is registered in ``seqgen_jax.registry.TASKS``
  under its config name.

  The constructor must validate the config and find its data (raising ConfigError / DataError
  with a one-line message) before the loop creates anything in the workdir.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @abc.abstractmethod
  def init_params(self, rng: jax.Array) -> PyTree:
    """Fresh float32 parameters; pure (run under eval_shape and jit)."""

  @abc.abstractmethod
  def loss_fn(self, params: PyTree, batch: PyTree, rng: jax.Array
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Training loss (a mean) and aux metrics; aux["weight"] is the mean's denominator."""

  @abc.abstractmethod
  def eval_step(self, params: PyTree, batch: PyTree) -> dict[str, jax.Array]:
    """Sums over the batch (so batches and devices add up); ``finalize_eval`` turns them into
    metrics."""

  @abc.abstractmethod
  def finalize_eval(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    """Metrics from the summed eval_step outputs."""

  @abc.abstractmethod
  def train_source(self) -> StepSource:
    """The training batches, indexed by step."""

  @abc.abstractmethod
  def eval_source(self) -> tuple[StepSource, int]:
    """The evaluation batches and how many of them make one evaluation."""

  def initial_params(self) -> PyTree | None:
    """Parameters to start training from instead of ``init_params``'s fresh ones (e.g. imported
    pretrained weights; the same tree and shapes), or None, the default. The loop checks that
    they fit before writing anything and ignores them when it resumes from a checkpoint."""
    return None

  def sample(self, params: PyTree, rng: jax.Array) -> dict[str, str | np.ndarray]:
    """Samples to log: name -> text, or name -> image (HxWxC uint8, e.g. a grid of samples).

    Text goes to the console, TensorBoard and metrics.jsonl; images go to TensorBoard and to
    ``<workdir>/samples/<name>_<step>.png``. The default logs nothing.
    """
    del params, rng
    return {}

  def final_eval(self, params: PyTree, rng: jax.Array, evaluator: Evaluator
                 ) -> dict[str, float]:
    """Metrics that need generation or a whole split (BLEU with beam search, FID of samples,
    test-split error), computed once at the end of training (``config.train.final_eval``).

    ``params`` are the EMA parameters when the run keeps them, else the trained ones.
    ``evaluator`` sums a per-batch function over a whole split on the loop's mesh
    (``evaluator.sums(self.eval_step, params, source)``), as the periodic eval does. The loop
    logs the result under ``final/`` and writes ``<workdir>/final_metrics.json``. The default
    computes nothing.
    """
    del params, rng, evaluator
    return {}

  def save_assets(self, workdir: str) -> None:
    """Writes files a checkpoint needs to be used later (e.g. the tokenizer)."""
    del workdir
