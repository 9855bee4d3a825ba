"""Language modelling: next-token prediction with a causal model on text or synthetic tasks.

Datasets (``config.data.name``):
  * ``tinyshakespeare``: character level, first 90% train / last 10% val (nanoGPT's split),
    read through its TFDS builder (seqgen_jax/data/shakespeare.py); random windows of
    ``seq_len + 1`` characters.
  * ``copy``, ``assoc_recall``: synthetic long-range-memory tasks (seqgen_jax/data/synthetic.py),
    no files needed; the loss covers only the answer positions.

``config.init.from_pretrained=DIR`` fine-tunes a GPT-2 checkpoint (seqgen_jax.convert) whose
vocabulary is the data's: its model replaces ``config.model``.

Sampling goes through ``seqgen_jax.generate`` (the same code as the user-facing ``generate``):
the model's cached generation (``init_cache`` / ``decode``: a KV cache, or an RNN's carried
state) where it has one, and a sliding window of the model's context otherwise.

Eval metrics: loss (nats per target token), bits per character / token, perplexity, token
accuracy, and sequence accuracy (every answer token right). Axis key: B batch, T position,
V vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import seqgen_jax.nn  # noqa: F401  (registers the models)
from seqgen_jax import generate as generation
from seqgen_jax.data import shakespeare, synthetic
from seqgen_jax.data.builder import DataOptions
from seqgen_jax.data.pipeline import StepSource
from seqgen_jax.dtypes import compute_dtype_from_name
from seqgen_jax.registry import MODELS, TASKS, Registry
from seqgen_jax.tasks import pretrained
from seqgen_jax.train.task import Task

EVAL_SEED_OFFSET = 1_000_003  # eval streams never reuse a training batch index's randomness


@dataclasses.dataclass
class LMData:
  """What a language-modelling dataset gives the task."""

  train: StepSource
  eval: StepSource
  vocab_size: int
  seq_len: int
  unit: str  # "char" or "token": names the bits-per-unit metric
  has_answers: bool = False  # only some positions are scored: report whole-answer accuracy
  tokenizer: Any = None  # has decode(ids) -> str, save(path); None for synthetic tasks
  describe: Callable[[np.ndarray, np.ndarray], str] | None = None


LM_DATASETS: Registry[Callable[..., LMData]] = Registry("language-modelling dataset")


@LM_DATASETS.register("tinyshakespeare")
def _tiny_shakespeare(cfg, batch_size: int, eval_batch_size: int, seed: int) -> LMData:
  data = shakespeare.load(DataOptions.from_config(cfg), seq_len=cfg.seq_len,
                          batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
                          eval_seed=seed + EVAL_SEED_OFFSET)
  return LMData(train=data.train, eval=data.eval, vocab_size=data.vocab_size,
                seq_len=cfg.seq_len, unit="char", tokenizer=data.tokenizer)


@LM_DATASETS.register("copy")
def _copy(cfg, batch_size: int, eval_batch_size: int, seed: int) -> LMData:
  kw = dict(length=cfg.get("length", 8), delay=cfg.get("delay", 8),
            alphabet=cfg.get("alphabet", 8))
  train = synthetic.CopyTask(**kw, global_batch_size=batch_size, seed=seed)
  ev = synthetic.CopyTask(**kw, global_batch_size=eval_batch_size, seed=seed + EVAL_SEED_OFFSET)
  return LMData(train=train, eval=ev, vocab_size=train.vocab_size, seq_len=train.seq_len,
                unit="token", has_answers=True, describe=train.describe)


@LM_DATASETS.register("assoc_recall")
def _assoc_recall(cfg, batch_size: int, eval_batch_size: int, seed: int) -> LMData:
  kw = dict(num_pairs=cfg.get("num_pairs", 8), num_keys=cfg.get("num_keys", 16),
            num_values=cfg.get("num_values", 16))
  train = synthetic.AssociativeRecall(**kw, global_batch_size=batch_size, seed=seed)
  ev = synthetic.AssociativeRecall(**kw, global_batch_size=eval_batch_size,
                                   seed=seed + EVAL_SEED_OFFSET)
  return LMData(train=train, eval=ev, vocab_size=train.vocab_size, seq_len=train.seq_len,
                unit="token", has_answers=True, describe=train.describe)


def token_nll_and_correct(logits_BTV: jax.Array, targets_BT: jax.Array
                          ) -> tuple[jax.Array, jax.Array]:
  """Per-position negative log-likelihood (float32) and argmax correctness, both [B, T]."""
  logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
  nll_BT = -jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]
  correct_BT = (jnp.argmax(logits_BTV, axis=-1) == targets_BT).astype(jnp.float32)
  return nll_BT, correct_BT


@TASKS.register("lm")
class LanguageModelTask(Task):
  """Causal language modelling with any model registered with ``kind="causal_lm"``."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    make_data = LM_DATASETS.get(config.data.name)
    eval_bs = config.get("eval", {}).get("batch_size", None) or config.train.batch_size
    self.data = make_data(config.data, config.train.batch_size, eval_bs, config.train.seed)
    self.dtype = compute_dtype_from_name(config.train.get("compute_dtype", "float32"))
    build_kwargs = dict(vocab_size=self.data.vocab_size, max_len=self.data.seq_len)
    imported = pretrained.imported_model(config, "causal_lm", build_kwargs, dtype=self.dtype)
    self.imported_params = None
    if imported is not None:  # config.init.from_pretrained: fine-tune the checkpoint's model
      self.model, self.imported_params = imported
    else:
      self.model: nn.Module = MODELS.get(config.model.name, kind="causal_lm")(
          config.model, **build_kwargs, dtype=self.dtype)
    self.sample_cfg = config.get("sample", ml_collections.ConfigDict())

  # ---------------------------------------------------------------- training and evaluation

  def init_params(self, rng: jax.Array):
    tokens_BT = jnp.zeros((1, self.data.seq_len), jnp.int32)
    return self.model.init({"params": rng}, tokens_BT, train=False)["params"]

  def initial_params(self):
    return self.imported_params

  def loss_fn(self, params, batch, rng):
    logits_BTV = self.model.apply({"params": params}, batch["inputs"], train=True,
                                  rngs={"dropout": rng})
    nll_BT, correct_BT = token_nll_and_correct(logits_BTV, batch["targets"])
    w_BT = batch["weights"]
    total = jnp.maximum(jnp.sum(w_BT), 1e-9)
    loss = jnp.sum(nll_BT * w_BT) / total
    return loss, {"accuracy": jnp.sum(correct_BT * w_BT) / total, "weight": jnp.sum(w_BT)}

  def eval_step(self, params, batch):
    logits_BTV = self.model.apply({"params": params}, batch["inputs"], train=False)
    nll_BT, correct_BT = token_nll_and_correct(logits_BTV, batch["targets"])
    w_BT = batch["weights"]
    answered_B = jnp.sum(w_BT, axis=1) > 0
    all_right_B = jnp.all(jnp.logical_or(correct_BT > 0, w_BT == 0), axis=1)
    return {"nll": jnp.sum(nll_BT * w_BT), "correct": jnp.sum(correct_BT * w_BT),
            "tokens": jnp.sum(w_BT), "seq_correct": jnp.sum(all_right_B & answered_B),
            "seqs": jnp.sum(answered_B)}

  def finalize_eval(self, sums):
    loss = float(sums["nll"] / max(sums["tokens"], 1e-9))
    out = {"loss": loss, f"bits_per_{self.data.unit}": loss / math.log(2),
           "perplexity": math.exp(min(loss, 50.0)),
           "accuracy": float(sums["correct"] / max(sums["tokens"], 1e-9))}
    if self.data.has_answers:
      out["seq_accuracy"] = float(sums["seq_correct"] / max(sums["seqs"], 1e-9))
    return out

  def train_source(self):
    return self.data.train

  def eval_source(self):
    return self.data.eval, self.config.get("eval", {}).get("num_batches", 10)

  # ---------------------------------------------------------------- sampling

  def uses_cached_generation(self, num_fed: int) -> bool:
    """Whether sampling runs the model's init_cache / decode (``generate.uses_cache``): a model
    with ``decode`` and either ``num_fed`` (the tokens it consumes) within its context or a
    recurrent state of fixed size; otherwise a sliding window of the context runs."""
    return generation.uses_cache(self.model, num_fed)

  def _generate(self, params, prompt_BP: jax.Array, num_new: int, rng: jax.Array,
                **kw) -> jax.Array:
    """``prompt_BP`` extended by ``num_new`` tokens (``generate.generate_tokens``)."""
    return generation.generate_tokens(self.model, params, prompt_BP, num_new, rng,
                                      window=self.data.seq_len, **kw)[0]

  def sample(self, params, rng):
    if self.data.tokenizer is not None:
      return {"sample": self._sample_text(params, rng)}
    return {"sample": self._sample_answers(params)}

  def _jitted(self, name: str, fn):
    """``jax.jit(fn)`` made once per task and name, so periodic sampling compiles only once."""
    cache = self.__dict__.setdefault("_jit_cache", {})
    if name not in cache:
      cache[name] = jax.jit(fn)
    return cache[name]

  def _sample_text(self, params, rng) -> str:
    tok = self.data.tokenizer
    prompt = self.sample_cfg.get("prompt", "\n")
    prompt_1P = jnp.asarray(tok.encode(prompt))[None, :]
    fn = self._jitted("sample_text", lambda p, prompt, r: self._generate(
        p, prompt, self.sample_cfg.get("num_tokens", 200), r,
        temperature=self.sample_cfg.get("temperature", 0.8),
        top_k=self.sample_cfg.get("top_k", None)))
    return tok.decode(np.asarray(fn(params, prompt_1P, rng))[0])

  def _sample_answers(self, params) -> str:
    """Greedy generation of the answers of two eval examples, shown next to the questions."""
    batch = self.data.eval.batch(0, slice(0, 2))
    first = int(np.argmax(batch["weights"][0] > 0))  # targets[first] is the first answer token
    prompt_BP = jnp.asarray(batch["inputs"][:, :first + 1])
    n = self.data.seq_len - first
    fn = self._jitted("sample_answers", lambda p, prompt: self._generate(
        p, prompt, n, jax.random.PRNGKey(0), greedy=True))
    out_BT = np.asarray(fn(params, prompt_BP))  # [B, seq_len + 1]: inputs plus the last answer
    pred_BT = np.zeros_like(batch["targets"])
    pred_BT[:, first:] = out_BT[:, first + 1:]  # aligned with targets
    return "\n".join(self.data.describe(batch["inputs"][i], pred_BT[i])
                     for i in range(pred_BT.shape[0]))

  def save_assets(self, workdir: str) -> None:
    if self.data.tokenizer is not None:
      self.data.tokenizer.save(os.path.join(workdir, "tokenizer.json"))
