"""GPT: the decoder-only causal Transformer language model (GPT-2 architecture by default).

Registers the causal_lm builder "gpt". The blocks, stack and KV cache are the shared ones of
transformer.py; bidirectional_gpt.py reuses this model without the causal mask.

Axis key: B batch, T positions, D model width, V vocabulary.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from seqgen_jax.nn.embeddings import LearnedPositions
from seqgen_jax.nn.transformer import (
    LN_EPS,
    POSITIONS,
    BlockConfig,
    Stack,
    add_positions,
    check_len,
    choice,
    stack_kw,
    zero_kv_cache,
)
from seqgen_jax.registry import MODELS


class GPT(nn.Module):
  """Decoder-only causal Transformer LM (GPT-2 architecture by default; tied embeddings).

  Initialisation follows GPT-2: N(0, 0.02) weights, and the projections that write into the
  residual stream scaled by 1/sqrt(2 * num_layers). Beyond GPT-2: grouped-query attention
  (``num_kv_heads``), sinusoidal or rotary positions, scan over layers, remat, and a KV cache
  (``init_cache`` / ``decode``, the causal_lm contract in seqgen_jax/registry.py).
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
  num_kv_heads: int | None = None
  positions: str = "learned"
  rotary_base: float = 10_000.0
  activation: str = "gelu_tanh"
  ln_eps: float = LN_EPS
  attention: str = "xla"
  scan_layers: bool = False
  remat: str = "none"

  def block_config(self) -> BlockConfig:
    """The causal pre-LN block, with GPT-2's 1/sqrt(2L) scaling of the residual projections."""
    choice("positions", self.positions, POSITIONS)
    return BlockConfig(
        num_heads=self.num_heads, d_ff=self.d_ff or 4 * self.d_model,
        num_kv_heads=self.num_kv_heads, dropout=self.dropout, use_bias=self.use_bias,
        norm="pre", activation=self.activation, ln_eps=self.ln_eps, causal=True,
        rotary_base=self.rotary_base if self.positions == "rotary" else None,
        attention=self.attention, out_init_std=0.02 / math.sqrt(2 * self.num_layers),
        dtype=self.dtype)

  def setup(self):
    self.wte = nn.Embed(self.vocab_size, self.d_model,
                        embedding_init=nn.initializers.normal(0.02), dtype=self.dtype)
    if self.positions == "learned":
      self.wpe = LearnedPositions(self.max_len, self.d_model, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)
    self.decoder = Stack(self.block_config(), self.num_layers, scan=self.scan_layers,
                         remat=self.remat)
    self.ln_f = nn.LayerNorm(epsilon=self.ln_eps, use_bias=self.use_bias, dtype=self.dtype)

  def _embed(self, tokens_BT: jax.Array, positions_BT: jax.Array, train: bool) -> jax.Array:
    x_BTD = add_positions(self.wte(tokens_BT), self.positions, positions_BT, self.max_len,
                          self.wpe if self.positions == "learned" else None)
    return self.drop(x_BTD, deterministic=not train)

  def _logits(self, x_BTD: jax.Array) -> jax.Array:
    return self.wte.attend(self.ln_f(x_BTD)).astype(jnp.float32)

  def embed(self, tokens_BT: jax.Array, *, train: bool = False) -> jax.Array:
    """Token plus position embeddings (with dropout): [B, T] ints -> [B, T, D]."""
    t = tokens_BT.shape[1]
    check_len(t, self.max_len)
    return self._embed(tokens_BT, jnp.arange(t)[None, :], train)

  def logits_from_embeddings(self, x_BTD: jax.Array, *, train: bool = False) -> jax.Array:
    """The blocks, final LayerNorm and tied output projection; float32 logits [B, T, V]."""
    ctx = {"positions": jnp.arange(x_BTD.shape[1])[None, :]}
    x_BTD, _ = self.decoder(x_BTD, ctx, train=train)
    return self._logits(x_BTD)

  def __call__(self, tokens_BT: jax.Array, *, train: bool = False) -> jax.Array:
    """Float32 next-token logits [B, T, V]."""
    return self.logits_from_embeddings(self.embed(tokens_BT, train=train), train=train)

  def init_cache(self, batch_size: int, max_len: int) -> dict:
    """An empty KV cache for ``max_len`` positions (needs no parameters)."""
    check_len(max_len, self.max_len)
    return {"layers": zero_kv_cache(self.block_config(), self.d_model, self.num_layers,
                                    self.scan_layers, batch_size, max_len)}

  def decode(self, tokens_BT: jax.Array, cache: dict, position: jax.Array
             ) -> tuple[jax.Array, dict]:
    """Logits of T new tokens that start at ``position``, and the cache with them added."""
    positions_BT = position + jnp.arange(tokens_BT.shape[1])[None, :]
    x_BTD = self._embed(tokens_BT, positions_BT, train=False)
    x_BTD, layers = self.decoder(x_BTD, {"position": position}, cache["layers"], mode="decode")
    return self._logits(x_BTD), {"layers": layers}

@MODELS.register("gpt", kind="causal_lm", family="transformer")
def build_gpt(cfg: ml_collections.ConfigDict, *, vocab_size: int, max_len: int,
              dtype: jnp.dtype | None = None) -> GPT:
  """GPT from ``config.model``: the common fields plus use_bias, positions ("learned" |
  "sinusoidal" | "rotary"), activation, ln_eps."""
  return GPT(vocab_size=vocab_size, max_len=max_len, num_layers=cfg.num_layers,
             num_heads=cfg.num_heads, d_model=cfg.d_model, d_ff=cfg.get("d_ff", None),
             dropout=cfg.get("dropout", 0.0), use_bias=cfg.get("use_bias", True), dtype=dtype,
             num_kv_heads=cfg.get("num_kv_heads", None),
             positions=choice("positions", cfg.get("positions", "learned"), POSITIONS),
             activation=cfg.get("activation", "gelu_tanh"), ln_eps=cfg.get("ln_eps", LN_EPS),
             **stack_kw(cfg))
