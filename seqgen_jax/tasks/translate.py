"""Translation: Multi30k (task 1) German <-> English with any ``kind="seq2seq"`` model.

Data (seqgen_jax/data/multi30k.py): one joint sentencepiece BPE vocabulary trained here on the
training sentences of both languages (saved to ``<workdir>/tokenizer.model`` by ``save_assets``);
``config.data.direction`` is "de-en" (default) or "en-de".

Training: teacher-forced cross-entropy over the target positions (padding weighted out), with
optional label smoothing ``config.train.label_smoothing`` (eps: the target distribution is
(1 - eps) on the reference token plus eps spread uniformly over the vocabulary, as optax's
``smooth_labels``). The logged ``nll`` is the unsmoothed cross-entropy.

Eval (every ``eval_every`` steps, the whole validation split): token loss (unsmoothed nats per
target token, EOS included), perplexity and token accuracy under teacher forcing.

Final eval (once, at the end): the whole ``config.eval.final_split`` ("test_2016", the default,
or "valid") is translated with greedy decoding and with beam search (``config.eval.beam_size``,
GNMT length penalty ``config.eval.length_penalty``), both jitted over batches of
``config.eval.decode_batch_size``. Hypotheses are cut at the first EOS, detokenized and scored
with sacrebleu's corpus BLEU (default 13a tokenization) against the raw reference sentences;
they are written to ``<workdir>/translations_<split>_<decoder>.txt``, one per line in split
order (decoder: "greedy" or "beam<K>").

Axis key: B batch, S source position, T target position, V vocabulary, K beams.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import sacrebleu
from absl import logging

import seqgen_jax.nn  # noqa: F401  (registers the models)
from seqgen_jax import decoding
from seqgen_jax.data import builder as builder_lib
from seqgen_jax.data import multi30k
from seqgen_jax.data.builder import DataOptions
from seqgen_jax.dtypes import compute_dtype_from_name
from seqgen_jax.errors import ConfigError
from seqgen_jax.registry import MODELS, TASKS
from seqgen_jax.train.task import Task

PyTree = Any
DIRECTIONS = {"de-en": ("de", "en"), "en-de": ("en", "de")}
SPLITS = {"valid": "validation", "test_2016": "test"}  # config name -> Multi30k builder split
DATASETS = ("multi30k",)


def _check(field: str, value: str, allowed) -> str:
  if value not in allowed:
    raise ConfigError(f"unknown {field} '{value}'; choose one of: {', '.join(allowed)}")
  return value


def smoothed_cross_entropy(logits_BTV: jax.Array, targets_BT: jax.Array, smoothing: float
                           ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-position smoothed loss, plain NLL and argmax correctness, each float32 [B, T]."""
  logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
  nll_BT = -jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]
  loss_BT = nll_BT
  if smoothing:
    loss_BT = (1.0 - smoothing) * nll_BT - smoothing * jnp.mean(logp_BTV, axis=-1)
  correct_BT = (jnp.argmax(logits_BTV, axis=-1) == targets_BT).astype(jnp.float32)
  return loss_BT, nll_BT, correct_BT


def cut_at_eos(ids: Sequence[int], eos_id: int) -> list[int]:
  """The ids before the first ``eos_id`` (all of them when there is none)."""
  out = []
  for i in ids:
    if int(i) == eos_id:
      break
    out.append(int(i))
  return out


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
  """sacrebleu corpus BLEU (13a tokenization, one reference per sentence), 0-100."""
  return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


@TASKS.register("translate")
class TranslationTask(Task):
  """Multi30k translation with any model registered with ``kind="seq2seq"``."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    dc, ec = config.data, config.get("eval", ml_collections.ConfigDict())
    _check("translation dataset", dc.get("name", "multi30k"), DATASETS)
    src_lang, tgt_lang = DIRECTIONS[_check("direction", dc.get("direction", "de-en"),
                                           tuple(DIRECTIONS))]
    self.final_split = _check("final eval split", ec.get("final_split", "test_2016"),
                              tuple(SPLITS))
    self.beam_size = int(ec.get("beam_size", 4))
    self.alpha = float(ec.get("length_penalty", 0.6))
    if self.beam_size < 1 or self.alpha < 0:
      raise ConfigError(f"eval.beam_size must be >= 1 and eval.length_penalty >= 0; got "
                        f"{self.beam_size} and {self.alpha}")
    build_model = MODELS.get(config.model.name, kind="seq2seq")  # bad name: fail before data
    self.smoothing = float(config.train.get("label_smoothing", 0.0))
    if not 0.0 <= self.smoothing < 1.0:
      raise ConfigError(f"train.label_smoothing must be in [0, 1), got {self.smoothing}")
    self.src_len, self.tgt_len = int(dc.get("src_len", 48)), int(dc.get("tgt_len", 48))
    self.max_decode_len = int(ec.get("max_decode_len", 0) or self.tgt_len)
    self.decode_bs = int(ec.get("decode_batch_size", 128))
    eval_bs = ec.get("batch_size", None) or config.train.batch_size

    self.options = DataOptions.from_config(dc)
    self.builder = builder_lib.prepare(multi30k.Multi30k, self.options)
    self.data_kw = dict(seed=config.train.seed, src_len=self.src_len, tgt_len=self.tgt_len,
                        src_lang=src_lang, tgt_lang=tgt_lang)
    self.data = multi30k.from_builder(
        self.builder, batch_size=config.train.batch_size, eval_batch_size=eval_bs,
        vocab_size=dc.get("vocab_size", 8000), eval_split="validation", **self.data_kw)
    self.tokenizer = self.data.tokenizer
    v = self.tokenizer.vocab_size
    self.dtype = compute_dtype_from_name(config.train.get("compute_dtype", "float32"))
    max_len = max(self.src_len, self.tgt_len, self.max_decode_len)
    self.model: nn.Module = build_model(
        config.model, src_vocab_size=v, tgt_vocab_size=v, max_len=max_len, dtype=self.dtype)
    self.workdir: str | None = None
    self._decoders: dict[tuple, Callable] = {}  # (beam size, length penalty) -> jitted

  # ---------------------------------------------------------------- training and evaluation

  def init_params(self, rng: jax.Array):
    src_BS = jnp.zeros((1, self.src_len), jnp.int32)
    tgt_BT = jnp.zeros((1, self.tgt_len), jnp.int32)
    return self.model.init({"params": rng}, src_BS, jnp.ones_like(src_BS, bool), tgt_BT,
                           train=False)["params"]

  def _logits(self, params, batch, train: bool, rng=None) -> jax.Array:
    return self.model.apply({"params": params}, batch["src"], batch["src_mask"],
                            batch["tgt_in"], train=train,
                            rngs=None if rng is None else {"dropout": rng})

  @staticmethod
  def _weights(batch) -> jax.Array:
    return batch["tgt_mask"].astype(jnp.float32) * batch["weight"][:, None]

  def loss_fn(self, params, batch, rng):
    logits_BTV = self._logits(params, batch, True, rng)
    loss_BT, nll_BT, correct_BT = smoothed_cross_entropy(logits_BTV, batch["tgt_out"],
                                                         self.smoothing)
    w_BT = self._weights(batch)
    total = jnp.maximum(jnp.sum(w_BT), 1e-9)
    return jnp.sum(loss_BT * w_BT) / total, {
        "nll": jnp.sum(nll_BT * w_BT) / total,
        "accuracy": jnp.sum(correct_BT * w_BT) / total, "weight": jnp.sum(w_BT)}

  def eval_step(self, params, batch):
    _, nll_BT, correct_BT = smoothed_cross_entropy(self._logits(params, batch, False),
                                                   batch["tgt_out"], 0.0)
    w_BT = self._weights(batch)
    return {"nll": jnp.sum(nll_BT * w_BT), "correct": jnp.sum(correct_BT * w_BT),
            "tokens": jnp.sum(w_BT)}

  def finalize_eval(self, sums):
    loss = float(sums["nll"] / max(sums["tokens"], 1e-9))
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)),
            "accuracy": float(sums["correct"] / max(sums["tokens"], 1e-9))}

  def train_source(self):
    return self.data.train

  def eval_source(self):
    return self.data.eval, self.data.eval_batches  # the whole validation split

  # ---------------------------------------------------------------- decoding

  def decoder(self, beam_size: int) -> Callable:
    """Jitted ``(params, src_BS, src_mask_BS) -> ids [B, max_decode_len]`` (BOS dropped):
    greedy decoding for ``beam_size=0``, else the best beam-search hypothesis (length penalty:
    ``self.alpha`` when first asked for)."""
    key = (beam_size, self.alpha if beam_size else None)
    if key not in self._decoders:
      model, n, bos, alpha = self.model, self.max_decode_len, self.tokenizer.bos_id, self.alpha

      def run(params, src_BS, src_mask_BS):
        variables = {"params": params}
        memory = model.apply(variables, src_BS, src_mask_BS, method="encode")
        cache = model.apply(variables, memory, src_mask_BS, n, method="init_cache")
        step_fn = lambda tokens_BT, cache, position: model.apply(
            variables, tokens_BT, cache, position, method="decode")
        bos_B1 = jnp.full((src_BS.shape[0], 1), bos, jnp.int32)
        if beam_size == 0:
          out_BL = decoding.sample_incremental(step_fn, cache, bos_B1, n, jax.random.PRNGKey(0),
                                               greedy=True)
          return out_BL[:, 1:]
        out_BKL, _ = decoding.beam_search(step_fn, cache, bos_B1, n, beam_size=beam_size,
                                          eos_id=self.tokenizer.eos_id, alpha=alpha,
                                          pad_id=self.tokenizer.pad_id)
        return out_BKL[:, 0, 1:]

      self._decoders[key] = jax.jit(run)
    return self._decoders[key]

  def detokenize(self, ids_BL: np.ndarray) -> list[str]:
    """Text of each row, cut at its first EOS."""
    eos = self.tokenizer.eos_id
    return [self.tokenizer.decode(cut_at_eos(row, eos)) for row in np.asarray(ids_BL)]

  def translate(self, params: PyTree, data: multi30k.TranslationData, beam_size: int) -> list[str]:
    """Translations of every sentence of ``data.eval``, in split order."""
    fn, src = self.decoder(beam_size), data.eval
    rows = slice(0, src.global_batch_size)
    out: list[str] = []
    for i in range(src.num_batches):
      batch = src.batch(i, rows)
      text = self.detokenize(jax.device_get(fn(params, batch["src"], batch["src_mask"])))
      out.extend(t for t, w in zip(text, batch["weight"]) if w > 0)
    return out

  def final_data(self) -> multi30k.TranslationData:
    """The final-eval split in batches of ``decode_batch_size`` (the training tokenizer)."""
    return multi30k.from_builder(
        self.builder, batch_size=self.decode_bs, eval_batch_size=self.decode_bs,
        eval_split=SPLITS[self.final_split], tokenizer=self.tokenizer, **self.data_kw)

  def final_eval(self, params, rng, evaluator):
    del rng, evaluator  # decodes with its own compiled decoders
    data = self.final_data()
    decoders = {"greedy": 0, f"beam{self.beam_size}": self.beam_size}
    out = {}
    for name, k in decoders.items():
      hyps = self.translate(params, data, k)
      out[f"bleu_{name}"] = corpus_bleu(hyps, data.references)
      if self.workdir is not None and os.path.isdir(self.workdir):
        path = os.path.join(self.workdir, f"translations_{self.final_split}_{name}.txt")
        with open(path, "w", encoding="utf-8") as f:
          f.write("".join(h.replace("\n", " ") + "\n" for h in hyps))
        logging.info("wrote %d %s translations to %s", len(hyps), name, path)
      elif self.workdir is not None:
        logging.warning("%s is gone (remote workdir?): translations not written", self.workdir)
    return out

  def sample(self, params, rng):
    """Greedy translations of the first few validation sentences, next to their references."""
    del rng
    n = int(self.config.get("sample", {}).get("num_sentences", 4))
    batch = self.data.eval.batch(0, slice(0, n))
    hyps = self.detokenize(jax.device_get(self.decoder(0)(params, batch["src"],
                                                          batch["src_mask"])))
    return {"translations": "\n".join(
        f"src: {s}\nref: {r}\nhyp: {h}"
        for s, r, h in zip(self.data.sources[:n], self.data.references[:n], hyps))}

  def save_assets(self, workdir: str) -> None:
    self.tokenizer.save(os.path.join(workdir, self.tokenizer.filename))
    # The loop calls this once, on the main process only, with the workdir; for a remote
    # workdir (gs://...) it passes a temporary directory that is gone by the end, and then
    # final_eval writes no translation files (it logs that instead).
    self.workdir = workdir
