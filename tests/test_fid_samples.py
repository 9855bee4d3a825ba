"""FID sample sets on disk (seqgen_jax/eval/fid_samples.py): shards, fingerprints, resuming.

The end-to-end use (a diffusion run evaluated, stopped, resumed and sharded through
experiments/diffusion_eval.py) is in tests/test_diffusion_task.py; these pin the pieces.
"""

import os

import jax
import numpy as np
import pytest

from seqgen_jax.errors import ConfigError
from seqgen_jax.eval import fid_samples

SHAPE = (2, 2, 1)


def _maker(calls):
  """make_batch that records which batches it made; sample k is filled with the value k."""
  def make(first, labels):
    calls.append(first)
    return np.broadcast_to(np.arange(first, first + len(labels), dtype=np.uint8)[:, None, None,
                                                                                  None],
                           (len(labels), *SHAPE)).copy()
  return make


def test_parse_shard():
  assert fid_samples.parse_shard("") is None
  assert fid_samples.parse_shard("1/3") == (1, 3) and fid_samples.parse_shard(" 0/2 ") == (0, 2)
  for bad in ("1-2", "2/2", "a/b", "3/1"):
    with pytest.raises(ConfigError, match="expected 'i/k'"):
      fid_samples.parse_shard(bad)


def test_fingerprint_names_params_seed_and_settings():
  base = ({"w": np.ones(3)}, jax.random.PRNGKey(0), "ddim-2", 0.0, 10, 10, (28, 28, 1))
  fp = fid_samples.sample_fingerprint(*base)
  assert len(fp) == 12 and fp == fid_samples.sample_fingerprint(*base)
  # Another seed, other params, another sampler, weight, count, batch size: another sample set.
  changes = [(1, jax.random.PRNGKey(1)), (0, {"w": np.full(3, 2.0)}), (2, "ddim-3"), (3, 1.0),
             (4, 20), (5, 5)]
  for i, value in changes:
    other = list(base)
    other[i] = value
    assert fid_samples.sample_fingerprint(*other) != fp, i


def test_batches_are_saved_and_reloaded_instead_of_made_again(tmp_path):
  labels = np.arange(7) % 3
  prefix = str(tmp_path / "set")
  calls = []
  batches, resumed = fid_samples.sample_batches(_maker(calls), labels, 3, SHAPE, prefix=prefix)
  assert calls == [0, 3, 6] and resumed == 0 and [len(b) for b in batches] == [3, 3, 1]
  assert sorted(os.listdir(tmp_path)) == ["set_0000000.npy", "set_0000003.npy",
                                          "set_0000006.npy"]  # no temporary left behind
  want = np.concatenate(batches)
  np.testing.assert_array_equal(want[:, 0, 0, 0], np.arange(7))
  os.remove(tmp_path / "set_0000003.npy")  # a run stopped before this batch
  calls.clear()
  again, resumed = fid_samples.sample_batches(_maker(calls), labels, 3, SHAPE, prefix=prefix)
  assert calls == [3] and resumed == 4
  np.testing.assert_array_equal(np.concatenate(again), want)


def test_shards_make_disjoint_batches_that_together_are_the_whole_set(tmp_path):
  labels = np.zeros(10, np.int64)
  prefix = str(tmp_path / "set")
  made = []
  for i in range(3):
    calls = []
    fid_samples.sample_batches(_maker(calls), labels, 2, SHAPE, prefix=prefix, shard=(i, 3))
    assert calls == [2 * b for b in range(5) if b % 3 == i]
    made += calls
  assert sorted(made) == [0, 2, 4, 6, 8]
  calls = []
  batches, resumed = fid_samples.sample_batches(_maker(calls), labels, 2, SHAPE, prefix=prefix)
  assert calls == [] and resumed == 10
  np.testing.assert_array_equal(np.concatenate(batches)[:, 0, 0, 0], np.arange(10))


def test_a_batch_of_another_shape_on_disk_is_a_one_line_error(tmp_path):
  np.save(tmp_path / "set_0000000.npy", np.zeros((3, 4, 4, 1), np.uint8))
  with pytest.raises(ConfigError, match=r"holds uint8\[3, 4, 4, 1\], not the uint8\[3, 2, 2, 1\] "
                                        r"batch .*delete it"):
    fid_samples.sample_batches(_maker([]), np.zeros(3), 3, SHAPE, prefix=str(tmp_path / "set"))
