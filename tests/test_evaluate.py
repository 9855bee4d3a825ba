"""train/evaluate.py: sums over an eval source on the mesh against a plain Python loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqgen_jax.data.pipeline import EvalSampler
from seqgen_jax.errors import ConfigError
from seqgen_jax.train import sharding
from seqgen_jax.train.evaluate import Evaluator, evaluate

NUM_EXAMPLES, BATCH = 37, 16  # 3 batches, the last with 11 padding rows


class _Source:
  """Example k is x = [k, k^2 / 100, 1] with label k % 3; padding rows have weight 0."""

  def __init__(self, batch_size=BATCH):
    self.sampler = EvalSampler(NUM_EXAMPLES, batch_size)
    self.global_batch_size, self.num_batches = batch_size, self.sampler.num_batches
    self.rows_seen = []

  def batch(self, index, rows):
    self.rows_seen.append((index, rows.start, rows.stop))
    ids, weight = self.sampler.sample(index, rows)
    x = np.stack([ids, ids**2 / 100.0, np.ones_like(ids)], axis=1).astype(np.float32)
    return {"x": x, "label": (ids % 3).astype(np.int32), "weight": weight}


def _sums(params, batch):
  w_B = batch["weight"]
  pred_B = batch["x"] @ params["w"]
  return {"se": jnp.sum(jnp.square(pred_B - batch["label"]) * w_B), "count": jnp.sum(w_B),
          "per_class": jnp.sum(jax.nn.one_hot(batch["label"], 3) * w_B[:, None], axis=0)}


def _loop(params, num_batches=None):
  """The same sums, one example at a time, in float64."""
  w = np.asarray(params["w"], np.float64)
  n = NUM_EXAMPLES if num_batches is None else min(NUM_EXAMPLES, num_batches * BATCH)
  se, per_class = 0.0, np.zeros(3)
  for k in range(n):
    se += (np.dot([k, k**2 / 100.0, 1.0], w) - k % 3) ** 2
    per_class[k % 3] += 1
  return {"se": se, "count": float(n), "per_class": per_class}


PARAMS = {"w": np.array([0.01, -0.02, 0.5], np.float32)}


@pytest.mark.parametrize("devices, fsdp", [(1, 1), (8, 1), (8, 2)])
def test_whole_split_sums_equal_a_loop_on_any_mesh(devices, fsdp):
  mesh = sharding.make_mesh(fsdp, jax.devices()[:devices])
  got = Evaluator(mesh).sums(_sums, PARAMS, _Source())
  want = _loop(PARAMS)
  assert got["count"] == want["count"] == NUM_EXAMPLES  # every example once, padding excluded
  np.testing.assert_allclose(got["se"], want["se"], rtol=1e-5)
  np.testing.assert_array_equal(got["per_class"], want["per_class"])
  assert isinstance(got["se"], np.ndarray)


def test_first_batches_only_and_each_function_compiles_once():
  traces = []

  def counted(params, batch):
    traces.append(1)  # runs once per trace, not per call
    return _sums(params, batch)

  ev = Evaluator(sharding.make_mesh())
  src = _Source()
  got = ev.sums(counted, PARAMS, src, num_batches=2)
  np.testing.assert_allclose(got["se"], _loop(PARAMS, 2)["se"], rtol=1e-5)
  assert [i for i, *_ in src.rows_seen] == [0, 1]
  assert src.rows_seen[0][1:] == (0, BATCH)  # one process: it loads every row
  ev.sums(counted, PARAMS, src)
  assert len(traces) == 1


def test_periodic_evaluate_finalizes_the_task_sums():
  class _Task:
    eval_step = staticmethod(_sums)

    def eval_source(self):
      return _Source(), 1

    def finalize_eval(self, sums):
      return {"mse": float(sums["se"] / sums["count"])}

  want = _loop(PARAMS, 1)
  got = evaluate(_Task(), Evaluator(sharding.make_mesh()), PARAMS)
  assert got["mse"] == pytest.approx(want["se"] / want["count"], rel=1e-5)


def test_a_batch_that_does_not_split_over_the_devices_is_a_config_error():
  with pytest.raises(ConfigError, match="global batch size 12 is not divisible by the 8"):
    Evaluator(sharding.make_mesh()).sums(_sums, PARAMS, _Source(batch_size=12))
