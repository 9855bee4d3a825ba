"""The forecast task: final_eval's test MSE / MAE (and the trivial forecasts) against a NumPy
loop over every ETTh1 test window, an end-to-end run through train_and_evaluate, and a loss /
gradient for every registered forecaster."""

import gzip
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_lm_config

from seqgen_jax.registry import MODELS
from seqgen_jax.tasks import build_task
from seqgen_jax.tasks.forecast import ForecastTask
from seqgen_jax.train import sharding
from seqgen_jax.train.evaluate import Evaluator
from seqgen_jax.train.loop import train_and_evaluate


def _config(data_dir, prepared_dir, model="lstm", lookback=96, horizon=96, **model_fields):
  c = tiny_lm_config(task="forecast", data__name="etth1", train__num_steps=20,
                     train__batch_size=16, train__log_every=5, train__eval_every=10,
                     train__checkpoint_every=0)
  c.data.data_dir, c.data.prepared_dir = str(data_dir), str(prepared_dir)
  c.data.lookback, c.data.horizon = lookback, horizon
  c.data.eval_split, c.data.target_only = "validation", False
  c.model.name = model
  for k, v in dict(d_model=8, hidden_size=8, num_layers=1, num_heads=2, d_ff=16,
                   dropout=0.0, **model_fields).items():
    c.model[k] = v
  c.eval.batch_size = 512
  c.optimizer.lr = 3e-3
  return c


def _etth1_scaled(data_dir):
  with gzip.open(data_dir / "ett" / "ETTh1.csv.gz", "rt") as f:
    values = np.loadtxt(f, delimiter=",", skiprows=1, usecols=range(1, 8))
  train = values[:12 * 30 * 24]
  return (values - train.mean(axis=0)) / train.std(axis=0)


def test_final_eval_equals_a_numpy_loop_over_every_test_window(data_dir, prepared_dir):
  task = ForecastTask(_config(data_dir, prepared_dir))
  params = jax.jit(task.init_params)(jax.random.PRNGKey(0))
  got = task.final_eval(params, jax.random.PRNGKey(1), Evaluator(sharding.make_mesh()))
  scaled, L, H = _etth1_scaled(data_dir), 96, 96
  apply = jax.jit(lambda x: task.model.apply({"params": params}, x, train=False))
  sums = {k: 0.0 for k in ("se", "ae", "se_last", "ae_last", "se_zero", "ae_zero")}
  windows = list(range(16 * 720 - L, 20 * 720 - L - H + 1))  # test rows [11424, 14400), stride 1
  for i in range(0, len(windows), 700):
    chunk = windows[i:i + 700]
    x = np.stack([scaled[s:s + L] for s in chunk])
    y = np.stack([scaled[s + L:s + L + H] for s in chunk])
    pred = np.asarray(apply(jnp.asarray(x, jnp.float32)), np.float64)
    for j in range(len(chunk)):  # one window at a time, in float64
      err = pred[j] - y[j]
      last = x[j, -1][None, :] - y[j]
      sums["se"] += np.sum(err ** 2)
      sums["ae"] += np.sum(np.abs(err))
      sums["se_last"] += np.sum(last ** 2)
      sums["ae_last"] += np.sum(np.abs(last))
      sums["se_zero"] += np.sum(y[j] ** 2)
      sums["ae_zero"] += np.sum(np.abs(y[j]))
  n = len(windows) * H * 7
  assert len(windows) == 2785 and got["test_windows"] == 2785
  want = {"test_mse": sums["se"] / n, "test_mae": sums["ae"] / n,
          "test_mse_repeat_last": sums["se_last"] / n, "test_mae_repeat_last": sums["ae_last"] / n,
          "test_mse_zero": sums["se_zero"] / n, "test_mae_zero": sums["ae_zero"] / n}
  for k, v in want.items():
    np.testing.assert_allclose(got[k], v, rtol=2e-5, err_msg=k)
  assert got["val_windows"] == 2785


def test_forecast_trains_end_to_end(data_dir, prepared_dir, tmp_path):
  c = _config(data_dir, prepared_dir, lookback=48, horizon=24)
  train_and_evaluate(c, str(tmp_path), build_task)
  logged = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  losses = [m["loss"] for m in logged if m["split"] == "train"]
  assert losses[-1] < losses[0]
  evals = [m for m in logged if m["split"] == "eval"]
  assert [m["step"] for m in evals] == [10, 20] and evals[-1]["windows"] == 2857
  # validation rows [8640 - 48, 11520): 2928 - 48 - 24 + 1 = 2857 windows, all of them
  final = json.load(open(tmp_path / "final_metrics.json"))
  assert {"test_mse", "test_mae", "test_mse_repeat_last", "test_mse_zero"} <= set(final)
  assert json.load(open(tmp_path / "scaler.json"))["columns"][-1] == "OT"


# The LSTM trains end to end above; by default one more family here, every other forecaster
# under -m slow (compilation dominates their time).
FAST = ("transformer",)


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow)
                                  for n in MODELS.names(kind="forecaster")])
def test_every_forecaster_gives_a_finite_loss_and_gradient(name, data_dir, prepared_dir):
  task = ForecastTask(_config(data_dir, prepared_dir, name, lookback=24, horizon=8))
  batch = task.train_source().batch(0, slice(0, 16))
  params = task.init_params(jax.random.PRNGKey(0))
  loss, grads = jax.jit(jax.value_and_grad(
      lambda p: task.loss_fn(p, batch, jax.random.PRNGKey(1))[0]))(params)
  assert np.isfinite(float(loss)) and float(loss) > 0
  norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
  assert all(np.isfinite(norms)) and max(norms) > 0
  assert task.model.apply({"params": params}, batch["x"]).shape == (16, 8, 7)
