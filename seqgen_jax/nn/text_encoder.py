"""A small bidirectional Transformer text encoder for text-conditioned diffusion (self-contained).

Pre-LN encoder blocks (Vaswani et al. 2017, pre-LN as in GPT-2 / Imagen's T5 use), learned
positions, a padding mask on the keys, a final LayerNorm. It returns per-token embeddings (the
keys/values of the denoiser's cross-attention) and a masked-mean pooled vector (added to the
time embedding, as Imagen does). Token ids follow ``seqgen_jax.caption_ids`` (shared with the
caption tokenizer of ``seqgen_jax.data.captions``): 0 = padding, 1 = BOS, which starts every
caption, so that the empty ("null") caption used for classifier-free guidance is [BOS] alone.

Axis key: B batch, S text positions, P position-table rows (max_len), N heads, H head width,
D width, F MLP width (4 D).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqgen_jax.caption_ids import BOS_ID
from seqgen_jax.nn.attention import dot_product_attention


def null_text(batch_size: int) -> tuple[jax.Array, jax.Array]:
  """The empty caption (one BOS token) for a batch: tokens [B, 1] int32, mask [B, 1] bool."""
  return (jnp.full((batch_size, 1), BOS_ID, jnp.int32), jnp.ones((batch_size, 1), bool))


class _EncoderBlock(nn.Module):
  """x + Attn(LN(x)) with padded keys masked out, then x + MLP(LN(x))."""

  num_heads: int
  dropout: float = 0.0
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x_BSD: jax.Array, mask_BS: jax.Array, *, train: bool) -> jax.Array:
    """The block applied to ``x_BSD``; ``mask_BS`` (True = real token) hides padded keys."""
    d = x_BSD.shape[-1]
    h = d // self.num_heads
    init = nn.initializers.normal(0.02)
    y_BSD = nn.LayerNorm(dtype=self.dtype, name="ln1")(x_BSD)
    qkv_BS3NH = nn.DenseGeneral((3, self.num_heads, h), dtype=self.dtype, kernel_init=init,
                                name="qkv")(y_BSD)
    q_BSNH, k_BSNH, v_BSNH = (qkv_BS3NH[:, :, i] for i in range(3))
    y_BSNH = dot_product_attention(q_BSNH, k_BSNH, v_BSNH, mask=mask_BS[:, None, None, :])
    y_BSD = nn.DenseGeneral(d, axis=(-2, -1), dtype=self.dtype, kernel_init=init, name="out")(
        y_BSNH)
    x_BSD = x_BSD + nn.Dropout(self.dropout, deterministic=not train)(y_BSD)
    y_BSD = nn.LayerNorm(dtype=self.dtype, name="ln2")(x_BSD)
    y_BSF = nn.Dense(4 * d, dtype=self.dtype, kernel_init=init, name="fc")(y_BSD)
    y_BSD = nn.Dense(d, dtype=self.dtype, kernel_init=init, name="proj")(nn.gelu(y_BSF))
    return x_BSD + nn.Dropout(self.dropout, deterministic=not train)(y_BSD)


class TextEncoder(nn.Module):
  """Tokens [B, S] + mask [B, S] (True = real token) -> (tokens_BSD, pooled_BD)."""

  vocab_size: int
  max_len: int = 32
  width: int = 256
  num_layers: int = 4
  num_heads: int = 4
  dropout: float = 0.0
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, tokens_BS: jax.Array, mask_BS: jax.Array, *, train: bool = False
               ) -> tuple[jax.Array, jax.Array]:
    """(per-token embeddings [B, S, D], masked-mean pooled embedding [B, D])."""
    s = tokens_BS.shape[1]
    if s > self.max_len:
      raise ValueError(f"text length {s} exceeds the text encoder's max_len={self.max_len}")
    if self.width % self.num_heads:
      raise ValueError(f"text width {self.width} is not divisible by num_heads={self.num_heads}")
    mask_BS = mask_BS.astype(bool)
    tok_BSD = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                       dtype=self.dtype, name="tok")(tokens_BS)
    pos_PD = self.param("pos", nn.initializers.normal(0.02), (self.max_len, self.width))
    x_BSD = tok_BSD + pos_PD[None, :s].astype(tok_BSD.dtype)
    for i in range(self.num_layers):
      x_BSD = _EncoderBlock(self.num_heads, self.dropout, self.dtype, name=f"block_{i}")(
          x_BSD, mask_BS, train=train)
    x_BSD = nn.LayerNorm(dtype=self.dtype, name="ln_f")(x_BSD)
    w_BS1 = mask_BS[..., None].astype(jnp.float32)
    pooled_BD = (x_BSD.astype(jnp.float32) * w_BS1).sum(1) / jnp.maximum(w_BS1.sum(1), 1.0)
    return x_BSD, pooled_BD.astype(x_BSD.dtype)
