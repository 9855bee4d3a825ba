"""Synthetic tasks, the char tokenizer, Tiny Shakespeare's split, data-dir errors."""

import gzip

import numpy as np
import pytest

from seqgen_jax.data import synthetic, text
from seqgen_jax.data.pipeline import StepIterator
from seqgen_jax.errors import DataError


def test_copy_task_layout():
  task = synthetic.CopyTask(length=5, delay=7, alphabet=4, global_batch_size=6, seed=0)
  b = task.batch(3, slice(0, 6))
  assert b["inputs"].shape == (6, task.seq_len) == (6, 17)
  np.testing.assert_array_equal(b["inputs"][:, 1:], b["targets"][:, :-1])  # next-token targets
  for row_in, row_t, row_w in zip(b["inputs"], b["targets"], b["weights"]):
    symbols = row_in[:5]
    assert set(symbols.tolist()) <= {2, 3, 4, 5}
    assert np.all(row_in[5:12] == synthetic.BLANK) and row_in[12] == synthetic.GO
    np.testing.assert_array_equal(row_t[row_w > 0], symbols)  # scored exactly on the copy
    assert row_w.sum() == 5


def test_associative_recall_answer_is_the_queried_value():
  task = synthetic.AssociativeRecall(num_pairs=4, num_keys=6, num_values=5, global_batch_size=50,
                                     seed=1)
  b = task.batch(0, slice(0, 50))
  for row_in, row_t, row_w in zip(b["inputs"], b["targets"], b["weights"]):
    pairs = row_in[:8].reshape(4, 2)
    table = {int(k): int(v) for k, v in pairs}
    assert len(table) == 4  # distinct keys
    assert row_in[8] == synthetic.GO
    assert row_t[row_w > 0].tolist() == [table[int(row_in[9])]]


@pytest.mark.parametrize("make", [
    lambda: synthetic.CopyTask(length=3, delay=2, alphabet=5, global_batch_size=8, seed=7),
    lambda: synthetic.AssociativeRecall(num_pairs=3, num_keys=4, num_values=4,
                                        global_batch_size=8, seed=7),
])
def test_batches_are_deterministic_and_rows_are_slices(make):
  a, b = make(), make()
  for i in (0, 5):
    full = a.batch(i, slice(0, 8))
    np.testing.assert_array_equal(full["inputs"], b.batch(i, slice(0, 8))["inputs"])
    halves = [a.batch(i, slice(0, 4)), a.batch(i, slice(4, 8))]  # two hosts' shares
    np.testing.assert_array_equal(np.concatenate([h["inputs"] for h in halves]), full["inputs"])
  assert not np.array_equal(a.batch(0, slice(0, 8))["inputs"], a.batch(1, slice(0, 8))["inputs"])


def test_step_iterator_state_round_trip():
  src = synthetic.CopyTask(length=3, delay=2, alphabet=5, global_batch_size=4, seed=0)
  it = StepIterator(src)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = next(it)
  it2 = StepIterator(src)
  it2.set_state(state)
  np.testing.assert_array_equal(next(it2)["inputs"], expected["inputs"])


def test_char_tokenizer_round_trip(tmp_path):
  tok = text.CharTokenizer.from_text("hello, world\n")
  ids = tok.encode("world, hello")
  assert tok.decode(ids) == "world, hello"
  tok.save(tmp_path / "t.json")
  assert text.CharTokenizer.load(tmp_path / "t.json").vocab == tok.vocab
  with pytest.raises(ValueError, match="'z' is not in the tokenizer's vocabulary"):
    tok.encode("z")


def test_tiny_shakespeare_split_matches_nanogpt(data_dir):
  corpus = text.load_tiny_shakespeare(str(data_dir))
  assert len(corpus) == text.TINY_SHAKESPEARE_CHARS
  tok = text.CharTokenizer.from_text(corpus)
  assert tok.vocab_size == 65
  train, val = text.split_train_val(tok.encode(corpus))
  assert (len(train), len(val)) == (1_003_854, 111_540)  # nanoGPT's prepare.py numbers
  windows = text.RandomWindows(val, 32, 4, seed=0).batch(0, slice(0, 4))
  np.testing.assert_array_equal(windows["inputs"][:, 1:], windows["targets"][:, :-1])


def test_missing_data_dir_and_file_errors(tmp_path):
  with pytest.raises(DataError, match=r"data directory .*nope .* does not exist; download https"):
    text.load_tiny_shakespeare(str(tmp_path / "nope"))
  with pytest.raises(DataError, match=r"no file .*tinyshakespeare/input.txt.gz or .*input.txt"):
    text.load_tiny_shakespeare(str(tmp_path))
  (tmp_path / "tinyshakespeare").mkdir()
  with gzip.open(tmp_path / "tinyshakespeare" / "input.txt.gz", "wt") as f:
    f.write("abc")
  assert text.load_tiny_shakespeare(str(tmp_path)) == "abc"
