"""Tokenizers built locally from the training split (nothing downloaded).

* ``CharTokenizer`` (text.py): one id per character.
* ``WordTokenizer``: whitespace-separated words seen at least ``min_count`` times in training;
  the rest map to ``<unk>``.
* ``SentencePieceTokenizer``: a subword model (BPE by default) trained here with sentencepiece,
  e.g. one joint English-German vocabulary for translation; byte fallback makes it lossless on
  characters never seen in training (up to sentencepiece's collapsing of whitespace runs).

Word and subword tokenizers share the special ids pad 0, unk 1, bos 2, eos 3. Each saves to one
file next to the checkpoint (``save_tokenizer(workdir, tok)``) and ``load_tokenizer`` reads any of
them back, so sampling and evaluation use exactly the tokenizer training used.
"""

from __future__ import annotations

import collections
import io
import json
import os
from collections.abc import Iterable

import numpy as np
import sentencepiece as spm

from seqgen_jax.data.text import CharTokenizer
from seqgen_jax.errors import DataError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")


class WordTokenizer:
  """Words (whitespace-split, optionally lower-cased) with a frequency cut-off."""

  pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID
  filename = "tokenizer.json"

  def __init__(self, words: list[str], *, lowercase: bool = False, min_count: int = 1):
    self.vocab = list(SPECIALS) + [w for w in words if w not in SPECIALS]
    self.lowercase = lowercase
    self.min_count = min_count
    self._index = {w: i for i, w in enumerate(self.vocab)}

  @classmethod
  def build(cls, texts: Iterable[str], *, min_count: int = 1, max_size: int | None = None,
            lowercase: bool = False) -> WordTokenizer:
    """Keeps words seen at least ``min_count`` times, most frequent first (ties: alphabetical)."""
    counts = collections.Counter()
    for t in texts:
      counts.update((t.lower() if lowercase else t).split())
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if max_size is not None:
      words = words[:max(0, max_size - len(SPECIALS))]
    return cls(words, lowercase=lowercase, min_count=min_count)

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def split(self, text: str) -> list[str]:
    return (text.lower() if self.lowercase else text).split()

  def encode(self, text: str) -> np.ndarray:
    return np.asarray([self._index.get(w, UNK_ID) for w in self.split(text)], np.int32)

  def decode(self, ids) -> str:
    return " ".join(self.vocab[int(i)] for i in ids if int(i) not in (PAD_ID, BOS_ID, EOS_ID))

  def save(self, path: str) -> None:
    with open(path, "w") as f:
      json.dump({"type": "word", "vocab": self.vocab[len(SPECIALS):],
                 "lowercase": self.lowercase, "min_count": self.min_count}, f)

  @classmethod
  def load(cls, path: str) -> WordTokenizer:
    with open(path) as f:
      d = json.load(f)
    return cls(d["vocab"], lowercase=d["lowercase"], min_count=d["min_count"])


class SentencePieceTokenizer:
  """A sentencepiece subword model, trained locally; ids pad 0, unk 1, bos 2, eos 3."""

  pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID
  filename = "tokenizer.model"

  def __init__(self, model_proto: bytes):
    self.model_proto = bytes(model_proto)
    self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)

  @classmethod
  def train(cls, sentences: Iterable[str], *, vocab_size: int, model_type: str = "bpe",
            character_coverage: float = 1.0) -> SentencePieceTokenizer:
    """Trains on ``sentences``; one thread, so the model is the same on every machine."""
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=out, vocab_size=vocab_size,
        model_type=model_type, character_coverage=character_coverage,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        hard_vocab_limit=False,  # a small corpus may support fewer pieces than asked for
        byte_fallback=True,  # characters unseen in training become UTF-8 bytes, not <unk>
        num_threads=1, minloglevel=2)
    return cls(out.getvalue())

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._sp.encode(text), np.int32)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    return [np.asarray(ids, np.int32) for ids in self._sp.encode(texts)]

  def decode(self, ids) -> str:
    return self._sp.decode([int(i) for i in ids if int(i) not in (PAD_ID, BOS_ID, EOS_ID)])

  def save(self, path: str) -> None:
    with open(path, "wb") as f:
      f.write(self.model_proto)

  @classmethod
  def load(cls, path: str) -> SentencePieceTokenizer:
    with open(path, "rb") as f:
      return cls(f.read())


Tokenizer = CharTokenizer | WordTokenizer | SentencePieceTokenizer


def save_tokenizer(workdir: str, tokenizer: Tokenizer) -> str:
  """Writes ``tokenizer`` next to the checkpoints (tokenizer.json or tokenizer.model)."""
  path = os.path.join(workdir, getattr(tokenizer, "filename", "tokenizer.json"))
  tokenizer.save(path)
  return path


def load_tokenizer(path: str) -> Tokenizer:
  """Reads back any saved tokenizer: a file, or a workdir holding tokenizer.json / .model."""
  if os.path.isdir(path):
    for name in ("tokenizer.model", "tokenizer.json"):
      if os.path.isfile(os.path.join(path, name)):
        return load_tokenizer(os.path.join(path, name))
    raise DataError(f"no tokenizer.json or tokenizer.model in {path}")
  if path.endswith(".model"):
    return SentencePieceTokenizer.load(path)
  with open(path) as f:
    kind = json.load(f).get("type")
  loaders = {"char": CharTokenizer.load, "word": WordTokenizer.load}
  if kind not in loaders:
    raise DataError(f"{path}: unknown tokenizer type {kind!r}; known: char, word, sentencepiece")
  return loaders[kind](path)
