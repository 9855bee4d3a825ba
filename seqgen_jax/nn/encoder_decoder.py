"""The encoder-decoder Transformer of Vaswani et al. (2017) for sequence-to-sequence tasks.

Registers the seq2seq builder "transformer". The encoder is bert.py's ``Encoder``; the decoder
is a causal ``Stack`` with cross-attention over the encoder's output (the memory), whose keys
and values ``init_cache`` projects once for cached decoding.

Axis key: B batch, S source positions, T target positions, D model width, V target vocabulary.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from seqgen_jax.errors import ConfigError
from seqgen_jax.nn.attention import padding_mask
from seqgen_jax.nn.bert import Encoder
from seqgen_jax.nn.embeddings import LearnedPositions
from seqgen_jax.nn.transformer import (
    ACTIVATIONS,
    NORMS,
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


class EncoderDecoder(nn.Module):
  """The Transformer of Vaswani et al. (2017) for sequence-to-sequence tasks.

  Defaults follow the paper: post-LN, ReLU MLP, sinusoidal positions, embeddings scaled by
  sqrt(D), decoder output tied to the target embeddings. ``share_embeddings`` also ties source
  and target embeddings (needs one shared vocabulary). Follows the seq2seq contract:
  ``encode`` / ``init_cache`` (projects the memory to every layer's cross-attention keys and
  values once) / ``decode``.
  """

  src_vocab_size: int
  tgt_vocab_size: int
  max_len: int
  num_layers: int
  num_heads: int
  d_model: int
  num_decoder_layers: int | None = None  # None: = num_layers
  d_ff: int | None = None
  dropout: float = 0.0
  attention_dropout: float | None = None
  use_bias: bool = True
  norm: str = "post"
  positions: str = "sinusoidal"
  activation: str = "relu"
  ln_eps: float = 1e-6
  scale_embeddings: bool = True
  share_embeddings: bool = False
  num_kv_heads: int | None = None
  attention: str = "xla"
  scan_layers: bool = False
  remat: str = "none"
  dtype: jnp.dtype | None = None

  def setup(self):
    if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
      raise ConfigError(f"share_embeddings needs one vocabulary; got source "
                        f"{self.src_vocab_size} and target {self.tgt_vocab_size}")
    self.encoder = Encoder(
        self.src_vocab_size, self.max_len, self.num_layers, self.num_heads, self.d_model,
        d_ff=self.d_ff, dropout=self.dropout, attention_dropout=self.attention_dropout,
        use_bias=self.use_bias, norm=self.norm, positions=self.positions,
        activation=self.activation, ln_eps=self.ln_eps, embed_norm=False,
        scale_embeddings=self.scale_embeddings, num_kv_heads=self.num_kv_heads,
        attention=self.attention, scan_layers=self.scan_layers, remat=self.remat,
        dtype=self.dtype)
    if not self.share_embeddings:
      self.tgt_embed = nn.Embed(self.tgt_vocab_size, self.d_model,
                                embedding_init=nn.initializers.normal(0.02), dtype=self.dtype)
    if self.positions == "learned":
      self.tgt_pos_embed = LearnedPositions(self.max_len, self.d_model, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)
    self.decoder = Stack(self.decoder_block(), self._num_dec_layers(), scan=self.scan_layers,
                         remat=self.remat)
    if self.norm == "pre":
      self.dec_final_ln = nn.LayerNorm(epsilon=self.ln_eps, use_bias=self.use_bias,
                                       dtype=self.dtype)

  def _num_dec_layers(self) -> int:
    return self.num_decoder_layers or self.num_layers

  def decoder_block(self) -> BlockConfig:
    """The decoder's block: causal self-attention, cross-attention to the memory, MLP."""
    choice("positions", self.positions, POSITIONS)
    return BlockConfig(
        num_heads=self.num_heads, d_ff=self.d_ff or 4 * self.d_model,
        num_kv_heads=self.num_kv_heads, dropout=self.dropout,
        attention_dropout=self.attention_dropout, use_bias=self.use_bias, norm=self.norm,
        activation=self.activation, ln_eps=self.ln_eps, causal=True, cross_attention=True,
        rotary_base=10_000.0 if self.positions == "rotary" else None, attention=self.attention,
        dtype=self.dtype)

  def _tgt_table(self) -> nn.Embed:
    return self.encoder.token_embed if self.share_embeddings else self.tgt_embed

  def _embed_tgt(self, tokens_BT: jax.Array, positions_BT: jax.Array, train: bool) -> jax.Array:
    x_BTD = self._tgt_table()(tokens_BT)
    if self.scale_embeddings:
      x_BTD = x_BTD * math.sqrt(self.d_model)
    x_BTD = add_positions(x_BTD, self.positions, positions_BT, self.max_len,
                          self.tgt_pos_embed if self.positions == "learned" else None)
    return self.drop(x_BTD, deterministic=not train)

  def _logits(self, x_BTD: jax.Array) -> jax.Array:
    if self.norm == "pre":
      x_BTD = self.dec_final_ln(x_BTD)
    return self._tgt_table().attend(x_BTD).astype(jnp.float32)

  def encode(self, src_BS: jax.Array, src_mask_BS: jax.Array, *, train: bool = False
             ) -> jax.Array:
    """The encoder's output (the memory), [B, S, D]."""
    return self.encoder(src_BS, src_mask_BS, train=train)

  def __call__(self, src_BS: jax.Array, src_mask_BS: jax.Array, tgt_in_BT: jax.Array, *,
               train: bool = False) -> jax.Array:
    """Teacher-forced logits [B, T, V] of the target given the source."""
    memory_BSD = self.encode(src_BS, src_mask_BS, train=train)
    t = tgt_in_BT.shape[1]
    check_len(t, self.max_len)
    positions_BT = jnp.arange(t)[None, :]
    ctx = {"positions": positions_BT, "memory": memory_BSD,
           "memory_mask": padding_mask(src_mask_BS)}
    x_BTD, _ = self.decoder(self._embed_tgt(tgt_in_BT, positions_BT, train), ctx, train=train)
    return self._logits(x_BTD)

  def init_cache(self, memory_BSD: jax.Array, src_mask_BS: jax.Array, max_len: int) -> dict:
    """Decoding cache: empty self-attention KV for ``max_len`` target positions, the memory's
    cross-attention keys/values for every layer, and the source mask."""
    check_len(max_len, self.max_len)
    b = memory_BSD.shape[0]
    self_kv = zero_kv_cache(self.decoder_block(), self.d_model, self._num_dec_layers(),
                            self.scan_layers, b, max_len)
    x_B1D = jnp.zeros((b, 1, self.d_model), memory_BSD.dtype)  # unused by "prime"
    _, cross = self.decoder(x_B1D, {"memory": memory_BSD}, mode="prime")
    if self.scan_layers:
      layers = {**self_kv, **cross}
    else:
      layers = tuple({**s, **x} for s, x in zip(self_kv, cross))
    return {"layers": layers, "src_mask": jnp.asarray(src_mask_BS, bool)}

  def decode(self, tokens_BT: jax.Array, cache: dict, position: jax.Array
             ) -> tuple[jax.Array, dict]:
    """Logits of T new target tokens starting at ``position``, and the updated cache."""
    positions_BT = position + jnp.arange(tokens_BT.shape[1])[None, :]
    ctx = {"position": position, "memory_mask": padding_mask(cache["src_mask"])}
    x_BTD, layers = self.decoder(self._embed_tgt(tokens_BT, positions_BT, False), ctx,
                                 cache["layers"], mode="decode")
    return self._logits(x_BTD), {**cache, "layers": layers}

@MODELS.register("transformer", kind="seq2seq", family="transformer")
def build_seq2seq(cfg: ml_collections.ConfigDict, *, src_vocab_size: int, tgt_vocab_size: int,
                  max_len: int, dtype: jnp.dtype | None = None) -> EncoderDecoder:
  """Encoder-decoder: the common fields plus num_decoder_layers, norm (default "post"),
  positions (default "sinusoidal"), activation (default "relu"), share_embeddings."""
  return EncoderDecoder(
      src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, max_len=max_len,
      num_layers=cfg.num_layers, num_heads=cfg.num_heads, d_model=cfg.d_model,
      num_decoder_layers=cfg.get("num_decoder_layers", None), d_ff=cfg.get("d_ff", None),
      dropout=cfg.get("dropout", 0.0), attention_dropout=cfg.get("attention_dropout", None),
      norm=choice("norm", cfg.get("norm", "post"), NORMS),
      positions=choice("positions", cfg.get("positions", "sinusoidal"), POSITIONS),
      activation=choice("activation", cfg.get("activation", "relu"), tuple(ACTIVATIONS)),
      share_embeddings=cfg.get("share_embeddings", False),
      num_kv_heads=cfg.get("num_kv_heads", None), dtype=dtype, **stack_kw(cfg))
