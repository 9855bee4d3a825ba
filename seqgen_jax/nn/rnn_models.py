"""Recurrent models for every task kind: causal LM, classifier and forecaster.

Each model is an embedding (or input projection), a *sequence encoder* and a head. Two encoders:

* ``StackedRNN`` (seqgen_jax/nn/rnn.py) for ``rnn``, ``lstm``, ``gru``: stacked cells, dropout
  between layers (Zaremba et al. 2014 style: on the non-recurrent connections only).
* ``ParallelStack`` for ``mingru``, ``minlstm``, ``lru``: pre-LayerNorm residual blocks
  ``x + Mixer(LN(x))`` then ``x + MLP(LN(x))`` around a parallel-scan recurrence
  (seqgen_jax/nn/parallel_rnn.py), as Feng et al. (2024) and Orvieto et al. (2023) stack theirs.
  (The LRU paper's block uses a GLU after the LRU; here every mixer gets the same GELU MLP.)

Both take ``(x_BTD, mask_BT, initial_state, *, train)`` and return ``(y_BTO, final_state)``, so
a causal LM generates by carrying the state (``init_cache`` / ``decode``): the cache is the
recurrent state and does not grow with the length.

``config.model`` fields (defaults in brackets): ``d_model`` [256] embedding / residual width;
``hidden_size`` [256] RNN hidden units, minGRU / minLSTM hidden units, or the LRU's complex state
size N; ``num_layers`` [2]; ``dropout`` [0.0]; ``bidirectional`` (classifier [True], forecaster
[False], causal LM: must be False); ``unroll`` [1]; ``lstm_impl`` ["scan"] or "cudnn";
``forget_bias`` [1.0]; ``scan_impl`` ["associative"] or "sequential"; ``log_space`` [False];
``mlp_ratio`` [4] (0: no MLP); ``r_min`` [0.9], ``r_max`` [0.999], ``max_phase`` [2 pi] (LRU);
``pooling`` ["final"], "mean" or "max" (classifier); ``instance_norm`` [True] (forecaster).

Axis key: B batch, T time, D model width, H recurrent hidden / state units, M MLP width,
O encoder output width, V vocabulary, C classes, L look-back, P horizon (prediction length),
F features, X = P * F.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from seqgen_jax.errors import ConfigError
from seqgen_jax.nn.parallel_rnn import LRU, SCAN_IMPLS, MinGRU, MinLSTM
from seqgen_jax.nn.rnn import CELLS, RNN_IMPLS, StackedRNN, check_choice
from seqgen_jax.registry import MODELS

f32 = jnp.float32
RNN_NAMES = tuple(CELLS)  # rnn, lstm, gru
PARALLEL_NAMES = ("mingru", "minlstm", "lru")
POOLINGS = ("final", "mean", "max")


# ------------------------------------------------------------------------------ parallel stack


class ParallelBlock(nn.Module):
  """x + Mixer(LN(x)) (forward, plus a backward mixer if bidirectional), then x + MLP(LN(x))."""

  mixer: str
  d_model: int
  hidden_size: int
  mlp_ratio: int = 4
  dropout: float = 0.0
  bidirectional: bool = False
  scan_impl: str = "associative"
  log_space: bool = False
  r_min: float = 0.9
  r_max: float = 0.999
  max_phase: float = 2 * math.pi
  dtype: Any = None

  def make_mixer(self, reverse: bool, name: str | None = None) -> nn.Module:
    """The recurrence ``mixer`` (minGRU, minLSTM or LRU), run backwards if ``reverse``."""
    if self.mixer == "lru":
      return LRU(self.hidden_size, r_min=self.r_min, r_max=self.r_max, max_phase=self.max_phase,
                 scan_impl=self.scan_impl, reverse=reverse, dtype=self.dtype, name=name)
    cls = {"mingru": MinGRU, "minlstm": MinLSTM}[self.mixer]
    return cls(self.hidden_size, log_space=self.log_space, scan_impl=self.scan_impl,
               reverse=reverse, dtype=self.dtype, name=name)

  @nn.compact
  def __call__(self, x_BTD: jax.Array, mask_BT: jax.Array | None, state: tuple, *,
               train: bool) -> tuple[jax.Array, tuple]:
    """(the block's output [B, T, D], its new state (forward[, backward]))."""
    drop = nn.Dropout(self.dropout, deterministic=not train)
    h_BTD = nn.LayerNorm(dtype=self.dtype, name="ln1")(x_BTD)
    # The mixers output H wide (minGRU / minLSTM) or, the LRU, D wide (its C maps back).
    y_BTH, s_fwd = self.make_mixer(False, "mix")(h_BTD, mask_BT, state[0])
    new_state = (s_fwd,)
    if self.bidirectional:
      y_bwd_BTH, s_bwd = self.make_mixer(True, "mix_reverse")(h_BTD, mask_BT, state[1])
      y_BTH, new_state = y_BTH + y_bwd_BTH, (s_fwd, s_bwd)
    y_BTD = y_BTH
    if self.mixer != "lru":  # the LRU's C already maps the state back to the model width
      y_BTD = nn.Dense(self.d_model, dtype=self.dtype, name="out")(y_BTH)
    x_BTD = x_BTD + drop(y_BTD)
    if self.mlp_ratio:
      h_BTD = nn.LayerNorm(dtype=self.dtype, name="ln2")(x_BTD)
      h_BTM = nn.Dense(self.mlp_ratio * self.d_model, dtype=self.dtype, name="fc")(h_BTD)
      h_BTD = nn.Dense(self.d_model, dtype=self.dtype, name="proj")(nn.gelu(h_BTM))
      x_BTD = x_BTD + drop(h_BTD)
    return x_BTD, new_state


class ParallelStack(nn.Module):
  """``num_layers`` ParallelBlocks and a final LayerNorm; state: per layer, per direction."""

  mixer: str
  d_model: int
  hidden_size: int
  num_layers: int = 2
  mlp_ratio: int = 4
  dropout: float = 0.0
  bidirectional: bool = False
  scan_impl: str = "associative"
  log_space: bool = False
  r_min: float = 0.9
  r_max: float = 0.999
  max_phase: float = 2 * math.pi
  dtype: Any = None

  def initial_state(self, batch_size: int) -> tuple:
    """Zeros: per layer, a tuple of one [B, H] array per direction (complex64 for the LRU)."""
    dt = jnp.complex64 if self.mixer == "lru" else f32
    zeros_BH = jnp.zeros((batch_size, self.hidden_size), dt)
    return tuple((zeros_BH,) * (2 if self.bidirectional else 1) for _ in range(self.num_layers))

  @nn.compact
  def __call__(self, x_BTD: jax.Array, mask_BT: jax.Array | None = None,
               initial_state: tuple | None = None, *, train: bool = False
               ) -> tuple[jax.Array, tuple]:
    """(outputs [B, T, D] after the final LayerNorm, the final state of every layer)."""
    state = self.initial_state(x_BTD.shape[0]) if initial_state is None else initial_state
    kw = {f: getattr(self, f) for f in (
        "mixer", "d_model", "hidden_size", "mlp_ratio", "dropout", "bidirectional", "scan_impl",
        "log_space", "r_min", "r_max", "max_phase", "dtype")}
    finals = []
    for layer in range(self.num_layers):
      x_BTD, s = ParallelBlock(**kw, name=f"block{layer}")(x_BTD, mask_BT, state[layer],
                                                           train=train)
      finals.append(s)
    return nn.LayerNorm(dtype=self.dtype, name="ln_f")(x_BTD), tuple(finals)


# ------------------------------------------------------------------------------ shared pieces


def build_encoder(name: str, cfg: ml_collections.ConfigDict, *, bidirectional: bool,
                  dtype: Any) -> nn.Module:
  """The sequence encoder ``name`` from ``config.model`` (validated: one-line ConfigErrors)."""
  check_choice("recurrent model", name, RNN_NAMES + PARALLEL_NAMES)
  if name in RNN_NAMES:
    impl = cfg.get("lstm_impl", "scan")
    check_choice("lstm_impl", impl, RNN_IMPLS)
    return StackedRNN(name, cfg.get("hidden_size", 256), num_layers=cfg.get("num_layers", 2),
                      bidirectional=bidirectional, dropout=cfg.get("dropout", 0.0),
                      unroll=cfg.get("unroll", 1), forget_bias=cfg.get("forget_bias", 1.0),
                      impl=impl if name == "lstm" else "scan", dtype=dtype)
  check_choice("scan_impl", cfg.get("scan_impl", "associative"), SCAN_IMPLS)
  return ParallelStack(name, cfg.get("d_model", 256), cfg.get("hidden_size", 256),
                       num_layers=cfg.get("num_layers", 2), mlp_ratio=cfg.get("mlp_ratio", 4),
                       dropout=cfg.get("dropout", 0.0), bidirectional=bidirectional,
                       scan_impl=cfg.get("scan_impl", "associative"),
                       log_space=cfg.get("log_space", False), r_min=cfg.get("r_min", 0.9),
                       r_max=cfg.get("r_max", 0.999),
                       max_phase=cfg.get("max_phase", 2 * math.pi), dtype=dtype)


def last_real_index(mask_BT: jax.Array) -> jax.Array:
  """Index of each row's last True entry: [B] int."""
  t = mask_BT.shape[1]
  return t - 1 - jnp.argmax(mask_BT[:, ::-1], axis=1)


def final_features(encoder: nn.Module, y_BTO: jax.Array, state: Any,
                   mask_BT: jax.Array | None) -> jax.Array:
  """A fixed-size summary of a sequence: the recurrent state after its last real token.

  StackedRNN: the top layer's final h (forward ++ backward, whose final state is at the first
  token). ParallelStack: the output at the last real token (++ at the first real one when
  bidirectional), since its state lives inside the residual blocks.
  """
  if isinstance(encoder, StackedRNN):
    nd = encoder.num_directions
    return jnp.concatenate(list(state[0][-nd:]), axis=-1)
  b, t = y_BTO.shape[:2]
  mask_BT = jnp.ones((b, t), bool) if mask_BT is None else mask_BT.astype(bool)
  rows = jnp.arange(b)
  feats = [y_BTO[rows, last_real_index(mask_BT)]]
  if encoder.bidirectional:
    feats.append(y_BTO[rows, jnp.argmax(mask_BT, axis=1)])
  return jnp.concatenate(feats, axis=-1)


def pool(kind: str, encoder: nn.Module, y_BTO: jax.Array, state: Any,
         mask_BT: jax.Array) -> jax.Array:
  """``final`` (see ``final_features``), or masked ``mean`` / ``max`` over time."""
  if kind == "final":
    return final_features(encoder, y_BTO, state, mask_BT)
  m_BT1 = mask_BT.astype(bool)[..., None]
  if kind == "mean":
    return (jnp.sum(jnp.where(m_BT1, y_BTO.astype(f32), 0.0), axis=1)
            / jnp.maximum(jnp.sum(m_BT1, axis=1), 1))
  return jnp.max(jnp.where(m_BT1, y_BTO.astype(f32), -jnp.inf), axis=1)


# ------------------------------------------------------------------------------ causal LM


class RecurrentLM(nn.Module):
  """Embedding -> recurrent encoder -> LM head; generation carries the encoder's state."""

  vocab_size: int
  d_model: int
  encoder: nn.Module
  dropout: float = 0.0
  dtype: Any = None

  def setup(self):
    self.embedding = nn.Embed(self.vocab_size, self.d_model, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)
    self.head = nn.Dense(self.vocab_size, dtype=self.dtype)

  def embed(self, tokens_BT: jax.Array, *, train: bool = False) -> jax.Array:
    """Token embeddings (with dropout): [B, T] -> [B, T, D]."""
    return self.drop(self.embedding(tokens_BT), deterministic=not train)

  def _run(self, x_BTD, state, train):
    y_BTO, state = self.encoder(x_BTD, None, state, train=train)
    logits_BTV = self.head(self.drop(y_BTO, deterministic=not train))
    return logits_BTV.astype(f32), state

  def logits_from_embeddings(self, x_BTD: jax.Array, *, train: bool = False) -> jax.Array:
    """Encoder (from the zero state) and head: [B, T, D] -> float32 [B, T, V]."""
    return self._run(x_BTD, None, train)[0]

  def __call__(self, tokens_BT: jax.Array, *, train: bool = False) -> jax.Array:
    """Float32 next-token logits [B, T, V]."""
    return self.logits_from_embeddings(self.embed(tokens_BT, train=train), train=train)

  def init_cache(self, batch_size: int, max_len: int) -> Any:
    """The zero recurrent state; its size does not depend on ``max_len``."""
    del max_len
    return self.encoder.initial_state(batch_size)

  def decode(self, tokens_BT: jax.Array, cache: Any, position: jax.Array
             ) -> tuple[jax.Array, Any]:
    """Logits of ``tokens_BT`` continuing from the state ``cache``, and the new state."""
    del position  # the state already encodes everything seen so far
    return self._run(self.embed(tokens_BT), cache, False)


# ------------------------------------------------------------------------------ classifier


class RecurrentClassifier(nn.Module):
  """Embedding -> (bidirectional) masked encoder -> pooling -> dropout -> linear classes."""

  vocab_size: int
  num_classes: int
  d_model: int
  encoder: nn.Module
  pooling: str = "final"
  dropout: float = 0.0
  dtype: Any = None

  @nn.compact
  def __call__(self, tokens_BT: jax.Array, mask_BT: jax.Array, *, train: bool = False
               ) -> jax.Array:
    """Float32 class logits [B, C]; ``mask_BT``: True = real token."""
    drop = nn.Dropout(self.dropout, deterministic=not train)
    x_BTD = drop(nn.Embed(self.vocab_size, self.d_model, dtype=self.dtype, name="embedding")(
        tokens_BT))
    y_BTO, state = self.encoder(x_BTD, mask_BT, train=train)
    f_BO = pool(self.pooling, self.encoder, y_BTO, state, mask_BT)
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(drop(f_BO)).astype(f32)


# ------------------------------------------------------------------------------ forecaster


class RecurrentForecaster(nn.Module):
  """Look-back window [B, L, F] -> encoder -> final state -> linear map to [B, P, F].

  ``instance_norm`` standardises each series by its own look-back mean and std and undoes it on
  the forecast (RevIN of Kim et al. 2022, without the affine part).
  """

  num_features: int
  horizon: int
  d_model: int
  encoder: nn.Module
  dropout: float = 0.0
  instance_norm: bool = True
  dtype: Any = None

  @nn.compact
  def __call__(self, x_BLF: jax.Array, *, train: bool = False) -> jax.Array:
    """The float32 forecast [B, P, F] of the look-back window ``x_BLF``."""
    x_BLF = x_BLF.astype(f32)
    if self.instance_norm:
      mu_B1F = jnp.mean(x_BLF, axis=1, keepdims=True)
      sigma_B1F = jnp.sqrt(jnp.var(x_BLF, axis=1, keepdims=True) + 1e-5)
      x_BLF = (x_BLF - mu_B1F) / sigma_B1F
    h_BLD = nn.Dense(self.d_model, dtype=self.dtype, name="in_proj")(x_BLF)
    y_BLO, state = self.encoder(h_BLD, None, train=train)
    f_BO = nn.Dropout(self.dropout, deterministic=not train)(
        final_features(self.encoder, y_BLO, state, None))
    out_BX = nn.Dense(self.horizon * self.num_features, dtype=self.dtype, name="head")(f_BO)
    y_BPF = out_BX.astype(f32).reshape(x_BLF.shape[0], self.horizon, self.num_features)
    return y_BPF * sigma_B1F + mu_B1F if self.instance_norm else y_BPF


# ------------------------------------------------------------------------------ registration


def build_causal_lm(name: str, cfg: ml_collections.ConfigDict, *, vocab_size: int, max_len: int,
                    dtype: Any = None) -> RecurrentLM:
  """A recurrent causal LM (no length limit: ``max_len`` is not used)."""
  del max_len
  if cfg.get("bidirectional", False):
    raise ConfigError(f"a causal_lm cannot be bidirectional; set model.bidirectional=False for "
                      f"'{name}'")
  return RecurrentLM(vocab_size, cfg.get("d_model", 256),
                     build_encoder(name, cfg, bidirectional=False, dtype=dtype),
                     dropout=cfg.get("dropout", 0.0), dtype=dtype)


def build_classifier(name: str, cfg: ml_collections.ConfigDict, *, vocab_size: int,
                     num_classes: int, max_len: int, dtype: Any = None) -> RecurrentClassifier:
  """A recurrent sentence classifier (bidirectional unless ``model.bidirectional=False``)."""
  del max_len
  pooling = cfg.get("pooling", "final")
  check_choice("pooling", pooling, POOLINGS)
  return RecurrentClassifier(
      vocab_size, num_classes, cfg.get("d_model", 256),
      build_encoder(name, cfg, bidirectional=cfg.get("bidirectional", True), dtype=dtype),
      pooling=pooling, dropout=cfg.get("dropout", 0.0), dtype=dtype)


def build_forecaster(name: str, cfg: ml_collections.ConfigDict, *, num_features: int,
                     lookback: int, horizon: int, dtype: Any = None) -> RecurrentForecaster:
  """A recurrent forecaster: encoder over the look-back window, linear head to the horizon."""
  del lookback
  return RecurrentForecaster(
      num_features, horizon, cfg.get("d_model", 256),
      build_encoder(name, cfg, bidirectional=cfg.get("bidirectional", False), dtype=dtype),
      dropout=cfg.get("dropout", 0.0), instance_norm=cfg.get("instance_norm", True), dtype=dtype)


for _name in RNN_NAMES + PARALLEL_NAMES:
  _tags = dict(family="recurrent", parallel_scan=_name in PARALLEL_NAMES)
  MODELS.register(_name, kind="causal_lm", carries_state=True, **_tags)(
      functools.partial(build_causal_lm, _name))
  MODELS.register(_name, kind="classifier", **_tags)(functools.partial(build_classifier, _name))
  MODELS.register(_name, kind="forecaster", **_tags)(functools.partial(build_forecaster, _name))
