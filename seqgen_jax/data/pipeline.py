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
