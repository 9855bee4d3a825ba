"""Step-indexed batch iterators: batch i is a pure function of (seed, i).

Because a batch depends only on its index, the iterator's whole state is the next index: it goes
into every checkpoint and a restored run reads exactly the batches the uninterrupted run would
have read. Each process builds only its own rows of the global batch (``rows``), so multi-host
loading needs no coordination.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

Batch = dict[str, np.ndarray]


class StepSource(Protocol):
  """A deterministic map from batch index to the rows ``rows`` of that global batch."""

  global_batch_size: int

  def batch(self, index: int, rows: slice) -> Batch:
    ...


class StepIterator(Iterator[Batch]):
  """Iterates ``source`` from ``start``; ``get_state`` / ``set_state`` save and restore it."""

  def __init__(self, source: StepSource, rows: slice | None = None, start: int = 0):
    self.source = source
    self.rows = rows if rows is not None else slice(0, source.global_batch_size)
    self.next_index = int(start)

  def __next__(self) -> Batch:
    batch = self.source.batch(self.next_index, self.rows)
    self.next_index += 1
    return batch

  def get_state(self) -> dict:
    return {"next_index": self.next_index}

  def set_state(self, state: dict) -> None:
    self.next_index = int(state["next_index"])


def index_rng(seed: int, index: int) -> np.random.Generator:
  """The numpy generator for batch ``index`` of a stream seeded with ``seed``."""
  return np.random.default_rng([int(seed), int(index)])


# ---------------------------------------------------------------------- example-level sources
#
# A finite dataset is read as an endless stream of epochs: stream position p (= index * B + row
# of the global batch) is example perm_e[p mod n] of epoch e = p // n, with perm_e a permutation
# drawn from (seed, e). Every epoch visits every example exactly once, a batch may straddle two
# epochs, and because the rows of one host are a slice of the global batch, hosts read disjoint
# examples that together make up the global batch.

_PERMUTATION_SALT = 0x5EED


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The order of epoch ``epoch``: a permutation of [0, n) that depends only on (seed, epoch)."""
  return np.random.default_rng([int(seed), int(epoch), _PERMUTATION_SALT]).permutation(n)


class ShuffledSampler:
  """Training order: epochs of fresh permutations (or the natural order, ``shuffle=False``)."""

  def __init__(self, num_examples: int, global_batch_size: int, seed: int, *,
               shuffle: bool = True):
    if num_examples < 1:
      raise ValueError("cannot sample from an empty split")
    self.num_examples = int(num_examples)
    self.global_batch_size = int(global_batch_size)
    self.seed = int(seed)
    self.shuffle = shuffle
    self._cache: dict[int, np.ndarray] = {}

  def _order(self, epoch: int) -> np.ndarray:
    if epoch not in self._cache:
      if len(self._cache) >= 4:
        self._cache.pop(min(self._cache))
      self._cache[epoch] = (epoch_permutation(self.seed, epoch, self.num_examples)
                            if self.shuffle else np.arange(self.num_examples))
    return self._cache[epoch]

  def positions(self, index: int, rows: slice) -> np.ndarray:
    """Stream positions of these rows of global batch ``index``."""
    start, stop, _ = rows.indices(self.global_batch_size)
    return int(index) * self.global_batch_size + np.arange(start, stop, dtype=np.int64)

  def epoch(self, index: int) -> int:
    """The epoch that batch ``index`` starts in."""
    return int(index) * self.global_batch_size // self.num_examples

  def sample(self, index: int, rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """(example ids, weights) for these rows of batch ``index``; weights are all 1."""
    pos = self.positions(index, rows)
    epochs, within = np.divmod(pos, self.num_examples)
    ids = np.empty(len(pos), np.int64)
    for e in np.unique(epochs):
      sel = epochs == e
      ids[sel] = self._order(int(e))[within[sel]]
    return ids, np.ones(len(pos), np.float32)


class EvalSampler:
  """Evaluation order: every example exactly once, in order; the last batch is padded.

  Padding rows repeat example 0 with weight 0, so summed metrics (weighted by ``weight``) are
  exact over the split whatever the batch size.
  """

  def __init__(self, num_examples: int, global_batch_size: int):
    self.num_examples = int(num_examples)
    self.global_batch_size = int(global_batch_size)
    self.num_batches = -(-self.num_examples // self.global_batch_size)

  def sample(self, index: int, rows: slice) -> tuple[np.ndarray, np.ndarray]:
    start, stop, _ = rows.indices(self.global_batch_size)
    pos = int(index) * self.global_batch_size + np.arange(start, stop, dtype=np.int64)
    valid = pos < self.num_examples
    return np.where(valid, pos, 0), valid.astype(np.float32)


class ExampleSource:
  """A StepSource over a random-access split: sampler -> ids -> reader -> collate -> batch.

  Args:
    reader: has ``get(keys) -> list of example dicts`` (e.g. builder.SplitReader).
    sampler: a ShuffledSampler (training) or EvalSampler (evaluation).
    collate: ``collate(examples, weight) -> Batch``; ``weight`` is float32 [rows].
    keys: optional map from the sampler's ids to the reader's record keys (a subset of the
      split, e.g. the training folds of a cross-validation split).
  """

  def __init__(self, reader, sampler, collate, keys: np.ndarray | None = None):
    self.reader = reader
    self.sampler = sampler
    self.collate = collate
    self.keys = None if keys is None else np.asarray(keys, np.int64)
    self.global_batch_size = sampler.global_batch_size
    self.num_examples = sampler.num_examples
    self.num_batches = getattr(sampler, "num_batches", None)  # eval sources: one full pass

  def example_ids(self, index: int, rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """(ids within this source, weights) of these rows of batch ``index``."""
    return self.sampler.sample(index, rows)

  def batch(self, index: int, rows: slice) -> Batch:
    ids, weight = self.sampler.sample(index, rows)
    keys = ids if self.keys is None else self.keys[ids]
    return self.collate(self.reader.get(keys), weight)


def pad_sequences(seqs: list[np.ndarray], length: int, pad_id: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
  """int32 [B, length] ids (truncated or right-padded with ``pad_id``) and bool [B, length] mask."""
  ids = np.full((len(seqs), length), pad_id, np.int32)
  mask = np.zeros((len(seqs), length), bool)
  for i, s in enumerate(seqs):
    n = min(len(s), length)
    ids[i, :n] = s[:n]
    mask[i, :n] = True
  return ids, mask
