"""Multivariate forecasting: ETTh1 / ETTh2 (and the small series) with any "forecaster" model.

Protocol (Informer / Autoformer; seqgen_jax/data/timeseries.py): look-back ``data.lookback``
(96), horizon ``data.horizon`` (96), all 7 variables in and out (``data.target_only``: the
target only), the standard 12 / 4 / 4-month split (``split_borders``), every variable
standardised with the training rows' mean and std (``Scaler``, saved to
``<workdir>/scaler.json``). Errors are on the normalised data.

Training minimises the MSE. Eval (periodic, on ``data.eval_split``, default validation): MSE and
MAE over the whole split. ``final_eval``: MSE and MAE over EVERY window of the test split (stride
1, 2,785 windows for ETTh1 at 96 -> 96, as the literature reports them) and of the validation
split, plus two trivial forecasts on the same test windows for context: ``repeat_last`` (each
variable's last look-back value, held for the whole horizon) and ``zero`` (the training mean,
0 after normalisation). Every error is a mean over windows x horizon x variables.

Models: every ``MODELS`` entry of kind "forecaster" (rnn, lstm, gru, mingru, minlstm, lru,
transformer). Axis key: B batch (windows), L look-back, H horizon, F variables.
"""

from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

import seqgen_jax.nn  # noqa: F401  (registers the models)
from seqgen_jax.data import builder as builder_lib
from seqgen_jax.data import timeseries
from seqgen_jax.dtypes import compute_dtype_from_name
from seqgen_jax.registry import MODELS, TASKS
from seqgen_jax.train.task import Task

PyTree = Any


def error_sums(pred_BHF: jax.Array, y_BHF: jax.Array, w_B: jax.Array) -> dict[str, jax.Array]:
  """Weighted sums of squared and absolute errors, and the number of values they cover."""
  err_BHF = pred_BHF.astype(jnp.float32) - y_BHF.astype(jnp.float32)
  w_B11 = w_B[:, None, None]
  return {"se": jnp.sum(jnp.square(err_BHF) * w_B11), "ae": jnp.sum(jnp.abs(err_BHF) * w_B11),
          "values": jnp.sum(w_B) * err_BHF.shape[1] * err_BHF.shape[2]}


@TASKS.register("forecast")
class ForecastTask(Task):
  """Look-back -> horizon forecasting with any model registered with ``kind="forecaster"``."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    dc, tc = config.data, config.train
    eval_bs = config.get("eval", {}).get("batch_size", 0) or tc.batch_size
    self.data = timeseries.load(
        dc.name, builder_lib.DataOptions.from_config(dc), lookback=dc.get("lookback", 96),
        horizon=dc.get("horizon", 96), batch_size=tc.batch_size, eval_batch_size=eval_bs,
        seed=tc.seed, eval_split=dc.get("eval_split", "validation"),
        target_only=dc.get("target_only", False))
    self.dtype = compute_dtype_from_name(tc.get("compute_dtype", "float32"))
    self.model: nn.Module = MODELS.get(config.model.name, kind="forecaster")(
        config.model, num_features=self.data.num_features, lookback=self.data.lookback,
        horizon=self.data.horizon, dtype=self.dtype)

  def init_params(self, rng):
    x_BLF = jnp.zeros((1, self.data.lookback, self.data.num_features), jnp.float32)
    return self.model.init({"params": rng}, x_BLF, train=False)["params"]

  def loss_fn(self, params, batch, rng):
    pred_BHF = self.model.apply({"params": params}, batch["x"], train=True,
                                rngs={"dropout": rng})
    s = error_sums(pred_BHF, batch["y"], batch["weight"])
    total = jnp.maximum(s["values"], 1e-9)
    return s["se"] / total, {"mae": s["ae"] / total, "weight": jnp.sum(batch["weight"])}

  def eval_step(self, params, batch):
    pred_BHF = self.model.apply({"params": params}, batch["x"], train=False)
    return error_sums(pred_BHF, batch["y"], batch["weight"])

  def finalize_eval(self, sums):
    n = max(float(sums["values"]), 1e-9)
    return {"mse": float(sums["se"]) / n, "mae": float(sums["ae"]) / n,
            "windows": float(sums["values"]) / (self.data.horizon * self.data.num_features)}

  def train_source(self):
    return self.data.train

  def eval_source(self):
    return self.data.eval, self.data.eval_batches

  @staticmethod
  def baseline_sums(params: PyTree, batch: dict[str, jax.Array]) -> dict[str, dict[str, jax.Array]]:
    """Error sums of the repeat-last-value and zero (training-mean) forecasts."""
    del params
    x_BLF, y_BHF, w_B = batch["x"], batch["y"], batch["weight"]
    last_BHF = jnp.broadcast_to(x_BLF[:, -1:, :], y_BHF.shape)
    return {"repeat_last": error_sums(last_BHF, y_BHF, w_B),
            "zero": error_sums(jnp.zeros_like(y_BHF), y_BHF, w_B)}

  def final_eval(self, params, rng, evaluator):
    del rng
    out = {}
    for prefix, source in (("test", self.data.test), ("val", self._validation())):
      m = self.finalize_eval(evaluator.sums(self.eval_step, params, source))
      out.update({f"{prefix}_mse": m["mse"], f"{prefix}_mae": m["mae"],
                  f"{prefix}_windows": m["windows"]})
    base = evaluator.sums(self.baseline_sums, None, self.data.test)
    for name, sums in base.items():
      m = self.finalize_eval(sums)
      out.update({f"test_mse_{name}": m["mse"], f"test_mae_{name}": m["mae"]})
    return out

  def _validation(self) -> timeseries.WindowSource:
    if self.config.data.get("eval_split", "validation") == "validation":
      return self.data.eval
    d = self.data
    return timeseries.WindowSource(d.eval.series_NF, *d.borders["validation"], d.lookback,
                                   d.horizon, lambda n: type(d.test.sampler)(
                                       n, d.test.global_batch_size))

  def save_assets(self, workdir: str) -> None:
    self.data.scaler.save(os.path.join(workdir, "scaler.json"))
