"""DiT: the Diffusion Transformer of Peebles & Xie (2023), with adaLN-Zero blocks.

The input (an image or a latent, [B, H, W, C]) is cut into p x p patches, linearly embedded and
given fixed 2-D sin-cos positions; the conditioning vector c = t_emb (+ class embedding) (+ pooled
text) drives, in every block, an adaptive LayerNorm whose shift / scale / gate come from
Dense(SiLU(c)) initialised to zero (adaLN-Zero): at initialisation every block is the identity
and the final layer outputs zeros. The final layer (adaptive LN + linear, both from zero) is
unpatchified back to [B, H, W, C_out]; ``learn_sigma`` doubles C_out ([eps, variance
interpolation], as the paper). Sizes S/B/L/XL with patch 2/4/8 are in ``DIT_SIZES`` (Table 1).

Conditioning (``cond``, all keys optional):
  "label":  int [B] in [0, num_classes]; id ``num_classes`` is the null class of classifier-free
            guidance (label dropout is the task's job). Missing -> null class.
  "text_tokens", "text_mask": a caption (see ``seqgen_jax.data.captions``), only when
            ``text_vocab_size > 0``: a TextEncoder's pooled output is added to c and every block
            gets a cross-attention layer after its self-attention (as PixArt-alpha), whose
            output projection starts at zero so the identity-at-init property holds. Missing ->
            the null caption [BOS].
Timesteps: ``t_B`` (int or float) is embedded as ``t * time_scale`` (see ``nn.unet``).

LayerNorm epsilons: ``norm_eps`` is used by every LayerNorm unless ``attn_norm_eps`` (each
block's first, pre-attention LayerNorm) or ``final_norm_eps`` (the final layer's) is set.
diffusers' DiTTransformer2DModel fixes those two at 1e-6 and applies its ``norm_eps`` only before
the MLP, which is how ``seqgen_jax.convert`` sets them.

Positions: the 2-D sin-cos table has integer grid positions, so at any input size token (i, j)
gets the embedding of (i, j). With ``pos_base_size = b`` (diffusers' ``sample_size //
patch_size``) the positions are instead rescaled to the range of a b x b grid, row i of h at
i * b / h and column j of w at j * b / w, which is diffusers' interpolation at an input size
other than the one trained on (at h = w = b both rules agree).

Axis key: B batch, H height, W width, C channels, P patch size, h = H/P and w = W/P the patch
grid, L = h*w tokens, D width, M MLP width, N heads, K head width, S text (key) positions, E text
width, F sinusoid frequencies (of the timestep or of a position), O output channels, X = P*P*O
outputs per patch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seqgen_jax.errors import ConfigError
from seqgen_jax.nn.attention import dot_product_attention
from seqgen_jax.nn.embeddings import timestep_embedding
from seqgen_jax.nn.text_encoder import TextEncoder, null_text
from seqgen_jax.registry import MODELS

# Peebles & Xie (2023), Table 1: (layers N, hidden size d, heads); patch sizes p in {2, 4, 8}.
DIT_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
DIT_PATCHES = (2, 4, 8)

xavier = nn.initializers.xavier_uniform()
zeros = nn.initializers.zeros


def dit_size(name: str) -> dict[str, int]:
  """'DiT-XL/2' (or 'XL/2') -> dict(depth, hidden_size, num_heads, patch_size)."""
  m = re.fullmatch(r"(?:DiT-)?(S|B|L|XL)/(\d+)", name)
  if not m or int(m.group(2)) not in DIT_PATCHES:
    sizes = [f"DiT-{s}/{p}" for s in DIT_SIZES for p in DIT_PATCHES]
    raise ConfigError(f"unknown DiT size '{name}'; choose one of: {', '.join(sizes)}")
  depth, hidden, heads = DIT_SIZES[m.group(1)]
  return dict(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=int(m.group(2)))


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int, base_size: int | None = None
                        ) -> np.ndarray:
  """Fixed [grid_h*grid_w, dim] table of MAE / DiT: first half encodes the column index, second
  half the row index, each as [sin, cos] with frequencies 1/10000^(i/(dim/4)).

  ``base_size``: positions rescaled to a base_size x base_size grid (row i at i * base_size /
  grid_h; diffusers' PatchEmbed, whose float32 arithmetic is reproduced); None: integer positions.
  """
  def one_d(d: int, pos_hw: np.ndarray) -> np.ndarray:
    omega_F = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
    angles_LF = pos_hw.reshape(-1)[:, None] * omega_F[None, :]
    return np.concatenate([np.sin(angles_LF), np.cos(angles_LF)], axis=1)

  def grid(n: int) -> np.ndarray:
    if base_size is None:
      return np.arange(n, dtype=np.float64)
    return (np.arange(n, dtype=np.float32) / np.float32(n / base_size)).astype(np.float64)

  rows_hw, cols_hw = np.meshgrid(grid(grid_h), grid(grid_w), indexing="ij")
  return np.concatenate([one_d(dim // 2, cols_hw), one_d(dim // 2, rows_hw)],
                        axis=1).astype(np.float32)


def modulate(x_BLD: jax.Array, shift_BD: jax.Array, scale_BD: jax.Array) -> jax.Array:
  """adaLN's x * (1 + scale) + shift, per example."""
  return x_BLD * (1 + scale_BD[:, None]) + shift_BD[:, None]


class _Attention(nn.Module):
  """Multi-head attention, fused qkv Dense(3D) (timm layout), output Dense(D)."""

  num_heads: int
  out_init: Any = xavier
  dtype: Any = None

  @nn.compact
  def __call__(self, x_BLD: jax.Array, context_BSE: jax.Array | None = None,
               mask_BS: jax.Array | None = None) -> jax.Array:
    """Self-attention over ``x_BLD``, or cross-attention to ``context_BSE`` (keys masked by
    ``mask_BS``, True = real token); [B, L, D]."""
    b, length, d = x_BLD.shape
    n, k = self.num_heads, d // self.num_heads
    if context_BSE is None:  # keys are the L tokens themselves: S = L
      qkv_BL3D = nn.Dense(3 * d, kernel_init=xavier, dtype=self.dtype, name="qkv")(x_BLD)
      q_BLNK, k_BSNK, v_BSNK = jnp.moveaxis(qkv_BL3D.reshape(b, length, 3, n, k), 2, 0)
    else:
      q_BLNK = nn.Dense(d, kernel_init=xavier, dtype=self.dtype, name="q")(x_BLD).reshape(
          b, length, n, k)
      kv_BS2D = nn.Dense(2 * d, kernel_init=xavier, dtype=self.dtype, name="kv")(context_BSE)
      k_BSNK, v_BSNK = jnp.moveaxis(kv_BS2D.reshape(b, context_BSE.shape[1], 2, n, k), 2, 0)
    mask_B11S = None if mask_BS is None else mask_BS[:, None, None, :].astype(bool)
    o_BLNK = dot_product_attention(q_BLNK, k_BSNK, v_BSNK, mask=mask_B11S)
    return nn.Dense(d, kernel_init=self.out_init, dtype=self.dtype, name="proj")(
        o_BLNK.reshape(b, length, d))


class DiTBlock(nn.Module):
  """adaLN-Zero: x + g1 * Attn(mod(LN(x))), [x + XAttn(LN(x), text)], x + g2 * MLP(mod(LN(x)))."""

  num_heads: int
  mlp_ratio: float = 4.0
  norm_eps: float = 1e-6
  cross_attention: bool = False
  dtype: Any = None
  attn_norm_eps: float | None = None  # the pre-attention LayerNorm's; None: norm_eps

  @nn.compact
  def __call__(self, x_BLD: jax.Array, c_BD: jax.Array,
               context: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """The block applied to ``x_BLD`` under conditioning ``c_BD``; ``context``: (text_BSE,
    mask_BS) for the cross-attention."""
    d = x_BLD.shape[-1]
    ln = lambda eps: nn.LayerNorm(eps, use_scale=False, use_bias=False, dtype=self.dtype)
    attn_eps = self.norm_eps if self.attn_norm_eps is None else self.attn_norm_eps
    mod_B6D = nn.Dense(6 * d, kernel_init=zeros, dtype=self.dtype, name="adaLN_modulation")(
        nn.silu(c_BD))
    shift1_BD, scale1_BD, gate1_BD, shift2_BD, scale2_BD, gate2_BD = jnp.split(mod_B6D, 6, axis=-1)
    h_BLD = _Attention(self.num_heads, dtype=self.dtype, name="attn")(
        modulate(ln(attn_eps)(x_BLD), shift1_BD, scale1_BD))
    x_BLD = x_BLD + gate1_BD[:, None] * h_BLD
    if self.cross_attention:
      h_BLD = nn.LayerNorm(self.norm_eps, dtype=self.dtype, name="norm_xattn")(x_BLD)
      x_BLD = x_BLD + _Attention(self.num_heads, out_init=zeros, dtype=self.dtype,
                                 name="xattn")(h_BLD, *context)
    h_BLD = modulate(ln(self.norm_eps)(x_BLD), shift2_BD, scale2_BD)
    h_BLM = nn.Dense(int(d * self.mlp_ratio), kernel_init=xavier, dtype=self.dtype, name="fc1")(
        h_BLD)
    h_BLD = nn.Dense(d, kernel_init=xavier, dtype=self.dtype, name="fc2")(
        nn.gelu(h_BLM, approximate=True))
    return x_BLD + gate2_BD[:, None] * h_BLD


class DiT(nn.Module):
  """Diffusion Transformer: (x_BHWC, t_B, cond) -> [B, H, W, out_channels] float32."""

  out_channels: int
  patch_size: int = 2
  hidden_size: int = 1152
  depth: int = 28
  num_heads: int = 16
  mlp_ratio: float = 4.0
  num_classes: int = 0
  norm_eps: float = 1e-6
  freq_dim: int = 256
  flip_sin_to_cos: bool = True
  freq_shift: float = 0.0
  time_scale: float = 1.0
  text_vocab_size: int = 0
  text_max_len: int = 32
  text_width: int = 256
  text_layers: int = 4
  text_heads: int = 4
  dtype: Any = None
  attn_norm_eps: float | None = None
  final_norm_eps: float | None = None
  pos_base_size: int | None = None

  def embed_conditioning(self, t_B: jax.Array, cond: dict, batch: int
                         ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """c [B, D] (time + label + pooled text) and the cross-attention context (or None)."""
    allowed = ("label", "text_tokens", "text_mask")
    unknown = sorted(set(cond) - set(allowed))
    if unknown:
      raise ValueError(f"unknown cond keys {unknown}; allowed: {', '.join(allowed)}")
    d = self.hidden_size
    dense = lambda name: nn.Dense(d, kernel_init=nn.initializers.normal(0.02), dtype=self.dtype,
                                  name=name)
    t_BF = timestep_embedding(jnp.broadcast_to(jnp.asarray(t_B), (batch,)) * self.time_scale,
                              self.freq_dim, flip_sin_to_cos=self.flip_sin_to_cos,
                              downscale_freq_shift=self.freq_shift)
    c_BD = dense("t_mlp_1")(nn.silu(dense("t_mlp_0")(t_BF)))
    if self.num_classes > 0:
      label_B = cond.get("label")
      if label_B is None:
        label_B = jnp.full((batch,), self.num_classes, jnp.int32)
      c_BD = c_BD + nn.Embed(self.num_classes + 1, d, embedding_init=nn.initializers.normal(0.02),
                             dtype=self.dtype, name="y_embedder")(label_B)
    context = None
    if self.text_vocab_size > 0:
      if "text_tokens" in cond:
        tokens_BS = cond["text_tokens"]
        mask_BS = cond.get("text_mask", jnp.ones(tokens_BS.shape, bool))
      else:
        tokens_BS, mask_BS = null_text(batch)
      text_BSE, pooled_BE = TextEncoder(self.text_vocab_size, self.text_max_len, self.text_width,
                                        self.text_layers, self.text_heads, dtype=self.dtype,
                                        name="text_encoder")(tokens_BS, mask_BS)
      c_BD = c_BD + nn.Dense(d, kernel_init=xavier, dtype=self.dtype, name="text_pool_proj")(
          pooled_BE)
      context = (text_BSE, mask_BS)
    return c_BD, context

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, t_B: jax.Array, *, cond: dict | None = None,
               train: bool = False) -> jax.Array:
    """The prediction [B, H, W, O] (float32) for the noisy input ``x_BHWC`` at times ``t_B``."""
    del train  # DiT uses no dropout
    b, hh, ww, c = x_BHWC.shape
    p, d = self.patch_size, self.hidden_size
    if hh % p or ww % p:
      raise ValueError(f"input {hh}x{ww} is not divisible by the patch size {p}")
    gh, gw = hh // p, ww // p
    x_BHWC = x_BHWC.astype(self.dtype or x_BHWC.dtype)
    # Patchify = a p x p stride-p conv, written as a Dense over flattened (p, p, C) patches so the
    # Xavier fan-in/out match the paper's code (which flattens the conv kernel).
    patches_BhwPPC = x_BHWC.reshape(b, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5)
    x_BLD = nn.Dense(d, kernel_init=xavier, dtype=self.dtype, name="x_embedder")(
        patches_BhwPPC.reshape(b, gh * gw, p * p * c))
    x_BLD = x_BLD + jnp.asarray(sincos_pos_embed_2d(d, gh, gw, self.pos_base_size),
                                x_BLD.dtype)[None]
    c_BD, context = self.embed_conditioning(t_B, dict(cond or {}), b)
    for i in range(self.depth):
      x_BLD = DiTBlock(self.num_heads, self.mlp_ratio, self.norm_eps, context is not None,
                       self.dtype, self.attn_norm_eps, name=f"block_{i}")(x_BLD, c_BD, context)
    shift_BD, scale_BD = jnp.split(
        nn.Dense(2 * d, kernel_init=zeros, dtype=self.dtype, name="final_adaLN_modulation")(
            nn.silu(c_BD)), 2, axis=-1)
    final_eps = self.norm_eps if self.final_norm_eps is None else self.final_norm_eps
    h_BLD = nn.LayerNorm(final_eps, use_scale=False, use_bias=False, dtype=self.dtype)(x_BLD)
    y_BLX = nn.Dense(p * p * self.out_channels, kernel_init=zeros, dtype=self.dtype,
                     name="final_linear")(modulate(h_BLD, shift_BD, scale_BD))
    y_BhPwPO = y_BLX.reshape(b, gh, gw, p, p, self.out_channels).transpose(0, 1, 3, 2, 4, 5)
    return y_BhPwPO.reshape(b, hh, ww, self.out_channels).astype(jnp.float32)


_DIT_FIELDS = ("patch_size", "hidden_size", "depth", "num_heads", "mlp_ratio", "norm_eps",
               "freq_dim", "flip_sin_to_cos", "freq_shift", "time_scale", "text_vocab_size",
               "text_max_len", "text_width", "text_layers", "text_heads", "attn_norm_eps",
               "final_norm_eps", "pos_base_size")


@MODELS.register("dit", kind="denoiser", family="diffusion")
def build_dit(cfg: ml_collections.ConfigDict, *, image_shape: Sequence[int], num_classes: int = 0,
              dtype: Any = None) -> DiT:
  """DiT from ``config.model``: ``size`` ('DiT-B/2', ...) and/or explicit fields (which win),
  plus ``learn_sigma`` (2x output channels)."""
  kwargs = dit_size(cfg.size) if cfg.get("size") else {}
  kwargs.update({k: cfg[k] for k in _DIT_FIELDS if k in cfg})
  if "hidden_size" not in kwargs:
    raise ConfigError("dit: set model.size (e.g. 'DiT-B/2') or model.hidden_size/depth/num_heads")
  if kwargs["hidden_size"] % kwargs.get("num_heads", 16):
    raise ConfigError(f"dit: hidden_size {kwargs['hidden_size']} is not divisible by "
                      f"num_heads={kwargs.get('num_heads', 16)}")
  h, w, c = image_shape
  p = kwargs.get("patch_size", 2)
  if h % p or w % p:
    raise ConfigError(f"dit: image {h}x{w} is not divisible by patch_size={p}")
  out = c * (2 if cfg.get("learn_sigma", False) else 1)
  return DiT(out_channels=out, num_classes=num_classes, dtype=dtype, **kwargs)
