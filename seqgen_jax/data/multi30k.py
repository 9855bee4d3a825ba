"""Multi30k task 1 (English-German image descriptions): TFDS builder and the translation loader.

Splits: train 29,000 / validation 1,014 / test 1,000 (``test_2016_flickr``), as in the WMT16
multimodal task. The loader trains one joint sentencepiece vocabulary (BPE, 8,000 pieces by
default) on the training sentences of both languages, here on this machine, and serves

  {"src": int32[B, S], "src_mask": bool[B, S], "tgt_in": int32[B, T], "tgt_out": int32[B, T],
   "tgt_mask": bool[B, T], "weight": float32[B]}

with ``src`` = source pieces + EOS, ``tgt_in`` = BOS + target pieces, ``tgt_out`` = target pieces
+ EOS (a pair longer than S or T is cut, and then has no EOS). ``references`` holds the raw
target sentences of the eval split in eval order, for BLEU (sacrebleu) on detokenized output.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from seqgen_jax.data import builder as builder_lib
from seqgen_jax.data import pipeline, raw
from seqgen_jax.data.tokenizers import SentencePieceTokenizer
from seqgen_jax.errors import ConfigError

_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
SPLIT_FILES = {"train": "train", "validation": "val", "test": "test_2016_flickr"}
LANGS = ("en", "de")

# (file, sha256 of the offline copy, sha256 of its content)
_FILES = [
    ("train.en", "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
     "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6"),
    ("train.de", "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
     "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72"),
    ("val.en", "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
     "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227"),
    ("val.de", "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
     "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660"),
    ("test_2016_flickr.en", "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
     "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182"),
    ("test_2016_flickr.de", "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
     "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16"),
]
RAW_FILES = {name: raw.RawFile(path=f"multi30k/{name}.gz", sha256=sha, content_sha256=content,
                               url=f"{_URL}{name}.gz")
             for name, sha, content in _FILES}


def read_lines(loc: raw.Located) -> list[str]:
  """One sentence per line (UTF-8), surrounding whitespace removed.

  Splits on "\\n" only: ``str.splitlines`` would also split inside a sentence at the Unicode
  line and paragraph separators.
  """
  lines = loc.read_text("utf-8").split("\n")
  if lines and not lines[-1]:
    lines.pop()
  return [ln.strip() for ln in lines]


class Multi30k(builder_lib.SeqgenBuilder):
  """Multi30k task 1, English-German sentence pairs."""

  name = "seqgen_multi30k"
  DATASET = "Multi30k"
  HOMEPAGE = "https://github.com/multi30k/dataset"
  SPLIT_SIZES = {"train": 29_000, "validation": 1_014, "test": 1_000}

  def raw_files(self):
    return RAW_FILES

  def _features(self):
    return tfds.features.FeaturesDict({lang: tfds.features.Text() for lang in LANGS})

  def _splits(self, located):
    return {split: self._examples(located, stem) for split, stem in SPLIT_FILES.items()}

  def _examples(self, located, stem: str):
    en, de = (read_lines(located[f"{stem}.{lang}"]) for lang in LANGS)
    if len(en) != len(de):
      raise ValueError(f"Multi30k {stem}: {len(en)} English but {len(de)} German lines")
    for i, (e, d) in enumerate(zip(en, de)):
      yield i, {"en": e, "de": d}


# ---------------------------------------------------------------------- loader


@dataclasses.dataclass
class TranslationData:
  """Train / eval sources, the shared subword tokenizer and the raw eval sentences."""

  train: pipeline.ExampleSource
  eval: pipeline.ExampleSource
  tokenizer: SentencePieceTokenizer
  src_lang: str
  tgt_lang: str
  src_len: int
  tgt_len: int
  sources: list[str]     # eval split, source side, in eval order
  references: list[str]  # eval split, target side, in eval order (BLEU references)

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.vocab_size

  @property
  def eval_batches(self) -> int:
    return self.eval.num_batches

  def eval_references(self, index: int, rows: slice) -> list[str | None]:
    """The reference sentence of each row of eval batch ``index`` (None for padding rows)."""
    ids, weight = self.eval.example_ids(index, rows)
    return [self.references[i] if w > 0 else None for i, w in zip(ids, weight)]


def make_collate(tok: SentencePieceTokenizer, src_lang: str, tgt_lang: str, src_len: int,
                 tgt_len: int):
  """Encodes a list of sentence pairs into the translation batch layout."""

  def collate(examples: list[dict], weight: np.ndarray) -> pipeline.Batch:
    src = tok.encode_batch([e[src_lang].decode("utf-8") for e in examples])
    tgt = tok.encode_batch([e[tgt_lang].decode("utf-8") for e in examples])
    eos, bos = np.int32(tok.eos_id), np.int32(tok.bos_id)
    src_ids, src_mask = pipeline.pad_sequences([np.append(s, eos) for s in src], src_len)
    tgt_in, tgt_mask = pipeline.pad_sequences([np.insert(t, 0, bos) for t in tgt], tgt_len)
    tgt_out, _ = pipeline.pad_sequences([np.append(t, eos) for t in tgt], tgt_len)
    return {"src": src_ids, "src_mask": src_mask, "tgt_in": tgt_in, "tgt_out": tgt_out,
            "tgt_mask": tgt_mask, "weight": np.asarray(weight, np.float32)}

  return collate


def from_builder(b: tfds.core.DatasetBuilder, *, batch_size: int, eval_batch_size: int,
                 seed: int, src_len: int = 64, tgt_len: int = 64, vocab_size: int = 8000,
                 src_lang: str = "en", tgt_lang: str = "de", eval_split: str = "validation",
                 tokenizer: SentencePieceTokenizer | None = None) -> TranslationData:
  """Sources over a prepared (or mocked) Multi30k builder; trains the tokenizer unless given."""
  if {src_lang, tgt_lang} != set(LANGS):
    raise ConfigError(f"Multi30k translates between en and de; got {src_lang}->{tgt_lang}")
  if eval_split not in SPLIT_FILES:
    raise ConfigError(f"Multi30k: unknown eval split '{eval_split}'; choose one of: "
                      f"{', '.join(sorted(SPLIT_FILES))}")
  train, ev = builder_lib.SplitReader(b, "train"), builder_lib.SplitReader(b, eval_split)
  if tokenizer is None:
    pairs = train.all()
    tokenizer = SentencePieceTokenizer.train(
        [e[lang].decode("utf-8") for e in pairs for lang in LANGS], vocab_size=vocab_size)
  eval_pairs = ev.all()
  collate = make_collate(tokenizer, src_lang, tgt_lang, src_len, tgt_len)
  return TranslationData(
      train=pipeline.ExampleSource(
          train, pipeline.ShuffledSampler(len(train), batch_size, seed), collate),
      eval=pipeline.ExampleSource(ev, pipeline.EvalSampler(len(ev), eval_batch_size), collate),
      tokenizer=tokenizer, src_lang=src_lang, tgt_lang=tgt_lang, src_len=src_len,
      tgt_len=tgt_len, sources=[e[src_lang].decode("utf-8") for e in eval_pairs],
      references=[e[tgt_lang].decode("utf-8") for e in eval_pairs])


def load(options: builder_lib.DataOptions, *, batch_size: int, eval_batch_size: int, seed: int,
         src_len: int = 64, tgt_len: int = 64, vocab_size: int = 8000, src_lang: str = "en",
         tgt_lang: str = "de", eval_split: str = "validation",
         tokenizer: SentencePieceTokenizer | None = None) -> TranslationData:
  """Prepares Multi30k if needed; pass ``tokenizer`` (e.g. from a workdir) to reuse one."""
  b = builder_lib.prepare(Multi30k, options)
  return from_builder(b, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
                      src_len=src_len, tgt_len=tgt_len, vocab_size=vocab_size,
                      src_lang=src_lang, tgt_lang=tgt_lang, eval_split=eval_split,
                      tokenizer=tokenizer)
