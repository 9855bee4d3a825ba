"""Masked (absorbing-state) discrete diffusion language model in the style of MDLM.

Sahoo et al. (2024), "Simple and Effective Masked Diffusion Language Models". The forward process
replaces each token independently by the mask token ``m`` (id ``V``, one past the data
vocabulary) with probability ``1 - alpha_t``. With the log-linear schedule
``alpha_t = 1 - t`` (MDLM's ``sigma(t) = -log(1 - t)``, taken with eps -> 0) every token is
masked at t = 1, so the prior term vanishes, and the continuous-time negative ELBO is

    NELBO(x) = E_{t ~ U(0, 1]} E_{z_t ~ q(.|x)} [ (1 / t) * sum_{l : z_t^l = m} -log p(x^l | z_t) ]

(``-alpha'_t / (1 - alpha_t) = 1 / t``). The network's output is SUBS-parameterised: the mask
token gets probability 0 and unmasked tokens are copied, so only masked positions contribute.
NELBO / length is an upper bound on the negative log-likelihood per token, reported in bits per
character (or token) next to the autoregressive models' exact bits per character. Training and
evaluation draw ``t`` by antithetic (stratified) sampling over the batch, as MDLM does.

Sampling (``ancestral_sample``) runs T ancestral steps from all-mask at t = 1 to t = 0: at step
t -> s each still-masked position is revealed with probability (t - s) / t and, if revealed,
drawn from the model; revealed tokens never change (carry-over). The last step (s = 0) reveals
every remaining position, so samples contain no mask token.

Model: any ``masked_lm`` (seqgen_jax/registry.py), by default ``gpt_bidir`` (GPT's backbone
without the causal mask; seqgen_jax/nn/bidirectional_gpt.py). Data: the language-modelling
datasets of seqgen_jax/tasks/lm.py (``tinyshakespeare``, ``copy``, ``assoc_recall``); a training
sequence is the ``seq_len`` characters of a window. Config: experiments/configs/
shakespeare_char_mdlm.py.

Axis key: B batch, T positions, V vocabulary (data tokens plus the mask token), K samples of t.
"""

from __future__ import annotations

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
from seqgen_jax.data.pipeline import Batch, StepSource
from seqgen_jax.dtypes import compute_dtype_from_name
from seqgen_jax.errors import ConfigError
from seqgen_jax.registry import MODELS, TASKS
from seqgen_jax.tasks.lm import EVAL_SEED_OFFSET, LM_DATASETS
from seqgen_jax.train.task import Task

PyTree = Any
LogitsFn = Callable[[jax.Array], jax.Array]  # z_BT (with mask tokens) -> logits_BTV


def subs_log_probs(logits_BTV: jax.Array, mask_id: int) -> jax.Array:
  """Log-probabilities over the data tokens only: the mask token gets -inf (SUBS)."""
  logits_BTV = logits_BTV.astype(jnp.float32)
  logits_BTV = logits_BTV.at[..., mask_id].set(-jnp.inf)
  return jax.nn.log_softmax(logits_BTV, axis=-1)


def antithetic_times(rng: jax.Array, n: int) -> jax.Array:
  """``n`` times in (0, 1], stratified: t_i = 1 - ((u + i / n) mod 1) with one uniform u."""
  u = jax.random.uniform(rng, ())
  return 1.0 - jnp.mod(u + jnp.arange(n) / n, 1.0)


def nelbo_per_sequence(logits_fn: LogitsFn, x_BT: jax.Array, t_B: jax.Array, rng: jax.Array,
                       mask_id: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One-sample estimate of each sequence's NELBO (nats) at times ``t_B``; also, per sequence,
  the number of masked tokens and of those the model's argmax gets right."""
  masked_BT = jax.random.uniform(rng, x_BT.shape) < t_B[:, None]  # P(masked) = 1 - alpha_t = t
  z_BT = jnp.where(masked_BT, mask_id, x_BT)
  logp_BTV = subs_log_probs(logits_fn(z_BT), mask_id)
  nll_BT = -jnp.take_along_axis(logp_BTV, x_BT[..., None], axis=-1)[..., 0]
  nll_BT = jnp.where(masked_BT, nll_BT, 0.0)  # carry-over: unmasked positions cost nothing
  correct_BT = masked_BT & (jnp.argmax(logp_BTV, axis=-1) == x_BT)
  return (jnp.sum(nll_BT, axis=1) / t_B, jnp.sum(masked_BT, axis=1),
          jnp.sum(correct_BT, axis=1))


def ancestral_sample(logits_fn: LogitsFn, batch_size: int, length: int, mask_id: int,
                     num_steps: int, rng: jax.Array, *, temperature: float = 1.0) -> jax.Array:
  """Iterative unmasking from all-mask in ``num_steps`` ancestral steps; [B, length] tokens."""
  if num_steps < 1:
    raise ConfigError(f"MDLM sampling needs num_steps >= 1, got {num_steps}")
  z_BT = jnp.full((batch_size, length), mask_id, jnp.int32)
  ts = jnp.linspace(1.0, 0.0, num_steps + 1)

  def body(z_BT, inp):
    t, s, key = inp
    k_reveal, k_token = jax.random.split(key)
    logp_BTV = subs_log_probs(logits_fn(z_BT) / temperature, mask_id)
    x_BT = jax.random.categorical(k_token, logp_BTV, axis=-1).astype(jnp.int32)
    reveal_BT = jax.random.uniform(k_reveal, z_BT.shape) < (t - s) / t  # s = 0: all revealed
    z_BT = jnp.where((z_BT == mask_id) & reveal_BT, x_BT, z_BT)
    return z_BT, None

  keys = jax.random.split(rng, num_steps)
  z_BT, _ = jax.lax.scan(body, z_BT, (ts[:-1], ts[1:], keys))
  return z_BT


class _IndexedSource:
  """Adds each row's global batch index (``index``) so evaluation noise is fixed per batch."""

  def __init__(self, source: StepSource):
    self.source = source
    self.global_batch_size = source.global_batch_size

  def batch(self, index: int, rows: slice) -> Batch:
    b = dict(self.source.batch(index, rows))
    b["index"] = np.full((b["inputs"].shape[0],), index, np.int32)
    return b


@TASKS.register("mdlm")
class MaskedDiffusionLMTask(Task):
  """MDLM with any model registered with ``kind="masked_lm"`` (the network sees V + 1 tokens)."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    make_data = LM_DATASETS.get(config.data.name)
    eval_bs = config.get("eval", {}).get("batch_size", None) or config.train.batch_size
    self.data = make_data(config.data, config.train.batch_size, eval_bs, config.train.seed)
    self.mask_id = self.data.vocab_size
    self.dtype = compute_dtype_from_name(config.train.get("compute_dtype", "float32"))
    self.model: nn.Module = MODELS.get(config.model.name, kind="masked_lm")(
        config.model, vocab_size=self.data.vocab_size + 1, max_len=self.data.seq_len,
        dtype=self.dtype)
    self.mdlm_cfg = config.get("mdlm", ml_collections.ConfigDict())
    self.eval_samples = int(self.mdlm_cfg.get("eval_t_samples", 4))
    if self.eval_samples < 1:
      raise ConfigError(f"mdlm.eval_t_samples must be >= 1, got {self.eval_samples}")
    self.sample_cfg = config.get("sample", ml_collections.ConfigDict())

  def _logits_fn(self, params, *, train: bool = False, rng: jax.Array | None = None) -> LogitsFn:
    rngs = {"dropout": rng} if rng is not None else None
    return lambda z_BT: self.model.apply({"params": params}, z_BT, jnp.ones(z_BT.shape, bool),
                                         train=train, rngs=rngs)

  def init_params(self, rng):
    z_BT = jnp.zeros((1, self.data.seq_len), jnp.int32)
    return self.model.init({"params": rng}, z_BT, jnp.ones_like(z_BT, bool), train=False)["params"]

  def loss_fn(self, params, batch, rng):
    x_BT = batch["inputs"]
    k_t, k_mask, k_drop = jax.random.split(rng, 3)
    t_B = antithetic_times(k_t, x_BT.shape[0])
    nelbo_B, masked_B, correct_B = nelbo_per_sequence(
        self._logits_fn(params, train=True, rng=k_drop), x_BT, t_B, k_mask, self.mask_id)
    tokens = x_BT.shape[0] * x_BT.shape[1]
    return jnp.sum(nelbo_B) / tokens, {
        "masked_accuracy": jnp.sum(correct_B) / jnp.maximum(jnp.sum(masked_B), 1),
        "weight": jnp.asarray(tokens, jnp.float32)}

  def eval_step(self, params, batch):
    x_BT = batch["inputs"]
    b, t = x_BT.shape
    logits_fn = self._logits_fn(params)
    total = jnp.zeros(())
    for k in range(self.eval_samples):
      # Fixed noise per (eval batch, row, sample): evaluations at different steps compare.
      keys_B = jax.vmap(lambda i, r: jax.random.fold_in(
          jax.random.fold_in(jax.random.PRNGKey(EVAL_SEED_OFFSET), i), r))(
              batch["index"], jnp.arange(b))
      # Stratified over the K samples of each row: t = 1 - (u_row + k / K) mod 1.
      u_B = jax.vmap(lambda key: jax.random.uniform(key, ()))(keys_B)
      t_B = 1.0 - jnp.mod(u_B + k / self.eval_samples, 1.0)
      mask_key = jax.random.fold_in(keys_B[0], 7919 + k)
      nelbo_B, _, _ = nelbo_per_sequence(logits_fn, x_BT, t_B, mask_key, self.mask_id)
      total = total + jnp.sum(nelbo_B)
    return {"nelbo": total / self.eval_samples, "tokens": jnp.asarray(b * t, jnp.float32)}

  def finalize_eval(self, sums):
    loss = float(sums["nelbo"] / max(sums["tokens"], 1e-9))
    return {"loss": loss, f"bits_per_{self.data.unit}": loss / math.log(2),
            "perplexity_bound": math.exp(min(loss, 50.0))}

  def train_source(self):
    return self.data.train

  def eval_source(self):
    return (_IndexedSource(self.data.eval),
            self.config.get("eval", {}).get("num_batches", 10))

  def generate(self, params: PyTree, batch_size: int, num_steps: int, rng: jax.Array,
               temperature: float = 1.0) -> jax.Array:
    """[B, seq_len] samples by ``num_steps`` steps of iterative unmasking."""
    return ancestral_sample(self._logits_fn(params), batch_size, self.data.seq_len,
                            self.mask_id, num_steps, rng, temperature=temperature)

  def sample(self, params, rng):
    steps = int(self.mdlm_cfg.get("sample_steps", 64))
    fn = jax.jit(lambda p, r: self.generate(p, 1, steps, r,
                                            self.sample_cfg.get("temperature", 1.0)))
    tokens = np.asarray(fn(params, rng))[0]
    if self.data.tokenizer is not None:
      return {"sample": self.data.tokenizer.decode(tokens)}
    return {"sample": " ".join(str(int(v)) for v in tokens)}

  def save_assets(self, workdir: str) -> None:
    if self.data.tokenizer is not None:
      self.data.tokenizer.save(os.path.join(workdir, "tokenizer.json"))
