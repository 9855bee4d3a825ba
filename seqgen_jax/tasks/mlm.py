"""Masked-language-model pre-training (BERT) on in-domain movie-review text, offline.

Corpus (``config.data.corpus``): ``"sst2"`` (default) = the 67,349 SST-2 training phrases and
sentences, text only; ``"sst2+rt_polarity"`` adds the 10,662 rt-polarity snippets. Caveat for
the second: SST-2 was built from the rt-polarity snippets, so its dev / test sentences are (up to
tokenisation) among them; pre-training on that corpus sees the evaluation *text* (never the
labels). The reported runs use ``"sst2"``. Evaluation: the 872 SST-2 validation sentences, masked
with a fixed seed per eval batch (the same positions at every evaluation).

Length: batches hold ``data.seq_len`` tokens (phrases cut to fit), the encoder has
``data.max_len`` positions (default seq_len), so that fine-tuning may feed longer sentences than
pre-training did (the extra position embeddings are then trained by fine-tuning only).

Input format: ``[CLS] words [SEP]`` with the word tokenizer's ``<bos>`` as [CLS] and ``<eos>`` as
[SEP]; the vocabulary (lower-cased words of the corpus with ``data.min_count``) gets one more
entry, ``<mask>`` ([MASK]). The tokenizer is saved to ``<workdir>/tokenizer.json``; the classify
task's ``config.init.from_workdir`` reads it back, so fine-tuning sees exactly these ids.

Masking (Devlin et al. 2019, as Hugging Face's DataCollatorForLanguageModeling): every real word
position (never [CLS], [SEP], padding or [MASK] itself; ``<unk>`` may be chosen) is selected with
probability ``mask_rate`` = 0.15; a selected position becomes [MASK] with probability 0.8, a
uniformly random word (not a special token) with 0.1, and stays as it is with 0.1. The loss and
the metrics cover the selected positions only. Masks are drawn in the input pipeline from
(seed, batch index), so a resumed run sees the same masks.

``config.init.from_pretrained=DIR`` continues a BERT masked-LM checkpoint (seqgen_jax.convert)
whose vocabulary is this tokenizer's (e.g. one exported from a run of this task).

Eval metrics: loss (nats per selected token), masked-token accuracy, perplexity. ``final_eval``
adds, on the same masked dev positions, the unigram baseline: the corpus word frequencies (with
add-one smoothing) as the prediction, its loss and the accuracy of always guessing the most
frequent word.
Axis key: B batch, T position, V vocabulary.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

import seqgen_jax.nn  # noqa: F401  (registers the models)
from seqgen_jax.data import builder as builder_lib
from seqgen_jax.data import pipeline, sentiment
from seqgen_jax.data.tokenizers import SPECIALS, WordTokenizer, load_tokenizer
from seqgen_jax.dtypes import compute_dtype_from_name
from seqgen_jax.errors import ConfigError
from seqgen_jax.registry import MODELS, TASKS
from seqgen_jax.tasks import pretrained
from seqgen_jax.tasks.lm import token_nll_and_correct
from seqgen_jax.train.task import Task

MASK_WORD = "<mask>"
CORPORA = ("sst2", "sst2+rt_polarity")
MASK_SEED_SALT = 0x4D4C4D  # mask draws never share a stream with the shuffling


class ClsSepTokenizer:
  """A WordTokenizer whose ``encode`` gives ``[CLS] words [SEP]`` (<bos> ... <eos>), cut to
  ``max_len`` tokens with the [SEP] kept; everything else is the wrapped tokenizer's."""

  def __init__(self, words: WordTokenizer, max_len: int):
    if max_len < 3:
      raise ConfigError(f"seq_len {max_len} leaves no room between [CLS] and [SEP]; use >= 3")
    self.words, self.max_len = words, max_len
    self.pad_id, self.cls_id, self.sep_id = words.pad_id, words.bos_id, words.eos_id
    self.mask_id = words.vocab.index(MASK_WORD) if MASK_WORD in words.vocab else None

  @property
  def vocab_size(self) -> int:
    """The wrapped tokenizer's vocabulary size ([CLS] / [SEP] are its <bos> / <eos>)."""
    return self.words.vocab_size

  def encode(self, text: str) -> np.ndarray:
    """int32 ``[CLS] words [SEP]``, the words cut so that at most ``max_len`` ids remain."""
    ids = self.words.encode(text)[:self.max_len - 2]
    return np.concatenate([[self.cls_id], ids, [self.sep_id]]).astype(np.int32)

  def decode(self, ids: Sequence[int]) -> str:
    """Text of ``ids`` (specials dropped)."""
    return self.words.decode(ids)

  def save(self, path: str) -> None:
    """Saves the wrapped word tokenizer to ``path``."""
    self.words.save(path)


def build_mlm_tokenizer(sentences: list[str], *, min_count: int = 1,
                        max_vocab: int | None = None) -> WordTokenizer:
  """Lower-cased words of ``sentences`` (as the sentiment loader builds them) plus <mask>."""
  base = WordTokenizer.build(sentences, min_count=min_count,
                             max_size=None if max_vocab is None else max_vocab - 1,
                             lowercase=True)
  return WordTokenizer([MASK_WORD] + base.vocab[len(SPECIALS):], lowercase=True,
                       min_count=min_count)


def mask_tokens(tokens_BT: np.ndarray, real_BT: np.ndarray, rng: np.random.Generator, *,
                mask_id: int, vocab_size: int, special_ids: tuple[int, ...],
                mask_rate: float = 0.15) -> dict[str, np.ndarray]:
  """BERT's corruption: inputs, targets (the original ids) and weights (1 at selected positions).

  ``real_BT``: True at real tokens. Eligible positions are real tokens that are not in
  ``special_ids``; random replacements are drawn uniformly from the ids not in ``special_ids``.
  """
  special = np.isin(tokens_BT, np.asarray(special_ids))
  eligible_BT = real_BT & ~special
  u_BT = rng.random(tokens_BT.shape)
  selected_BT = eligible_BT & (u_BT < mask_rate)
  action_BT = rng.random(tokens_BT.shape)  # < 0.8: [MASK]; < 0.9: random word; else keep
  normal_ids = np.setdiff1d(np.arange(vocab_size), np.asarray(special_ids))
  random_BT = normal_ids[rng.integers(0, len(normal_ids), size=tokens_BT.shape)]
  inputs_BT = np.where(selected_BT & (action_BT < 0.8), mask_id, tokens_BT)
  inputs_BT = np.where(selected_BT & (action_BT >= 0.8) & (action_BT < 0.9), random_BT,
                       inputs_BT)
  return {"inputs": inputs_BT.astype(np.int32), "targets": tokens_BT.astype(np.int32),
          "weights": selected_BT.astype(np.float32)}


class MaskedSentences:
  """A StepSource over sentences: tokenized, padded, masked from (seed, batch index)."""

  def __init__(self, sentences: list[str], tokenizer: ClsSepTokenizer, sampler, *, seed: int,
               mask_rate: float):
    self.sentences, self.tok, self.sampler = sentences, tokenizer, sampler
    self.seed, self.mask_rate = seed, mask_rate
    self.global_batch_size = sampler.global_batch_size
    self.num_batches = getattr(sampler, "num_batches", None)
    self.special_ids = (tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id)

  def batch(self, index: int, rows: slice) -> pipeline.Batch:
    ids, weight_B = self.sampler.sample(index, rows)
    tokens_BT, real_BT = pipeline.pad_sequences(
        [self.tok.encode(self.sentences[i]) for i in ids], self.tok.max_len, self.tok.pad_id)
    # One generator per (batch, row of the global batch): hosts draw disjoint, consistent masks.
    start = rows.indices(self.global_batch_size)[0]
    rng = pipeline.index_rng(self.seed ^ MASK_SEED_SALT, index * self.global_batch_size + start)
    out = mask_tokens(tokens_BT, real_BT, rng, mask_id=self.tok.mask_id,
                      vocab_size=self.tok.vocab_size, special_ids=self.special_ids,
                      mask_rate=self.mask_rate)
    out["weights"] = out["weights"] * weight_B[:, None]
    return {**out, "mask": real_BT}


def corpus_sentences(corpus: str, options: builder_lib.DataOptions
                     ) -> tuple[list[str], list[str]]:
  """(pre-training sentences, SST-2 validation sentences for evaluation)."""
  if corpus not in CORPORA:
    raise ConfigError(f"unknown mlm corpus '{corpus}'; choose one of: {', '.join(CORPORA)}")
  sst = builder_lib.prepare(sentiment.Sst2, options)

  def text(b, split):
    return [e["sentence"].decode("utf-8") for e in builder_lib.SplitReader(b, split).all()]

  train = text(sst, "train")
  if corpus == "sst2+rt_polarity":
    train += text(builder_lib.prepare(sentiment.RtPolarity, options), "train")
  return train, text(sst, "validation")


def restore_params(workdir: str) -> tuple[dict, int]:
  """The params (a plain dict tree of numpy arrays) of the latest checkpoint under
  ``<workdir>/checkpoints`` and its step; a one-line ConfigError when there is none."""
  directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
  step = None
  if os.path.isdir(directory):
    mngr = ocp.CheckpointManager(directory, item_names=("state",))
    step = mngr.latest_step()
  if step is None:
    raise ConfigError(f"init.from_workdir={workdir} has no checkpoint under {directory}; run "
                      "the mlm pre-training there first")
  state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  mngr.close()
  return jax.tree.map(np.asarray, state["params"]), int(step)


def load_mlm_tokenizer(workdir: str, seq_len: int) -> ClsSepTokenizer:
  """The tokenizer an mlm run saved in ``workdir``; ConfigError if it is missing or foreign."""
  path = os.path.join(workdir, "tokenizer.json")
  if not os.path.isfile(path):
    raise ConfigError(f"init.from_workdir={workdir} has no tokenizer.json; fine-tuning must use "
                      "the tokenizer its mlm run saved")
  tok = load_tokenizer(path)
  if not isinstance(tok, WordTokenizer) or MASK_WORD not in tok.vocab:
    raise ConfigError(f"{path} is not an mlm run's tokenizer (a word tokenizer with "
                      f"{MASK_WORD}); fine-tuning must use the tokenizer its mlm run saved")
  return ClsSepTokenizer(tok, seq_len)


@TASKS.register("mlm")
class MaskedLMTask(Task):
  """BERT-style masked-LM pre-training with any model registered with ``kind="masked_lm"``."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    dc = config.data
    self.mask_rate = float(dc.get("mask_rate", 0.15))
    if not 0.0 < self.mask_rate < 1.0:
      raise ConfigError(f"data.mask_rate={self.mask_rate} must be in (0, 1)")
    self.seq_len = dc.seq_len
    # Positions the encoder has: may exceed seq_len, so that fine-tuning can use longer inputs.
    self.max_len = max(dc.get("max_len", 0) or self.seq_len, self.seq_len)
    sentences, dev = corpus_sentences(dc.get("corpus", "sst2"),
                                      builder_lib.DataOptions.from_config(dc))
    max_vocab = dc.get("max_vocab", 0) or None
    self.tokenizer = ClsSepTokenizer(
        build_mlm_tokenizer(sentences, min_count=dc.get("min_count", 1), max_vocab=max_vocab),
        self.seq_len)
    seed = config.train.seed
    eval_bs = config.get("eval", {}).get("batch_size", 0) or config.train.batch_size
    self.train = MaskedSentences(
        sentences, self.tokenizer,
        pipeline.ShuffledSampler(len(sentences), config.train.batch_size, seed),
        seed=seed, mask_rate=self.mask_rate)
    self.eval = MaskedSentences(dev, self.tokenizer, pipeline.EvalSampler(len(dev), eval_bs),
                                seed=seed + 1, mask_rate=self.mask_rate)
    self.dtype = compute_dtype_from_name(config.train.get("compute_dtype", "float32"))
    build_kwargs = dict(vocab_size=self.tokenizer.vocab_size, max_len=self.max_len)
    imported = pretrained.imported_model(config, "masked_lm", build_kwargs, dtype=self.dtype)
    self.imported_params = None
    if imported is not None:  # config.init.from_pretrained: continue a BERT checkpoint
      self.model, self.imported_params = imported
    else:
      self.model = MODELS.get(config.model.name, kind="masked_lm")(
          config.model, **build_kwargs, dtype=self.dtype)

  def init_params(self, rng):
    tokens_BT = jnp.zeros((1, self.seq_len), jnp.int32)
    return self.model.init({"params": rng}, tokens_BT, tokens_BT > 0, train=False)["params"]

  def initial_params(self):
    return self.imported_params

  def _nll_correct(self, params, batch, train, rng=None):
    logits_BTV = self.model.apply({"params": params}, batch["inputs"], batch["mask"],
                                  train=train, rngs=None if rng is None else {"dropout": rng})
    return token_nll_and_correct(logits_BTV, batch["targets"])

  def loss_fn(self, params, batch, rng):
    nll_BT, correct_BT = self._nll_correct(params, batch, True, rng)
    w_BT = batch["weights"]
    total = jnp.maximum(jnp.sum(w_BT), 1e-9)
    return jnp.sum(nll_BT * w_BT) / total, {"accuracy": jnp.sum(correct_BT * w_BT) / total,
                                            "weight": jnp.sum(w_BT)}

  def eval_step(self, params, batch):
    nll_BT, correct_BT = self._nll_correct(params, batch, False)
    w_BT = batch["weights"]
    return {"nll": jnp.sum(nll_BT * w_BT), "correct": jnp.sum(correct_BT * w_BT),
            "tokens": jnp.sum(w_BT)}

  def finalize_eval(self, sums):
    loss = float(sums["nll"] / max(sums["tokens"], 1e-9))
    return {"loss": loss, "masked_accuracy": float(sums["correct"] / max(sums["tokens"], 1e-9)),
            "perplexity": math.exp(min(loss, 50.0)), "masked_tokens": float(sums["tokens"])}

  def train_source(self):
    return self.train

  def eval_source(self):
    return self.eval, self.eval.num_batches

  def unigram_log_probs(self) -> np.ndarray:
    """log p(word) of the training corpus (add-one smoothed over the vocabulary): [V]."""
    counts = np.ones(self.tokenizer.vocab_size)
    for s in self.train.sentences:
      np.add.at(counts, self.tokenizer.words.encode(s), 1)
    return np.log(counts / counts.sum())

  def final_eval(self, params, rng, evaluator):
    del rng
    out = {f"dev_{k}": v for k, v in self.finalize_eval(
        evaluator.sums(self.eval_step, params, self.eval)).items()}
    logp_V = self.unigram_log_probs()
    nll = correct = tokens = 0.0
    for i in range(self.eval.num_batches):
      b = self.eval.batch(i, slice(0, self.eval.global_batch_size))
      w_BT, t_BT = b["weights"], b["targets"]
      nll -= float(np.sum(logp_V[t_BT] * w_BT))
      correct += float(np.sum((t_BT == np.argmax(logp_V)) * w_BT))
      tokens += float(np.sum(w_BT))
    out.update(dev_unigram_loss=nll / tokens, dev_unigram_accuracy=correct / tokens)
    return out

  def save_assets(self, workdir: str) -> None:
    self.tokenizer.save(os.path.join(workdir, "tokenizer.json"))
