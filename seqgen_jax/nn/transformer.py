"""Transformer models. Currently: the GPT-style decoder-only language model (pre-LN).

Axis key: B batch, T sequence position, D model width, F MLP width, V vocabulary.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from seqgen_jax.nn.attention import SelfAttention
from seqgen_jax.nn.embeddings import LearnedPositions
from seqgen_jax.registry import MODELS

LN_EPS = 1e-5  # GPT-2's LayerNorm epsilon


class MLP(nn.Module):
  """Dense(F) -> GELU (tanh approximation, as GPT-2) -> Dense(D)."""

  d_ff: int
  use_bias: bool = True
  init_std: float = 0.02
  out_init_std: float = 0.02
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x_BTD: jax.Array) -> jax.Array:
    d = x_BTD.shape[-1]
    h_BTF = nn.Dense(self.d_ff, use_bias=self.use_bias, dtype=self.dtype,
                     kernel_init=nn.initializers.normal(self.init_std), name="fc")(x_BTD)
    h_BTF = nn.gelu(h_BTF, approximate=True)
    return nn.Dense(d, use_bias=self.use_bias, dtype=self.dtype,
                    kernel_init=nn.initializers.normal(self.out_init_std), name="proj")(h_BTF)


class DecoderBlock(nn.Module):
  """Pre-LN block: x + Attn(LN(x)), then x + MLP(LN(x)); dropout on each residual branch."""

  num_heads: int
  d_ff: int
  dropout: float = 0.0
  use_bias: bool = True
  out_init_std: float = 0.02
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x_BTD: jax.Array, *, train: bool) -> jax.Array:
    h = nn.LayerNorm(epsilon=LN_EPS, use_bias=self.use_bias, dtype=self.dtype, name="ln1")(x_BTD)
    h = SelfAttention(self.num_heads, dropout=self.dropout, use_bias=self.use_bias,
                      out_init_std=self.out_init_std, dtype=self.dtype, name="attn")(
                          h, causal=True, train=train)
    x_BTD = x_BTD + nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.LayerNorm(epsilon=LN_EPS, use_bias=self.use_bias, dtype=self.dtype, name="ln2")(x_BTD)
    h = MLP(self.d_ff, use_bias=self.use_bias, out_init_std=self.out_init_std, dtype=self.dtype,
            name="mlp")(h)
    return x_BTD + nn.Dropout(self.dropout, deterministic=not train)(h)


class GPT(nn.Module):
  """Decoder-only causal Transformer LM (GPT-2 architecture; tied input/output embeddings).

  Initialisation follows GPT-2: N(0, 0.02) weights, and the projections that write into the
  residual stream scaled by 1/sqrt(2 * num_layers).
  """

  vocab_size: int
  max_len: int
  num_layers: int
  num_heads: int
  d_model: int
  d_ff: int | None = None
  dropout: float = 0.0
  use_bias: bool = True
  dtype: jnp.dtype | None = None

  def setup(self):
    self.wte = nn.Embed(self.vocab_size, self.d_model,
                        embedding_init=nn.initializers.normal(0.02), dtype=self.dtype)
    self.wpe = LearnedPositions(self.max_len, self.d_model, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)
    out_std = 0.02 / math.sqrt(2 * self.num_layers)
    self.blocks = [
        DecoderBlock(self.num_heads, self.d_ff or 4 * self.d_model, dropout=self.dropout,
                     use_bias=self.use_bias, out_init_std=out_std, dtype=self.dtype)
        for _ in range(self.num_layers)
    ]
    self.ln_f = nn.LayerNorm(epsilon=LN_EPS, use_bias=self.use_bias, dtype=self.dtype)

  def embed(self, tokens_BT: jax.Array, *, train: bool = False) -> jax.Array:
    """Token plus position embeddings (with dropout): [B, T] ints -> [B, T, D]."""
    t = tokens_BT.shape[1]
    if t > self.max_len:
      raise ValueError(f"sequence length {t} exceeds the model's max_len={self.max_len}")
    x_BTD = self.wte(tokens_BT) + self.wpe(jnp.arange(t)[None, :])
    return self.drop(x_BTD, deterministic=not train)

  def logits_from_embeddings(self, x_BTD: jax.Array, *, train: bool = False) -> jax.Array:
    """The blocks, final LayerNorm and tied output projection; float32 logits [B, T, V]."""
    for block in self.blocks:
      x_BTD = block(x_BTD, train=train)
    x_BTD = self.ln_f(x_BTD)
    return self.wte.attend(x_BTD).astype(jnp.float32)

  def __call__(self, tokens_BT: jax.Array, *, train: bool = False) -> jax.Array:
    return self.logits_from_embeddings(self.embed(tokens_BT, train=train), train=train)


@MODELS.register("gpt", kind="causal_lm", family="transformer")
def build_gpt(cfg: ml_collections.ConfigDict, *, vocab_size: int, max_len: int,
              dtype: jnp.dtype | None = None) -> GPT:
  """GPT from ``config.model``: num_layers, num_heads, d_model, d_ff, dropout, use_bias."""
  return GPT(vocab_size=vocab_size, max_len=max_len, num_layers=cfg.num_layers,
             num_heads=cfg.num_heads, d_model=cfg.d_model, d_ff=cfg.get("d_ff", None),
             dropout=cfg.get("dropout", 0.0), use_bias=cfg.get("use_bias", True), dtype=dtype)
