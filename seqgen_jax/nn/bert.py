"""BERT-style bidirectional Transformer encoder with masked-LM and classification heads.

Registers the masked_lm "bert", the classifier "bert" (post-LN, [CLS] pooling) and the
classifier "transformer" (pre-LN, mean pooling). ``Encoder`` is also the encoder of the
encoder-decoder model (encoder_decoder.py); ``with_encoder_from`` starts a classifier from a
masked-LM checkpoint.

Axis key: B batch, T positions, D model width, V vocabulary, C classes.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from seqgen_jax.errors import ConfigError
from seqgen_jax.nn.attention import padding_mask
from seqgen_jax.nn.embeddings import LearnedPositions
from seqgen_jax.nn.transformer import (
    ACTIVATIONS,
    LN_EPS,
    NORMS,
    POOLINGS,
    POSITIONS,
    BlockConfig,
    Stack,
    add_positions,
    check_len,
    choice,
    stack_kw,
)
from seqgen_jax.registry import MODELS


class Encoder(nn.Module):
  """Bidirectional Transformer encoder over tokens: embeddings, blocks, optional final LN.

  BERT is the default (post-LN, exact GELU, learned positions, LayerNorm on the embeddings,
  eps 1e-12); ``norm="pre"`` gives a pre-LN encoder with a final LayerNorm instead. BERT's
  segment embeddings are left out (single-segment inputs; the weight import folds segment 0's
  row into the position table).
  """

  vocab_size: int
  max_len: int
  num_layers: int
  num_heads: int
  d_model: int
  d_ff: int | None = None
  dropout: float = 0.0
  attention_dropout: float | None = None
  use_bias: bool = True
  norm: str = "post"
  positions: str = "learned"
  rotary_base: float = 10_000.0
  activation: str = "gelu"
  ln_eps: float = 1e-12
  embed_norm: bool | None = None  # None: True for post-LN (BERT), False for pre-LN
  scale_embeddings: bool = False  # multiply token embeddings by sqrt(D) (Vaswani et al.)
  num_kv_heads: int | None = None
  attention: str = "xla"
  scan_layers: bool = False
  remat: str = "none"
  dtype: jnp.dtype | None = None

  def block_config(self, **overrides: Any) -> BlockConfig:
    """The encoder's (bidirectional) block, with ``overrides`` applied."""
    choice("positions", self.positions, POSITIONS)
    kw = dict(num_heads=self.num_heads, d_ff=self.d_ff or 4 * self.d_model,
              num_kv_heads=self.num_kv_heads, dropout=self.dropout,
              attention_dropout=self.attention_dropout, use_bias=self.use_bias, norm=self.norm,
              activation=self.activation, ln_eps=self.ln_eps,
              rotary_base=self.rotary_base if self.positions == "rotary" else None,
              attention=self.attention, dtype=self.dtype)
    return BlockConfig(**{**kw, **overrides})

  def _embed_norm(self) -> bool:
    return self.norm == "post" if self.embed_norm is None else self.embed_norm

  def setup(self):
    self.token_embed = nn.Embed(self.vocab_size, self.d_model,
                                embedding_init=nn.initializers.normal(0.02), dtype=self.dtype)
    if self.positions == "learned":
      self.pos_embed = LearnedPositions(self.max_len, self.d_model, dtype=self.dtype)
    if self._embed_norm():
      self.embed_ln = nn.LayerNorm(epsilon=self.ln_eps, use_bias=self.use_bias, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)
    self.blocks = Stack(self.block_config(), self.num_layers, scan=self.scan_layers,
                        remat=self.remat)
    if self.norm == "pre":
      self.final_ln = nn.LayerNorm(epsilon=self.ln_eps, use_bias=self.use_bias, dtype=self.dtype)

  def embed(self, tokens_BT: jax.Array, positions_BT: jax.Array, *, train: bool = False
            ) -> jax.Array:
    """Scaled token embeddings plus positions, LayerNorm (BERT) and dropout: [B, T, D]."""
    x_BTD = self.token_embed(tokens_BT)
    if self.scale_embeddings:
      x_BTD = x_BTD * math.sqrt(self.d_model)
    x_BTD = add_positions(x_BTD, self.positions, positions_BT, self.max_len,
                          self.pos_embed if self.positions == "learned" else None)
    if self._embed_norm():
      x_BTD = self.embed_ln(x_BTD)
    return self.drop(x_BTD, deterministic=not train)

  def __call__(self, tokens_BT: jax.Array, mask_BT: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """Hidden states [B, T, D]; ``mask_BT`` (True = real token) hides padding keys."""
    t = tokens_BT.shape[1]
    check_len(t, self.max_len)
    positions_BT = jnp.arange(t)[None, :]
    x_BTD = self.embed(tokens_BT, positions_BT, train=train)
    ctx = {"positions": positions_BT,
           "mask": None if mask_BT is None else padding_mask(mask_BT)}
    x_BTD, _ = self.blocks(x_BTD, ctx, train=train)
    return self.final_ln(x_BTD) if self.norm == "pre" else x_BTD

  def attend(self, x_BTD: jax.Array) -> jax.Array:
    """Output projection tied to the token embeddings: [B, T, D] -> [B, T, V]."""
    return self.token_embed.attend(x_BTD)


class MaskedLM(nn.Module):
  """Encoder + BERT's masked-LM head: Dense -> activation -> LayerNorm -> tied output + bias."""

  encoder: Encoder

  @nn.compact
  def __call__(self, tokens_BT: jax.Array, mask_BT: jax.Array, *, train: bool = False
               ) -> jax.Array:
    """Float32 logits [B, T, V] at every position; ``mask_BT``: True = real token."""
    enc = self.encoder
    h_BTD = enc(tokens_BT, mask_BT, train=train)
    h_BTD = nn.Dense(enc.d_model, dtype=enc.dtype, kernel_init=nn.initializers.normal(0.02),
                     name="mlm_dense")(h_BTD)
    h_BTD = nn.LayerNorm(epsilon=enc.ln_eps, dtype=enc.dtype, name="mlm_ln")(
        ACTIVATIONS[enc.activation](h_BTD))
    bias_V = self.param("mlm_bias", nn.initializers.zeros, (enc.vocab_size,))
    return (enc.attend(h_BTD) + bias_V).astype(jnp.float32)


class EncoderClassifier(nn.Module):
  """Encoder + pooling + linear head (the classifier contract).

  ``pooling="cls"``: BERT's pooler, tanh(Dense(h at position 0)) (the input must start with a
  classification token); ``"mean"``: the mean of the hidden states over real tokens.
  """

  encoder: Encoder
  num_classes: int
  pooling: str = "cls"
  dropout: float = 0.0

  @nn.compact
  def __call__(self, tokens_BT: jax.Array, mask_BT: jax.Array, *, train: bool = False
               ) -> jax.Array:
    """Float32 class logits [B, C]; ``mask_BT``: True = real token."""
    enc = self.encoder
    h_BTD = enc(tokens_BT, mask_BT, train=train)
    if choice("pooling", self.pooling, POOLINGS) == "cls":
      pooled_BD = jnp.tanh(nn.Dense(enc.d_model, dtype=enc.dtype,
                                    kernel_init=nn.initializers.normal(0.02),
                                    name="pooler")(h_BTD[:, 0]))
    else:
      m_BT1 = jnp.asarray(mask_BT, jnp.float32)[..., None]
      pooled_BD = (jnp.sum(h_BTD.astype(jnp.float32) * m_BT1, axis=1)
                   / jnp.maximum(jnp.sum(m_BT1, axis=1), 1.0)).astype(h_BTD.dtype)
    pooled_BD = nn.Dropout(self.dropout)(pooled_BD, deterministic=not train)
    logits_BC = nn.Dense(self.num_classes, dtype=enc.dtype,
                         kernel_init=nn.initializers.normal(0.02), name="head")(pooled_BD)
    return logits_BC.astype(jnp.float32)


def with_encoder_from(params: dict, pretrained: dict) -> dict:
  """``params`` with its "encoder" subtree replaced by ``pretrained["encoder"]``.

  This is how a classifier starts from a masked-LM checkpoint: MaskedLM and EncoderClassifier
  both keep their encoder under the name "encoder", so the subtrees match when both models are
  built from the same encoder fields (and vocabulary / max_len). Raises a one-line ConfigError
  naming the first mismatch.
  """
  want = jax.tree_util.tree_flatten_with_path(params["encoder"])[0]
  have = dict(jax.tree_util.tree_flatten_with_path(pretrained.get("encoder", {}))[0])
  for path, leaf in want:
    name = jax.tree_util.keystr(path)
    if path not in have:
      raise ConfigError(f"pretrained params have no encoder parameter {name}")
    if have[path].shape != leaf.shape:
      raise ConfigError(f"pretrained encoder parameter {name} has shape {have[path].shape}, "
                        f"the model wants {leaf.shape}")
  if len(have) != len(want):
    raise ConfigError(f"pretrained encoder has {len(have)} parameters, the model {len(want)}")
  return {**params, "encoder": pretrained["encoder"]}

# ------------------------------------------------------------------------------ builders


def build_encoder(cfg: ml_collections.ConfigDict, *, vocab_size: int, max_len: int,
                  dtype: jnp.dtype | None = None, **defaults: Any) -> Encoder:
  """Encoder from ``config.model``; ``defaults`` are the family's values for unset fields."""
  get = lambda k, d=None: cfg.get(k, defaults.get(k, d))
  return Encoder(vocab_size=vocab_size, max_len=max_len, num_layers=cfg.num_layers,
                 num_heads=cfg.num_heads, d_model=cfg.d_model, d_ff=get("d_ff"),
                 dropout=get("dropout", 0.0), attention_dropout=get("attention_dropout"),
                 use_bias=get("use_bias", True), norm=choice("norm", get("norm", "post"), NORMS),
                 positions=choice("positions", get("positions", "learned"), POSITIONS),
                 activation=get("activation", "gelu"), ln_eps=get("ln_eps", 1e-12),
                 num_kv_heads=get("num_kv_heads"), dtype=dtype, **stack_kw(cfg))


@MODELS.register("bert", kind="masked_lm", family="transformer")
def build_bert_mlm(cfg: ml_collections.ConfigDict, *, vocab_size: int, max_len: int,
                   dtype: jnp.dtype | None = None) -> MaskedLM:
  """BERT masked LM: the common fields plus norm (default "post"), positions, activation
  (default exact "gelu"), ln_eps (1e-12), attention_dropout."""
  return MaskedLM(build_encoder(cfg, vocab_size=vocab_size, max_len=max_len, dtype=dtype))


def _build_classifier(cfg, vocab_size, num_classes, max_len, dtype, **defaults):
  pooling = choice("pooling", cfg.get("pooling", defaults.pop("pooling")), POOLINGS)
  enc = build_encoder(cfg, vocab_size=vocab_size, max_len=max_len, dtype=dtype, **defaults)
  return EncoderClassifier(enc, num_classes=num_classes, pooling=pooling,
                           dropout=cfg.get("dropout", 0.0))


@MODELS.register("bert", kind="classifier", family="transformer")
def build_bert_classifier(cfg: ml_collections.ConfigDict, *, vocab_size: int, num_classes: int,
                          max_len: int, dtype: jnp.dtype | None = None) -> EncoderClassifier:
  """BERT classifier (post-LN encoder, pooling "cls" by default). Its params["encoder"] has the
  layout of the masked_lm "bert" built from the same fields: start from an MLM checkpoint with
  ``with_encoder_from(params, mlm_params)``."""
  return _build_classifier(cfg, vocab_size, num_classes, max_len, dtype, pooling="cls")


@MODELS.register("transformer", kind="classifier", family="transformer")
def build_transformer_classifier(cfg: ml_collections.ConfigDict, *, vocab_size: int,
                                 num_classes: int, max_len: int,
                                 dtype: jnp.dtype | None = None) -> EncoderClassifier:
  """Pre-LN encoder classifier with mean pooling by default (no [CLS] token needed); the same
  fields as "bert" with defaults norm="pre", pooling="mean", ln_eps=1e-5."""
  return _build_classifier(cfg, vocab_size, num_classes, max_len, dtype, pooling="mean",
                           norm="pre", ln_eps=LN_EPS)
