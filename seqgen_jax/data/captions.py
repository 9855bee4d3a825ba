"""Caption-like prompts built from class labels, and the word-level tokenizer that encodes them.

For text-to-image at small scale: each training image's label becomes one of a few templated
captions ("a handwritten seven", "a photo of a ship", "a blurry photo of the ship", ...), chosen
at random per example so the text encoder sees more than one string per class. The vocabulary is
every word of every caption of the supported datasets (plus PAD, BOS, UNK), built
deterministically, so no file is downloaded or saved. Token ids are those of
``seqgen_jax.caption_ids``, which the text encoder (``seqgen_jax.nn.text_encoder``) reads too:
0 = PAD, 1 = BOS (first token of every caption), 2 = UNK; the null caption of classifier-free
guidance is [BOS] alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from seqgen_jax.caption_ids import BOS_ID, PAD_ID, UNK_ID
from seqgen_jax.data.pipeline import Batch, StepSource
from seqgen_jax.errors import ConfigError

SPECIALS = ("<pad>", "<bos>", "<unk>")

# Class names in label order (MNIST digits; Fashion-MNIST and CIFAR-10 as their dataset cards,
# written as words a caption would use).
LABEL_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "fashion_mnist": ("t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal",
                      "shirt", "sneaker", "bag", "ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"),
}

# "{}" is the class name, "{a}" the indefinite article ("a" / "an") that fits the next word.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "mnist": ("{a} handwritten {}", "the digit {}", "a drawing of the number {}",
              "the number {} written by hand", "a scanned handwritten {}"),
    "fashion_mnist": ("a photo of {a} {}", "a grayscale photo of {a} {}",
                      "a product photo of {a} {}", "a small picture of {a} {}",
                      "a photo of the {}"),
    "cifar10": ("a photo of {a} {}", "a blurry photo of the {}", "a small photo of {a} {}",
                "a low resolution photo of {a} {}", "a picture of the {}"),
}


def _article(word: str) -> str:
  return "an" if word[0] in "aeiou" else "a"


def caption(dataset: str, label: int, template: int) -> str:
  """The caption of ``label`` under template number ``template`` (all lower case)."""
  names, temps = LABEL_NAMES[dataset], TEMPLATES[dataset]
  name = names[label]
  text = temps[template % len(temps)]
  text = text.replace("{}", name)
  return re.sub(r"\{a\} (\w)", lambda m: f"{_article(m.group(1))} {m.group(1)}", text)


def tokenize_words(text: str) -> list[str]:
  """Lower-cased words; hyphenated words stay one word, other punctuation is dropped."""
  return re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", text.lower())


class WordTokenizer:
  """Word-level tokenizer over a fixed vocabulary: encode -> BOS + word ids, padded to max_len."""

  def __init__(self, words: Sequence[str], max_len: int):
    self.vocab = list(SPECIALS) + sorted(set(words) - set(SPECIALS))
    self.ids = {w: i for i, w in enumerate(self.vocab)}
    self.max_len = max_len

  @property
  def vocab_size(self) -> int:
    """Number of ids, the three specials included."""
    return len(self.vocab)

  def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids [max_len] int32, mask [max_len] bool); unknown words -> UNK; too long -> error."""
    ids = [BOS_ID] + [self.ids.get(w, UNK_ID) for w in tokenize_words(text)]
    if len(ids) > self.max_len:
      raise ConfigError(f"prompt '{text}' has {len(ids) - 1} words; at most {self.max_len - 1} "
                        "fit this tokenizer")
    out = np.full(self.max_len, PAD_ID, np.int32)
    out[:len(ids)] = ids
    return out, out != PAD_ID

  def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """[B, max_len] ids and mask."""
    ids, masks = zip(*(self.encode(t) for t in texts))
    return np.stack(ids), np.stack(masks)

  def decode(self, ids: Sequence[int]) -> str:
    """The words of ``ids`` joined by spaces (PAD and BOS dropped)."""
    return " ".join(self.vocab[i] for i in ids if i not in (PAD_ID, BOS_ID))


def caption_tokenizer() -> WordTokenizer:
  """The tokenizer covering every caption of every dataset here (deterministic; no file)."""
  texts = [caption(d, y, k) for d in LABEL_NAMES for y in range(len(LABEL_NAMES[d]))
           for k in range(len(TEMPLATES[d]))]
  longest = max(len(tokenize_words(t)) for t in texts)
  return WordTokenizer([w for t in texts for w in tokenize_words(t)], max_len=longest + 1)


class CaptionBuilder:
  """Labels -> random templated captions -> token ids, for one dataset."""

  def __init__(self, dataset: str, tokenizer: WordTokenizer | None = None):
    if dataset not in LABEL_NAMES:
      raise ConfigError(f"no captions for dataset '{dataset}'; choose one of: "
                        f"{', '.join(sorted(LABEL_NAMES))}")
    self.dataset = dataset
    self.tokenizer = tokenizer or caption_tokenizer()

  @property
  def num_classes(self) -> int:
    """Number of labels of the dataset."""
    return len(LABEL_NAMES[self.dataset])

  def captions(self, labels: np.ndarray, rng: np.random.Generator) -> list[str]:
    """One caption per label, each with a template drawn uniformly at random."""
    templates = rng.integers(0, len(TEMPLATES[self.dataset]), size=len(labels))
    return [caption(self.dataset, int(y), int(k)) for y, k in zip(labels, templates)]

  def tokens(self, labels: np.ndarray, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray]:
    """Token ids [B, L] int32 and mask [B, L] bool of random captions for ``labels``."""
    return self.tokenizer.encode_batch(self.captions(np.asarray(labels), rng))

  def null_tokens(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The empty caption (BOS only) in this tokenizer's padded shape, for label dropout / CFG."""
    return self.tokenizer.encode_batch([""] * batch_size)


class CaptionSource:
  """Wraps an image StepSource: adds ``text_tokens`` / ``text_mask``, random captions of the
  labels drawn from (seed, batch index, first row), so a batch is still a pure function of its
  index."""

  def __init__(self, source: StepSource, builder: CaptionBuilder, seed: int):
    self.source, self.builder, self.seed = source, builder, seed
    self.global_batch_size = source.global_batch_size

  def batch(self, index: int, rows: slice) -> Batch:
    """The wrapped source's rows ``rows`` of batch ``index`` with their captions."""
    b = dict(self.source.batch(index, rows))
    rng = np.random.default_rng([self.seed, index, rows.start or 0])
    b["text_tokens"], b["text_mask"] = self.builder.tokens(b["label"], rng)
    return b
