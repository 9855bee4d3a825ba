"""Binary sentiment classification: SST-2 and rt-polarity builders, and the text-classification
loader.

* SST-2 (Socher et al. 2013, as in GLUE): train 67,349 (phrases and sentences) / validation 872
  / test 1,821 sentences, the test split labelled (the SentEval copy; GLUE's own test split is
  unlabelled). Online, train and validation come from GLUE's ``SST-2.zip`` and the labelled test
  split from SentEval's source; those files are laid out differently from the offline copy, so
  besides the file digests each file also carries a digest of its parsed rows.
* rt-polarity (sentence polarity v1.0, Pang & Lee 2005): 5,331 positive and 5,331 negative
  snippets (latin-1), no official split; the standard protocol (Kim 2014) is 10-fold
  cross-validation. The builder writes one ``train`` split (positive i at record 2i, negative i
  at 2i + 1, in file order); the loader cuts it
  into 10 folds by a fixed permutation and evaluates on ``fold`` (default 0).

Batches: ``{"tokens": int32[B, T], "mask": bool[B, T], "label": int32[B], "weight": float32[B]}``
with a word-level vocabulary built from the training examples only.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import tensorflow_datasets as tfds

from seqgen_jax.data import builder as builder_lib
from seqgen_jax.data import pipeline, raw
from seqgen_jax.data.tokenizers import WordTokenizer
from seqgen_jax.errors import ConfigError, DataError
from seqgen_jax.registry import Registry

CLASSES = ["negative", "positive"]
_GLUE_SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
_SENTEVAL_SST2_URL = "https://raw.githubusercontent.com/PrincetonML/SIF/master/data/sentiment-"
_RT_URL = "http://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz"
FOLD_SEED = 0
NUM_FOLDS = 10


def parse_sst_rows(content: bytes) -> list[tuple[int, str]]:
  """(label, sentence) rows of an SST-2 file in any of its layouts.

  Offline copy: a ``label<TAB>sentence`` header; GLUE: ``sentence<TAB>label`` header; SentEval:
  no header, ``sentence<TAB>label``.
  """
  # Split on "\n" only: str.splitlines would also break at U+0085 and other separators.
  lines = [ln for ln in content.decode("utf-8").split("\n") if ln.strip()]
  label_first = False
  if lines and lines[0].split("\t")[0].strip() in ("label", "sentence"):
    label_first = lines[0].split("\t")[0].strip() == "label"
    lines = lines[1:]
  rows = []
  for ln in lines:
    if label_first:
      label, sentence = ln.split("\t", 1)
    else:
      sentence, label = ln.rsplit("\t", 1)
    rows.append((int(label), sentence.strip()))
  return rows


def sst_rows_digest(content: bytes) -> str:
  """sha256 of the parsed rows, the same whatever the file layout."""
  canon = "\n".join(f"{label}\t{s}" for label, s in parse_sst_rows(content))
  return hashlib.sha256(canon.encode("utf-8")).hexdigest()


SST2_RAW = {
    "train": raw.RawFile(
        path="sst2/train.tsv.gz",
        sha256="1a5191f4d8ee1abd57495e4ca335b52c3c6791e66b1d606dbefbea881f101b1e",
        content_sha256="e981ceb4fe6c9acd1c79851d0d091b9e78103f1f2a399ca83dda27915d41c56c",
        rows_sha256="450bb11fb5aae0de0c79bff8955b97bd3829df413fce7f67b1e65007f9830180",
        url=_GLUE_SST2_URL,
        url_sha256="d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa",
        download_as="sst2/SST-2.zip", member="SST-2/train.tsv", rows_digest=sst_rows_digest),
    "validation": raw.RawFile(
        path="sst2/dev.tsv.gz",
        sha256="1f08edd0312ff92d6b211c0d30b83c82a5e7e99d1886059664afbc110db79a0d",
        content_sha256="84207e6be5873fb18db798cc6faec86871f5a426554650ff64a1c34e87665f6f",
        rows_sha256="561e76772b191d2acb16901ef069479ca28df5bad4c8506531ce117be792887c",
        url=_GLUE_SST2_URL,
        url_sha256="d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa",
        download_as="sst2/SST-2.zip", member="SST-2/dev.tsv", rows_digest=sst_rows_digest),
    "test": raw.RawFile(
        path="sst2/test.tsv.gz",
        sha256="55e2432a8e5f90e24194aaa93543c264fee3260407d8339c07aa0c9205747b7c",
        content_sha256="fcd46f967b7b8efd8b5398481dadf873886298d092195167af907fd532e81e1c",
        rows_sha256="830935e8d3ff9ce38775993d4365babf6ab3e5224e8b471c97be3c90fedd33f7",
        url=_SENTEVAL_SST2_URL + "test", download_as="sst2/sentiment-test",
        rows_digest=sst_rows_digest),
}


def _sentiment_features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({"sentence": tfds.features.Text(),
                                     "label": tfds.features.ClassLabel(names=CLASSES)})


class Sst2(builder_lib.SeqgenBuilder):
  """SST-2 binary sentiment: train / validation (GLUE dev) / test (labelled)."""

  name = "seqgen_sst2"
  DATASET = "SST-2"
  HOMEPAGE = "https://nlp.stanford.edu/sentiment/"
  SPLIT_SIZES = {"train": 67_349, "validation": 872, "test": 1_821}

  def raw_files(self):
    return SST2_RAW

  def _features(self):
    return _sentiment_features()

  def _splits(self, located):
    return {split: self._examples(located[split]) for split in ("train", "validation", "test")}

  def _examples(self, loc: raw.Located):
    for i, (label, sentence) in enumerate(parse_sst_rows(loc.read_bytes())):
      yield i, {"sentence": sentence, "label": label}


RT_RAW = {
    "pos": raw.RawFile(
        path="rt_polarity/rt-polarity.pos.gz",
        sha256="8c44337bf34eb148a6316dc46c4b00f85aa355958f114e461451526907149f92",
        content_sha256="2da124ec187a9d5a29c9f04e91c540e02baed5af8868f550a26bd6fd4dbf8bf0",
        url=_RT_URL, download_as="rt_polarity/rt-polaritydata.tar.gz",
        member="rt-polaritydata/rt-polarity.pos"),
    "neg": raw.RawFile(
        path="rt_polarity/rt-polarity.neg.gz",
        sha256="e006d5e76ae1654542419fdd24578379048a246817161d2f78e8ce7ae3e8a258",
        content_sha256="4ace77d558c3714723843f1d65b60c01e3417b208180f0728808d76ad0eeeaca",
        url=_RT_URL, download_as="rt_polarity/rt-polaritydata.tar.gz",
        member="rt-polaritydata/rt-polarity.neg"),
}


class RtPolarity(builder_lib.SeqgenBuilder):
  """Sentence polarity v1.0 (Pang & Lee 2005): one split, positives and negatives alternating."""

  name = "seqgen_rt_polarity"
  DATASET = "rt-polarity"
  HOMEPAGE = "https://www.cs.cornell.edu/people/pabo/movie-review-data/"
  SPLIT_SIZES = {"train": 10_662}

  def raw_files(self):
    return RT_RAW

  def _features(self):
    return _sentiment_features()

  def _metadata(self):
    return {"folds": NUM_FOLDS, "fold_seed": FOLD_SEED}

  def _splits(self, located):
    return {"train": self._examples(located)}

  def _examples(self, located):
    # latin-1 maps byte 0x85 to U+0085, a line break for str.splitlines: split on "\n" only.
    pos, neg = ([ln.strip() for ln in located[k].read_bytes().decode("latin-1").split("\n")
                 if ln.strip()] for k in ("pos", "neg"))
    if len(pos) != len(neg):
      raise DataError(f"rt-polarity: {len(pos)} positive but {len(neg)} negative snippets")
    for i, (p, n) in enumerate(zip(pos, neg)):  # interleaved: any prefix is balanced
      yield 2 * i, {"sentence": p, "label": 1}
      yield 2 * i + 1, {"sentence": n, "label": 0}


def rt_polarity_folds(n: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
  """(train ids, eval ids) of ``fold`` in 10-fold cross-validation over a fixed permutation."""
  if not 0 <= fold < NUM_FOLDS:
    raise ConfigError(f"rt-polarity fold {fold} is out of range; choose 0..{NUM_FOLDS - 1}")
  perm = np.random.default_rng(FOLD_SEED).permutation(n)
  bounds = np.linspace(0, n, NUM_FOLDS + 1).astype(int)
  held_out = np.sort(perm[bounds[fold]:bounds[fold + 1]])
  return np.setdiff1d(np.arange(n), held_out), held_out


# ---------------------------------------------------------------------- loader


@dataclasses.dataclass
class TextClassificationData:
  """Train / eval sources, the word tokenizer and the label set."""

  train: pipeline.ExampleSource
  eval: pipeline.ExampleSource
  tokenizer: WordTokenizer
  class_names: list[str]
  seq_len: int

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.vocab_size

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def eval_batches(self) -> int:
    return self.eval.num_batches

  def eval_texts(self) -> list[str]:
    """The eval sentences in eval order (example i is row i of the eval stream)."""
    ids = np.arange(self.eval.num_examples)
    keys = ids if self.eval.keys is None else self.eval.keys[ids]
    return [e["sentence"].decode("utf-8") for e in self.eval.reader.get(keys)]


TEXT_CLASSIFICATION_DATASETS: Registry[type[builder_lib.SeqgenBuilder]] = Registry(
    "text-classification dataset")
TEXT_CLASSIFICATION_DATASETS.register("sst2")(Sst2)
TEXT_CLASSIFICATION_DATASETS.register("rt_polarity")(RtPolarity)


def make_collate(tokenizer: WordTokenizer, seq_len: int):
  """Tokenizes, truncates to ``seq_len`` and right-pads; ``mask`` marks the real tokens."""

  def collate(examples: list[dict], weight: np.ndarray) -> pipeline.Batch:
    tokens, mask = pipeline.pad_sequences(
        [tokenizer.encode(e["sentence"].decode("utf-8")) for e in examples], seq_len,
        tokenizer.pad_id)
    return {"tokens": tokens, "mask": mask,
            "label": np.asarray([e["label"] for e in examples], np.int32),
            "weight": np.asarray(weight, np.float32)}

  return collate


def from_builder(b: tfds.core.DatasetBuilder, *, seq_len: int, batch_size: int,
                 eval_batch_size: int, seed: int, eval_split: str = "validation",
                 fold: int = 0, min_count: int = 1, max_vocab: int | None = None,
                 lowercase: bool = True, tokenizer: WordTokenizer | None = None
                 ) -> TextClassificationData:
  """Sources over a prepared (or mocked) SST-2 / rt-polarity builder; builds the vocabulary from
  the training examples unless ``tokenizer`` is given (e.g. reloaded from a workdir)."""
  if b.name == RtPolarity.name:
    reader = builder_lib.SplitReader(b, "train")
    train_keys, eval_keys = rt_polarity_folds(len(reader), fold)
    eval_reader = reader
  else:
    if eval_split not in ("validation", "test"):
      raise ConfigError(f"{b.name}: unknown eval split '{eval_split}'; choose one of: test, "
                        f"validation")
    reader, eval_reader = (builder_lib.SplitReader(b, s) for s in ("train", eval_split))
    train_keys, eval_keys = np.arange(len(reader)), np.arange(len(eval_reader))
  tok = tokenizer
  if tok is None:
    sentences = (e["sentence"].decode("utf-8") for e in reader.get(train_keys))
    tok = WordTokenizer.build(sentences, min_count=min_count, max_size=max_vocab,
                              lowercase=lowercase)
  collate = make_collate(tok, seq_len)
  if len(train_keys) == 0 or len(eval_keys) == 0:
    raise DataError(f"{b.name}: empty train or eval split")
  return TextClassificationData(
      train=pipeline.ExampleSource(
          reader, pipeline.ShuffledSampler(len(train_keys), batch_size, seed), collate,
          keys=train_keys),
      eval=pipeline.ExampleSource(
          eval_reader, pipeline.EvalSampler(len(eval_keys), eval_batch_size), collate,
          keys=eval_keys),
      tokenizer=tok, class_names=list(b.info.features["label"].names), seq_len=seq_len)


def load(name: str, options: builder_lib.DataOptions, *, seq_len: int, batch_size: int,
         eval_batch_size: int, seed: int, eval_split: str = "validation", fold: int = 0,
         min_count: int = 1, max_vocab: int | None = None,
         tokenizer: WordTokenizer | None = None) -> TextClassificationData:
  """Prepares ``sst2`` or ``rt_polarity`` if needed; word-level batches padded to ``seq_len``."""
  b = builder_lib.prepare(TEXT_CLASSIFICATION_DATASETS.get(name), options)
  return from_builder(b, seq_len=seq_len, batch_size=batch_size,
                      eval_batch_size=eval_batch_size, seed=seed, eval_split=eval_split,
                      fold=fold, min_count=min_count, max_vocab=max_vocab, tokenizer=tokenizer)
