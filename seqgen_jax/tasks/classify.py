"""Sentence classification: SST-2 / rt-polarity with any model of kind "classifier".

Datasets (``config.data.name``; seqgen_jax/data/sentiment.py): ``sst2`` (train 67,349 phrases
and sentences / validation 872 / labelled test 1,821) and ``rt_polarity`` (10-fold
cross-validation, ``data.fold`` held out). Words are lower-cased; the vocabulary comes from the
training split (``data.min_count``, ``data.max_vocab``) unless a pre-trained model brings its own.
Inputs are cut at ``data.seq_len`` tokens; ``data.train_seq_len`` (if set) cuts the training
batches shorter (SST-2's training phrases average 9 words, its dev sentences 20), which only
saves padding.

Models: every ``MODELS`` entry of kind "classifier" (rnn, lstm, gru, mingru, minlstm, lru,
transformer, bert). A model that pools at position 0 (``pooling == "cls"``: BERT) gets the input
``[CLS] words [SEP]`` (the word tokenizer's <bos> / <eos>).

Initialisation (``config.init``; at most one):
  * ``from_workdir``: the workdir of an ``mlm`` run (seqgen_jax/tasks/mlm.py). Its latest
    checkpoint's params are restored (params only) and its encoder is moved into the classifier
    with ``with_encoder_from``; the tokenizer is the one that run saved (model.name must be a
    classifier whose params hold an "encoder" of the same fields, i.e. "bert").
  * ``hf_checkpoint`` (or ``from_pretrained``, the name every task reads): a local Hugging Face
    BERT directory (config.json, weights, vocab.txt), imported with
    ``convert.load_bert_classifier`` (a missing head is initialised from the seed); the model
    fields come from its config.json and the tokenizer from its vocab.txt.

Eval (every ``eval_every`` steps and at the end): loss and accuracy over the WHOLE eval split
(padding rows of the last batch have weight 0). ``final_eval`` reports ``dev_accuracy`` /
``dev_loss`` (for rt-polarity: the held-out fold), ``test_accuracy`` / ``test_loss`` for SST-2
(its test split is labelled), and the majority-class baseline (the most frequent training
label) on the same splits. Axis key: B batch, T position, C classes.
"""

from __future__ import annotations

import collections
import copy
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import seqgen_jax.nn  # noqa: F401  (registers the models)
from seqgen_jax.data import builder as builder_lib
from seqgen_jax.data import sentiment
from seqgen_jax.dtypes import compute_dtype_from_name
from seqgen_jax.errors import ConfigError
from seqgen_jax.nn.bert import with_encoder_from
from seqgen_jax.registry import MODELS, TASKS
from seqgen_jax.tasks import mlm, pretrained
from seqgen_jax.train.evaluate import Evaluator
from seqgen_jax.train.task import Task


class HFTokenizer:
  """A Hugging Face tokenizer read from a local checkpoint directory: ``[CLS] ... [SEP]`` ids."""

  def __init__(self, path: str, max_len: int):
    import transformers

    try:
      self.hf = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
      raise ConfigError(f"init.hf_checkpoint={path}: no usable tokenizer files (vocab.txt / "
                        f"tokenizer.json): {str(e).splitlines()[0]}") from None
    self.max_len, self.pad_id = max_len, self.hf.pad_token_id
    self.vocab_size = len(self.hf)

  def encode(self, text: str) -> np.ndarray:
    """int32 ids of ``text`` as the checkpoint's tokenizer makes them, cut at ``max_len``."""
    return np.asarray(self.hf(text, truncation=True, max_length=self.max_len)["input_ids"],
                      np.int32)

  def save(self, path: str) -> None:
    """Writes the Hugging Face tokenizer files to ``hf_tokenizer/`` beside ``path``."""
    self.hf.save_pretrained(os.path.join(os.path.dirname(path), "hf_tokenizer"))


def _with_max_len(tokenizer, max_len: int):
  """The same tokenizer cutting at ``max_len`` (those that add [CLS] / [SEP] cut themselves)."""
  if isinstance(tokenizer, mlm.ClsSepTokenizer):
    return mlm.ClsSepTokenizer(tokenizer.words, max_len)
  if isinstance(tokenizer, HFTokenizer):
    out = copy.copy(tokenizer)
    out.max_len = max_len
    return out
  return tokenizer


@TASKS.register("classify")
class ClassifyTask(Task):
  """Sentence classification with any model registered with ``kind="classifier"``."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    dc, tc = config.data, config.train
    self.seq_len = dc.seq_len
    self.dtype = compute_dtype_from_name(tc.get("compute_dtype", "float32"))
    init = config.get("init", ml_collections.ConfigDict())
    from_workdir, hf_dir = init.get("from_workdir", ""), init.get("hf_checkpoint", "")
    if hf_dir and init.get("from_pretrained", ""):
      raise ConfigError("init.hf_checkpoint and init.from_pretrained both name a Hugging Face "
                        "BERT directory: set one")
    hf_dir = hf_dir or init.get("from_pretrained", "")
    if from_workdir and hf_dir:
      raise ConfigError("set at most one of init.from_workdir and init.hf_checkpoint / "
                        "init.from_pretrained")
    build = MODELS.get(config.model.name, kind="classifier")
    self.pretrained: dict | None = None
    self.imported_params: dict | None = None
    tokenizer, model_cfg, max_len = None, config.model, self.seq_len
    if from_workdir:
      tokenizer = mlm.load_mlm_tokenizer(from_workdir, self.seq_len)
      self.pretrained, self.pretrained_step = mlm.restore_params(from_workdir)
      emb = self.pretrained.get("encoder", {}).get("token_embed", {}).get("embedding")
      if emb is None:
        raise ConfigError(f"the checkpoint in {from_workdir} has no encoder/token_embed; is it "
                          "an mlm run of a BERT encoder?")
      if emb.shape[0] != tokenizer.vocab_size:
        raise ConfigError(f"{from_workdir}/tokenizer.json has {tokenizer.vocab_size} entries but "
                          f"the checkpoint embeds {emb.shape[0]}: tokenizer and checkpoint "
                          "do not belong together")
      pos = self.pretrained["encoder"].get("pos_embed", {}).get("embedding")
      max_len = pos.shape[0] if pos is not None else max_len
    elif hf_dir:
      from seqgen_jax.convert import load_bert_classifier

      runtime = {k: config.model[k] for k in ("scan_layers", "attention") if k in config.model}
      imported = load_bert_classifier(hf_dir, num_classes=len(sentiment.CLASSES),
                                      rng=jax.random.PRNGKey(tc.seed), dtype=self.dtype,
                                      **runtime)
      tokenizer = HFTokenizer(hf_dir, self.seq_len)
      # The model is the checkpoint's: config.model becomes its fields (config.json records it).
      model_cfg = pretrained.adopt_model_config(config, imported.config)
      build = MODELS.get(model_cfg.name, kind="classifier")
      max_len = imported.build_kwargs["max_len"]
      self.imported_params = imported.params
    if max_len < self.seq_len:
      raise ConfigError(f"data.seq_len={self.seq_len} exceeds the pre-trained model's "
                        f"{max_len} positions")

    eval_bs = config.get("eval", {}).get("batch_size", 0) or tc.batch_size
    self.builder = builder_lib.prepare(sentiment.TEXT_CLASSIFICATION_DATASETS.get(dc.name),
                                       builder_lib.DataOptions.from_config(dc))
    kw = dict(seq_len=self.seq_len, batch_size=tc.batch_size, eval_batch_size=eval_bs,
              seed=tc.seed, fold=dc.get("fold", 0), min_count=dc.get("min_count", 1),
              max_vocab=dc.get("max_vocab", 0) or None)
    self.eval_split = dc.get("eval_split", "validation")
    self.data = sentiment.from_builder(self.builder, eval_split=self.eval_split,
                                       tokenizer=tokenizer, **kw)
    vocab_size = self.data.tokenizer.vocab_size
    self.model: nn.Module = build(model_cfg, vocab_size=vocab_size,
                                  num_classes=self.data.num_classes, max_len=max_len,
                                  dtype=self.dtype)
    if tokenizer is None and getattr(self.model, "pooling", None) == "cls":
      # Position 0 must be a classification token: re-encode as [CLS] words [SEP].
      self.data = sentiment.from_builder(
          self.builder, eval_split=self.eval_split,
          tokenizer=mlm.ClsSepTokenizer(self.data.tokenizer, self.seq_len), **kw)
    if self.pretrained is not None:
      self._check_pretrained_fits(from_workdir)
    self.tokenizer = self.data.tokenizer
    train_len = dc.get("train_seq_len", 0) or self.seq_len
    if train_len != self.seq_len:
      # Training phrases are short: shorter training batches waste less on padding.
      self.data.train.collate = sentiment.make_collate(
          _with_max_len(self.tokenizer, train_len), train_len)
    self._kw = kw

  def _check_pretrained_fits(self, workdir: str) -> None:
    """One-line ConfigError (before anything is traced) if the encoder cannot be moved in."""
    tokens_BT = jnp.zeros((1, self.seq_len), jnp.int32)
    shapes = jax.eval_shape(lambda: self.model.init(
        {"params": jax.random.PRNGKey(0)}, tokens_BT, tokens_BT == 0, train=False)["params"])
    name = self.config.model.name
    if "encoder" not in shapes:
      raise ConfigError(f"init.from_workdir needs a classifier with an 'encoder' (e.g. bert); "
                        f"model.name={name} has none")
    try:
      with_encoder_from(shapes, self.pretrained)
    except ConfigError as e:
      raise ConfigError(f"init.from_workdir={workdir} does not fit model.name={name}: {e} "
                        "(use the mlm run's encoder fields)") from None

  # ---------------------------------------------------------------- training and evaluation

  def init_params(self, rng):
    tokens_BT = jnp.zeros((1, self.seq_len), jnp.int32)
    params = self.model.init({"params": rng}, tokens_BT, tokens_BT == 0, train=False)["params"]
    if self.pretrained is not None:
      return with_encoder_from(params, jax.tree.map(jnp.asarray, self.pretrained))
    if self.imported_params is not None:
      return jax.tree.map(jnp.asarray, self.imported_params)
    return params

  def _logits(self, params, batch, train, rng=None):
    return self.model.apply({"params": params}, batch["tokens"], batch["mask"], train=train,
                            rngs=None if rng is None else {"dropout": rng})

  def loss_fn(self, params, batch, rng):
    logits_BC = self._logits(params, batch, True, rng)
    nll_B = optax.softmax_cross_entropy_with_integer_labels(logits_BC, batch["label"])
    w_B = batch["weight"]
    total = jnp.maximum(jnp.sum(w_B), 1e-9)
    correct_B = (jnp.argmax(logits_BC, axis=-1) == batch["label"]).astype(jnp.float32)
    return jnp.sum(nll_B * w_B) / total, {"accuracy": jnp.sum(correct_B * w_B) / total,
                                          "weight": jnp.sum(w_B)}

  def eval_step(self, params, batch):
    logits_BC = self._logits(params, batch, False)
    nll_B = optax.softmax_cross_entropy_with_integer_labels(logits_BC, batch["label"])
    correct_B = (jnp.argmax(logits_BC, axis=-1) == batch["label"]).astype(jnp.float32)
    w_B = batch["weight"]
    label_BC = jax.nn.one_hot(batch["label"], logits_BC.shape[-1]) * w_B[:, None]
    return {"nll": jnp.sum(nll_B * w_B), "correct": jnp.sum(correct_B * w_B),
            "examples": jnp.sum(w_B), "label_counts": jnp.sum(label_BC, axis=0)}

  def finalize_eval(self, sums):
    n = max(float(sums["examples"]), 1e-9)
    return {"loss": float(sums["nll"]) / n, "accuracy": float(sums["correct"]) / n,
            "examples": float(sums["examples"])}

  def train_source(self):
    return self.data.train

  def eval_source(self):
    return self.data.eval, self.data.eval_batches

  # ---------------------------------------------------------------- final metrics

  def majority_class(self) -> int:
    """The most frequent label of the training examples (ties: the smaller id)."""
    src = self.data.train
    keys = np.arange(src.num_examples) if src.keys is None else src.keys
    counts = collections.Counter(int(e["label"]) for e in src.reader.get(keys))
    return min(counts, key=lambda c: (-counts[c], c))

  def _split_metrics(self, params, source, prefix: str, majority: int,
                     evaluator: Evaluator) -> dict[str, float]:
    sums = evaluator.sums(self.eval_step, params, source)
    m = self.finalize_eval(sums)
    return {f"{prefix}_accuracy": m["accuracy"], f"{prefix}_loss": m["loss"],
            f"{prefix}_examples": m["examples"],
            f"{prefix}_majority_accuracy": float(sums["label_counts"][majority] / m["examples"])}

  def final_eval(self, params, rng, evaluator):
    del rng
    majority = self.majority_class()
    out = self._split_metrics(params, self.data.eval, "dev" if self.eval_split == "validation"
                              else self.eval_split, majority, evaluator)
    if self.builder.name == sentiment.Sst2.name and self.eval_split != "test":
      test = sentiment.from_builder(self.builder, eval_split="test", tokenizer=self.tokenizer,
                                    **self._kw).eval
      out.update(self._split_metrics(params, test, "test", majority, evaluator))
    out["majority_class"] = float(majority)
    return out

  def save_assets(self, workdir: str) -> None:
    self.tokenizer.save(os.path.join(workdir, "tokenizer.json"))
