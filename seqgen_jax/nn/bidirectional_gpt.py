"""GPT's blocks without the causal mask: the denoiser backbone of a masked diffusion LM.

MDLM (Sahoo et al. 2024) predicts every masked token from the whole partially masked sequence,
so its network is a bidirectional Transformer. ``BidirectionalGPT`` is ``GPT`` (same embeddings,
pre-LN blocks, initialisation and tied output layer, so the same parameter count for the same
vocabulary) with ``causal=False``; it follows the ``masked_lm`` contract of
seqgen_jax/registry.py. Like MDLM's absorbing-state model it takes no time input: the number of
mask tokens already tells the network how noisy the input is.

Axis key: B batch, T positions, V vocabulary.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from seqgen_jax.nn.attention import padding_mask
from seqgen_jax.nn.gpt import GPT, build_gpt
from seqgen_jax.nn.transformer import BlockConfig, check_len
from seqgen_jax.registry import MODELS


class BidirectionalGPT(GPT):
  """GPT with full (non-causal) self-attention; no KV cache (every position sees every other)."""

  def block_config(self) -> BlockConfig:
    """GPT's block without the causal mask."""
    return dataclasses.replace(super().block_config(), causal=False)

  def __call__(self, tokens_BT: jax.Array, mask_BT: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """Float32 logits [B, T, V]; ``mask_BT`` (True = real token) hides padding keys."""
    t = tokens_BT.shape[1]
    check_len(t, self.max_len)
    positions_BT = jnp.arange(t)[None, :]
    x_BTD = self._embed(tokens_BT, positions_BT, train)
    ctx = {"positions": positions_BT,
           "mask": None if mask_BT is None else padding_mask(mask_BT)}
    x_BTD, _ = self.decoder(x_BTD, ctx, train=train)
    return self._logits(x_BTD)

  def init_cache(self, batch_size: int, max_len: int) -> dict:
    """Not available: raises NotImplementedError."""
    raise NotImplementedError("a bidirectional model has no incremental (KV-cache) decoding")

  def decode(self, tokens_BT: jax.Array, cache: dict, position: jax.Array
             ) -> tuple[jax.Array, dict]:
    """Not available: raises NotImplementedError."""
    raise NotImplementedError("a bidirectional model has no incremental (KV-cache) decoding")


@MODELS.register("gpt_bidir", kind="masked_lm", family="transformer")
def build_bidirectional_gpt(cfg: ml_collections.ConfigDict, *, vocab_size: int, max_len: int,
                            dtype: jnp.dtype | None = None) -> BidirectionalGPT:
  """``BidirectionalGPT`` from the same ``config.model`` fields as ``gpt``."""
  gpt = build_gpt(cfg, vocab_size=vocab_size, max_len=max_len, dtype=dtype)
  fields = {f.name: getattr(gpt, f.name) for f in dataclasses.fields(GPT)
            if f.init and f.name not in ("parent", "name")}
  return BidirectionalGPT(**fields)
