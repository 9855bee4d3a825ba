"""Tiny Shakespeare (Karpathy's char-rnn corpus): TFDS builder and the char-LM loader.

Split as in nanoGPT's ``data/shakespeare_char/prepare.py``: the first 90% of the characters for
training (1,003,854), the last 10% for validation (111,540). Each split is one example holding
its text; the loader encodes it with a character vocabulary taken from the whole corpus (65
symbols) and serves random windows, so a batch is a pure function of (seed, step).
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from seqgen_jax.data import builder as builder_lib
from seqgen_jax.data import raw, text

TRAIN_FRACTION = 0.9

RAW_FILES = {
    "input": raw.RawFile(
        path="tinyshakespeare/input.txt.gz",
        sha256="c77631bdf5bfd0d1a6dda8fe3c1b3d6178032ea93291b077e144be99f8855729",
        content_sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        url=text.TINY_SHAKESPEARE_URL, download_as="tinyshakespeare/input.txt"),
}


class TinyShakespeare(builder_lib.SeqgenBuilder):
  """Tiny Shakespeare, 1,115,394 characters; train = first 90%, validation = last 10%."""

  name = "seqgen_tiny_shakespeare"
  DATASET = "Tiny Shakespeare"
  HOMEPAGE = "https://github.com/karpathy/char-rnn"
  SPLIT_SIZES = {"train": 1, "validation": 1}

  def raw_files(self):
    return RAW_FILES

  def _features(self):
    return tfds.features.FeaturesDict({"text": tfds.features.Text()})

  def _metadata(self):
    return {"train_fraction": TRAIN_FRACTION}

  def _splits(self, located):
    corpus = located["input"].read_text("utf-8")
    n = int(len(corpus) * TRAIN_FRACTION)
    return {"train": iter([(0, {"text": corpus[:n]})]),
            "validation": iter([(0, {"text": corpus[n:]})])}


@dataclasses.dataclass
class CharLMData:
  """What a character-level language model needs."""

  train: text.RandomWindows
  eval: text.RandomWindows
  tokenizer: text.CharTokenizer
  train_text: str
  val_text: str

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.vocab_size


def from_builder(b: tfds.core.DatasetBuilder, *, seq_len: int, batch_size: int,
                 eval_batch_size: int, seed: int, eval_seed: int) -> CharLMData:
  """Random-window sources over a prepared (or mocked) Tiny Shakespeare builder."""
  train_text = builder_lib.SplitReader(b, "train").get([0])[0]["text"].decode("utf-8")
  val_text = builder_lib.SplitReader(b, "validation").get([0])[0]["text"].decode("utf-8")
  tok = text.CharTokenizer.from_text(train_text + val_text)
  return CharLMData(
      train=text.RandomWindows(tok.encode(train_text), seq_len, batch_size, seed),
      eval=text.RandomWindows(tok.encode(val_text), seq_len, eval_batch_size, eval_seed),
      tokenizer=tok, train_text=train_text, val_text=val_text)


def load(options: builder_lib.DataOptions, *, seq_len: int, batch_size: int,
         eval_batch_size: int, seed: int, eval_seed: int) -> CharLMData:
  """Prepares Tiny Shakespeare if needed and returns random-window train / eval sources."""
  return from_builder(builder_lib.prepare(TinyShakespeare, options), seq_len=seq_len,
                      batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
                      eval_seed=eval_seed)
