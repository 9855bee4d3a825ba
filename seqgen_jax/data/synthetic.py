"""Synthetic long-range-memory tasks that need no data files.

Both are posed as next-token prediction with a loss mask, so every causal sequence model
(Transformer, RNN, ...) trains on them through the same language-modelling task:

* ``copy``: copy-with-delay (the "copy memory" problem of Hochreiter & Schmidhuber 1997 and
  Arjovsky et al. 2016). ``L`` random symbols, ``D`` blanks, a go marker, then the model must
  reproduce the ``L`` symbols. Dependency length: ``L + D + 1``.
* ``assoc_recall``: associative recall (Ba et al. 2016; the "induction head" task). ``K``
  key-value pairs, a separator, a query key; the model must output that key's value.

Token 0 is the blank / padding symbol and token 1 the go / separator marker.
"""

from __future__ import annotations

import numpy as np

from seqgen_jax.data.pipeline import Batch, index_rng

BLANK, GO = 0, 1


class CopyTask:
  """Copy ``length`` symbols from an alphabet of ``alphabet`` after ``delay`` blanks."""

  def __init__(self, *, length: int, delay: int, alphabet: int, global_batch_size: int,
               seed: int):
    self.length, self.delay, self.alphabet = length, delay, alphabet
    self.global_batch_size = global_batch_size
    self.seed = seed
    self.vocab_size = alphabet + 2
    self.seq_len = 2 * length + delay  # model input length

  def batch(self, index: int, rows: slice) -> Batch:
    rng = index_rng(self.seed, index)
    sym = rng.integers(2, 2 + self.alphabet, size=(self.global_batch_size, self.length))[rows]
    n = sym.shape[0]
    x = np.concatenate([sym, np.full((n, self.delay), BLANK), np.full((n, 1), GO), sym], axis=1)
    weights = np.zeros((n, self.seq_len), np.float32)
    weights[:, self.length + self.delay:] = 1.0
    return {"inputs": x[:, :-1].astype(np.int32), "targets": x[:, 1:].astype(np.int32),
            "weights": weights}

  def describe(self, inputs: np.ndarray, predictions: np.ndarray) -> str:
    """One example as text: the symbols to copy, and what the model produced at the copy slots."""
    want = inputs[:self.length]
    got = predictions[self.length + self.delay:]
    return f"copy {want.tolist()} after {self.delay} blanks -> model {got.tolist()}"


class AssociativeRecall:
  """``num_pairs`` key-value pairs, then a query key; predict its value."""

  def __init__(self, *, num_pairs: int, num_keys: int, num_values: int, global_batch_size: int,
               seed: int):
    if num_pairs > num_keys:
      raise ValueError(f"num_pairs={num_pairs} needs at least that many keys, got {num_keys}")
    self.num_pairs, self.num_keys, self.num_values = num_pairs, num_keys, num_values
    self.global_batch_size = global_batch_size
    self.seed = seed
    self.vocab_size = 2 + num_keys + num_values
    self.seq_len = 2 * num_pairs + 2

  def batch(self, index: int, rows: slice) -> Batch:
    rng = index_rng(self.seed, index)
    b = self.global_batch_size
    keys = np.argsort(rng.random((b, self.num_keys)), axis=1)[:, :self.num_pairs] + 2
    values = rng.integers(0, self.num_values, size=(b, self.num_pairs)) + 2 + self.num_keys
    which = rng.integers(0, self.num_pairs, size=b)
    keys, values, which = keys[rows], values[rows], which[rows]
    n = keys.shape[0]
    pairs = np.stack([keys, values], axis=2).reshape(n, 2 * self.num_pairs)
    query = keys[np.arange(n), which][:, None]
    answer = values[np.arange(n), which][:, None]
    x = np.concatenate([pairs, np.full((n, 1), GO), query, answer], axis=1)
    weights = np.zeros((n, self.seq_len), np.float32)
    weights[:, -1] = 1.0
    return {"inputs": x[:, :-1].astype(np.int32), "targets": x[:, 1:].astype(np.int32),
            "weights": weights}

  def describe(self, inputs: np.ndarray, predictions: np.ndarray) -> str:
    pairs = inputs[:2 * self.num_pairs].reshape(-1, 2).tolist()
    return f"pairs {pairs} query {int(inputs[-1])} -> model {int(predictions[-1])}"
