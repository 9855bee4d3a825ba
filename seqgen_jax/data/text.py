"""Character-level text: the Tiny Shakespeare corpus, a char tokenizer and window sampling."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np

from seqgen_jax.data import datadir
from seqgen_jax.data.pipeline import Batch, index_rng

TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt")
TINY_SHAKESPEARE_CHARS = 1_115_394


class CharTokenizer:
  """Maps each character of a fixed vocabulary to its index (sorted order, as in nanoGPT)."""

  def __init__(self, vocab: str):
    self.vocab = vocab
    self._index = {c: i for i, c in enumerate(vocab)}

  @classmethod
  def from_text(cls, text: str) -> CharTokenizer:
    return cls("".join(sorted(set(text))))

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def encode(self, text: str) -> np.ndarray:
    try:
      return np.fromiter((self._index[c] for c in text), np.int32, len(text))
    except KeyError as e:
      raise ValueError(f"character {e.args[0]!r} is not in the tokenizer's vocabulary") from None

  def decode(self, ids) -> str:
    return "".join(self.vocab[int(i)] for i in ids)

  def save(self, path: str) -> None:
    with open(path, "w") as f:
      json.dump({"type": "char", "vocab": self.vocab}, f)

  @classmethod
  def load(cls, path: str) -> CharTokenizer:
    with open(path) as f:
      return cls(json.load(f)["vocab"])


def load_tiny_shakespeare(data_dir: str | None) -> str:
  """The full Tiny Shakespeare text (1,115,394 characters) from ``<data_dir>/tinyshakespeare/``."""
  path = datadir.find_file(
      data_dir, ["tinyshakespeare/input.txt.gz", "tinyshakespeare/input.txt"],
      dataset="Tiny Shakespeare",
      how_to_get=f"download {TINY_SHAKESPEARE_URL} into <data_dir>/tinyshakespeare/")
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8") as f:
    return f.read()


def split_train_val(ids: np.ndarray, train_fraction: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
  """First ``train_fraction`` of the corpus for training, the rest for validation (nanoGPT)."""
  n = int(len(ids) * train_fraction)
  return ids[:n], ids[n:]


class RandomWindows:
  """Batches of random windows of ``seq_len + 1`` tokens (inputs and next-token targets)."""

  def __init__(self, ids: np.ndarray, seq_len: int, global_batch_size: int, seed: int):
    if len(ids) <= seq_len + 1:
      raise ValueError(f"text of {len(ids)} tokens is too short for windows of {seq_len + 1}")
    self.ids = np.asarray(ids, np.int32)
    self.seq_len = seq_len
    self.global_batch_size = global_batch_size
    self.seed = seed

  def batch(self, index: int, rows: slice) -> Batch:
    starts = index_rng(self.seed, index).integers(
        0, len(self.ids) - self.seq_len - 1, size=self.global_batch_size)[rows]
    window = self.ids[starts[:, None] + np.arange(self.seq_len + 1)[None, :]]
    return {"inputs": window[:, :-1], "targets": window[:, 1:],
            "weights": np.ones((len(starts), self.seq_len), np.float32)}


def save_tokenizer_next_to(workdir: str, tokenizer: CharTokenizer) -> str:
  path = os.path.join(workdir, "tokenizer.json")
  tokenizer.save(path)
  return path
