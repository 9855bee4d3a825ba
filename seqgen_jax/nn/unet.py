"""DDPM-style U-Net (Ho et al. 2020); optional class, low-resolution-image and text conditioning.

The layout is Ho et al.'s ``diffusion_tf/models/unet.py``: a sinusoidal time embedding through a
two-layer MLP (width 4*ch); per resolution level ``num_res_blocks`` residual blocks (GroupNorm,
SiLU, 3x3 conv, time embedding added after the first conv, dropout before the second conv) with
self-attention after each block whose resolution is in ``attn_resolutions`` (or whose level
is in ``attn_levels``, diffusers' convention, which holds at any input size); a strided-conv
downsample between levels; a middle block (res, attention, res); an upsampling path with
``num_res_blocks + 1`` blocks per level, each fed the channel concat of the running tensor and one
skip tensor; nearest-neighbour x2 upsample + conv; GroupNorm, SiLU, 3x3 conv out. Layers that
feed a residual sum (second conv of a block, attention output, final conv) start at zero.

diffusers' ``UNet2DModel`` in the ``google/ddpm-cifar10-32`` layout is this same network (same
blocks, same skips, attention in the same places, same time-embedding MLP, the same asymmetric
(0, 1) padding of the strided conv via ``downsample_padding=0``); ``seqgen_jax.convert.
diffusers_unet`` maps its weights one to one. Switches cover diffusers' other common settings:
``downsample_padding=1`` (symmetric padding), ``attn_head_dim`` (multi-head attention; None =
one head over all channels, as Ho et al.), ``scale_shift_norm`` (Dhariwal & Nichol's adaptive
GroupNorm), ``flip_sin_to_cos`` / ``freq_shift`` (timestep-embedding conventions).

Conditioning (``cond``, a dict; every key optional unless the model was built for it):
  "label":       int [B], class ids in [0, num_classes]; id ``num_classes`` is the null class
                 (classifier-free guidance; label dropout is the task's job). Missing -> null.
                 Its embedding is added to the time embedding.
  "low_res":     [B, h, w, low_res_channels], the low-resolution image of a super-resolution
                 stage; resized to the input's H x W (``low_res_resize``) and concatenated to x
                 on the channel axis. Required when ``low_res_channels > 0``.
  "low_res_t":   [B], noise level of the conditioning augmentation applied to "low_res"
                 (Ho et al. 2022, cascaded diffusion); only with ``low_res_noise_cond``, then
                 required. Embedded like t and added to the time embedding.
  "text_tokens", "text_mask": int [B, S] and bool [B, S] (True = real token), a caption encoded
                 by ``seqgen_jax.data.captions``; run through the model's own TextEncoder, then
                 cross-attention at every self-attention site and the pooled text embedding added
                 to the time embedding (Imagen). Missing -> the null caption [BOS].

Timesteps: ``t_B`` (int or float, or a scalar broadcast over the batch) is embedded as
``t * time_scale``. DDPM models take the integer step 0..T-1 (time_scale 1); continuous-time
models with t in [0, 1] should use time_scale ~1000 (score_sde uses 999), so that the embedding's
frequencies cover the same range.

Axis key: B batch, H height, W width, C channels (inside a block: that block's resolution and
input width), O output channels (a block's out_ch, the model's out_channels), E time-embedding
width (4*ch), F sinusoidal timestep width (ch), L = H*W pixels, N heads, K head width, S text
(key) positions, D text width; h, w, R: the low-resolution image's height, width and channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from seqgen_jax.errors import ConfigError
from seqgen_jax.nn.attention import dot_product_attention
from seqgen_jax.nn.embeddings import timestep_embedding
from seqgen_jax.nn.text_encoder import TextEncoder, null_text
from seqgen_jax.registry import MODELS

# Ho et al.'s initialiser (TF variance scaling, fan_avg, uniform); "zero" where they use 1e-10.
default_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
zero_init = nn.initializers.zeros


def group_norm(groups: int, eps: float, dtype: Any, name: str) -> nn.GroupNorm:
  """A GroupNorm layer with the two-pass variance."""
  # Two-pass variance: the E[x^2]-E[x]^2 shortcut loses digits against PyTorch's GroupNorm.
  return nn.GroupNorm(num_groups=groups, epsilon=eps, dtype=dtype, use_fast_variance=False,
                      name=name)


def conv2d(features: int, kernel: int, name: str, *,
           init: nn.initializers.Initializer = default_init, dtype: Any = None,
           strides: int = 1, padding: Any = "SAME") -> nn.Conv:
  """A square ``kernel`` x ``kernel`` convolution with Ho et al.'s initialiser by default."""
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides), padding=padding,
                 kernel_init=init, dtype=dtype, name=name)


class ResBlock(nn.Module):
  """GN-SiLU-conv, + Dense(SiLU(temb)), GN-SiLU-dropout-conv(zero init), + (1x1 conv) shortcut.

  With ``scale_shift_norm`` the time embedding instead modulates the second GroupNorm,
  h = GN(h) * (1 + scale) + shift (Dhariwal & Nichol 2021). ``temb`` may be None (autoencoder).
  """

  out_ch: int
  dropout: float = 0.0
  scale_shift_norm: bool = False
  norm_groups: int = 32
  norm_eps: float = 1e-6
  dtype: Any = None

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, temb_BE: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """The block applied to ``x_BHWC`` under the time embedding ``temb_BE``: [B, H, W, out_ch]."""
    gn = partial(group_norm, self.norm_groups, self.norm_eps, self.dtype)
    h_BHWC = nn.silu(gn("norm1")(x_BHWC))
    h_BHWO = conv2d(self.out_ch, 3, "conv1", dtype=self.dtype)(h_BHWC)
    if temb_BE is not None:
      width = 2 * self.out_ch if self.scale_shift_norm else self.out_ch
      e_B11X = nn.Dense(width, kernel_init=default_init, dtype=self.dtype, name="temb_proj")(
          nn.silu(temb_BE))[:, None, None, :]  # X = O, or 2 O for (scale, shift)
      if self.scale_shift_norm:
        scale_B11O, shift_B11O = jnp.split(e_B11X, 2, axis=-1)
        h_BHWO = gn("norm2")(h_BHWO) * (1 + scale_B11O) + shift_B11O
      else:
        h_BHWO = gn("norm2")(h_BHWO + e_B11X)
    else:
      h_BHWO = gn("norm2")(h_BHWO)
    h_BHWO = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(h_BHWO))
    h_BHWO = conv2d(self.out_ch, 3, "conv2", init=zero_init, dtype=self.dtype)(h_BHWO)
    if x_BHWC.shape[-1] != self.out_ch:
      x_BHWC = conv2d(self.out_ch, 1, "nin_shortcut", dtype=self.dtype)(x_BHWC)
    return x_BHWC + h_BHWO


class AttnBlock(nn.Module):
  """x + proj_out(attention(q(GN(x)), k(src), v(src))) over the H*W pixels.

  ``src`` is GN(x) (self-attention) or a context sequence such as text-token embeddings
  (cross-attention, with ``context_mask_BS`` True on real tokens). proj_out starts at zero.
  """

  head_dim: int | None = None
  norm_groups: int = 32
  norm_eps: float = 1e-6
  dtype: Any = None

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, context_BSD: jax.Array | None = None,
               context_mask_BS: jax.Array | None = None) -> jax.Array:
    """``x_BHWC`` plus attention over its pixels (or over ``context_BSD``): [B, H, W, C]."""
    b, hh, ww, c = x_BHWC.shape
    n = 1 if self.head_dim is None else c // self.head_dim
    if c % n:
      raise ValueError(f"attention over {c} channels cannot use head_dim={self.head_dim}")
    dense = partial(nn.Dense, c, kernel_init=default_init, dtype=self.dtype)
    h_BLC = group_norm(self.norm_groups, self.norm_eps, self.dtype, "norm")(x_BHWC)
    h_BLC = h_BLC.reshape(b, hh * ww, c)
    src_BSD = h_BLC if context_BSD is None else context_BSD  # self-attention: S = L, D = C
    q_BLNK = dense(name="q")(h_BLC).reshape(b, hh * ww, n, c // n)
    k_BSNK = dense(name="k")(src_BSD).reshape(b, src_BSD.shape[1], n, c // n)
    v_BSNK = dense(name="v")(src_BSD).reshape(b, src_BSD.shape[1], n, c // n)
    mask_B11S = (None if context_mask_BS is None
                 else context_mask_BS[:, None, None, :].astype(bool))
    o_BLNK = dot_product_attention(q_BLNK, k_BSNK, v_BSNK, mask=mask_B11S)
    o_BLC = nn.Dense(c, kernel_init=zero_init, dtype=self.dtype, name="proj_out")(
        o_BLNK.reshape(b, hh * ww, c))
    return x_BHWC + o_BLC.reshape(x_BHWC.shape)


class Downsample(nn.Module):
  """Halves H and W: 3x3 stride-2 conv (padding (0, 1) as TF 'SAME', or (1, 1)), or avg pool."""

  with_conv: bool = True
  padding: int = 0
  dtype: Any = None

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    """[B, H/2, W/2, C]."""
    if not self.with_conv:
      return nn.avg_pool(x_BHWC, (2, 2), strides=(2, 2))
    pad = ((0, 1), (0, 1)) if self.padding == 0 else ((self.padding, self.padding),) * 2
    return conv2d(x_BHWC.shape[-1], 3, "conv", strides=2, padding=pad, dtype=self.dtype)(x_BHWC)


class Upsample(nn.Module):
  """Doubles H and W: nearest-neighbour repeat, then (optionally) a 3x3 conv."""

  with_conv: bool = True
  dtype: Any = None

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    """[B, 2H, 2W, C]."""
    x_BHWC = jnp.repeat(jnp.repeat(x_BHWC, 2, axis=1), 2, axis=2)
    if self.with_conv:
      x_BHWC = conv2d(x_BHWC.shape[-1], 3, "conv", dtype=self.dtype)(x_BHWC)
    return x_BHWC


COND_KEYS = ("label", "low_res", "low_res_t", "text_tokens", "text_mask")


class UNet(nn.Module):
  """The U-Net denoiser: (x_BHWC, t_B, cond) -> [B, H, W, out_channels] float32."""

  out_channels: int
  ch: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  attn_levels: Sequence[int] | None = None  # if set: attention by level index, any input size
  dropout: float = 0.1
  attn_head_dim: int | None = None
  resamp_with_conv: bool = True
  downsample_padding: int = 0
  norm_groups: int = 32
  norm_eps: float = 1e-6
  scale_shift_norm: bool = False
  flip_sin_to_cos: bool = False
  freq_shift: float = 1.0
  time_scale: float = 1.0
  num_classes: int = 0
  low_res_channels: int = 0
  low_res_resize: str = "bicubic"
  low_res_noise_cond: bool = False
  text_vocab_size: int = 0
  text_max_len: int = 32
  text_width: int = 256
  text_layers: int = 4
  text_heads: int = 4
  dtype: Any = None

  def _time_mlp(self, t_B: jax.Array, prefix: str) -> jax.Array:
    emb_BF = timestep_embedding(t_B * self.time_scale, self.ch,
                                flip_sin_to_cos=self.flip_sin_to_cos,
                                downscale_freq_shift=self.freq_shift)
    dense = partial(nn.Dense, 4 * self.ch, kernel_init=default_init, dtype=self.dtype)
    return dense(name=f"{prefix}_dense1")(nn.silu(dense(name=f"{prefix}_dense0")(emb_BF)))

  def _conditioning(self, x_BHWC: jax.Array, temb_BE: jax.Array, cond: dict, train: bool
                    ) -> tuple[jax.Array, jax.Array, tuple[jax.Array, jax.Array] | None]:
    """Adds label / low-res-level / pooled-text embeddings to temb; returns (x, temb, context)."""
    unknown = sorted(set(cond) - set(COND_KEYS))
    if unknown:
      raise ValueError(f"unknown cond keys {unknown}; allowed: {', '.join(COND_KEYS)}")
    b = x_BHWC.shape[0]
    if self.num_classes > 0:
      label_B = cond.get("label")
      if label_B is None:
        label_B = jnp.full((b,), self.num_classes, jnp.int32)
      # N(0, 1) table as in Dhariwal & Nichol's label_emb; row num_classes is the null class.
      temb_BE = temb_BE + nn.Embed(self.num_classes + 1, 4 * self.ch, dtype=self.dtype,
                                   embedding_init=nn.initializers.normal(1.0),
                                   name="label_emb")(label_B)
    if self.low_res_channels > 0:
      lr_BhwR = cond.get("low_res")
      if lr_BhwR is None or lr_BhwR.shape[-1] != self.low_res_channels:
        raise ValueError(f"this U-Net needs cond['low_res'] with {self.low_res_channels} "
                         f"channels, got {None if lr_BhwR is None else lr_BhwR.shape}")
      lr_BHWR = lr_BhwR
      if lr_BhwR.shape[1:3] != x_BHWC.shape[1:3]:
        lr_BHWR = jax.image.resize(lr_BhwR.astype(jnp.float32),
                                   (b, *x_BHWC.shape[1:3], lr_BhwR.shape[-1]),
                                   method=self.low_res_resize)
      x_BHWC = jnp.concatenate([x_BHWC, lr_BHWR.astype(x_BHWC.dtype)], axis=-1)
      if self.low_res_noise_cond:
        if "low_res_t" not in cond:
          raise ValueError("this U-Net needs cond['low_res_t'] (the augmentation noise level)")
        temb_BE = temb_BE + self._time_mlp(jnp.broadcast_to(cond["low_res_t"], (b,)), "low_res_t")
    context = None
    if self.text_vocab_size > 0:
      if "text_tokens" in cond:
        tokens_BS = cond["text_tokens"]
        mask_BS = cond.get("text_mask", jnp.ones(tokens_BS.shape, bool))
      else:
        tokens_BS, mask_BS = null_text(b)
      enc = TextEncoder(self.text_vocab_size, self.text_max_len, self.text_width,
                        self.text_layers, self.text_heads, self.dropout, self.dtype,
                        name="text_encoder")
      text_BSD, pooled_BD = enc(tokens_BS, mask_BS, train=train)
      temb_BE = temb_BE + nn.Dense(4 * self.ch, kernel_init=default_init, dtype=self.dtype,
                                   name="text_pool_proj")(pooled_BD)
      context = (text_BSD, mask_BS)
    return x_BHWC, temb_BE, context

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, t_B: jax.Array, *, cond: dict | None = None,
               train: bool = False) -> jax.Array:
    """The prediction [B, H, W, out_channels] (float32) for ``x_BHWC`` at times ``t_B``."""
    b, height = x_BHWC.shape[0], x_BHWC.shape[1]
    x_BHWC = x_BHWC.astype(self.dtype or x_BHWC.dtype)
    temb_BE = self._time_mlp(jnp.broadcast_to(jnp.asarray(t_B), (b,)), "temb")
    x_BHWC, temb_BE, context = self._conditioning(x_BHWC, temb_BE, dict(cond or {}), train)

    res = partial(ResBlock, dropout=self.dropout, scale_shift_norm=self.scale_shift_norm,
                  norm_groups=self.norm_groups, norm_eps=self.norm_eps, dtype=self.dtype)
    attn = partial(AttnBlock, self.attn_head_dim, self.norm_groups, self.norm_eps, self.dtype)

    def attend(h_BHWC, name):
      h_BHWC = attn(name=name)(h_BHWC)
      if context is not None:
        h_BHWC = attn(name=f"{name}_xattn")(h_BHWC, *context)
      return h_BHWC

    # In the level loops h_BHWC is at the current level's resolution and width.
    levels = len(self.ch_mult)
    if self.attn_levels is not None:
      has_attn = lambda level, h_BHWC: level in self.attn_levels
    else:
      has_attn = lambda level, h_BHWC: h_BHWC.shape[1] in self.attn_resolutions
    skips = [conv2d(self.ch, 3, "conv_in", dtype=self.dtype)(x_BHWC)]
    for i in range(levels):
      for j in range(self.num_res_blocks):
        h_BHWC = res(self.ch * self.ch_mult[i], name=f"down_{i}_block_{j}")(skips[-1], temb_BE,
                                                                             train=train)
        if has_attn(i, h_BHWC):
          h_BHWC = attend(h_BHWC, f"down_{i}_attn_{j}")
        skips.append(h_BHWC)
      if i != levels - 1:
        skips.append(Downsample(self.resamp_with_conv, self.downsample_padding, self.dtype,
                                name=f"down_{i}_downsample")(skips[-1]))
    h_BHWC = skips[-1]
    h_BHWC = res(h_BHWC.shape[-1], name="mid_block_1")(h_BHWC, temb_BE, train=train)
    h_BHWC = attend(h_BHWC, "mid_attn")
    h_BHWC = res(h_BHWC.shape[-1], name="mid_block_2")(h_BHWC, temb_BE, train=train)
    for i in reversed(range(levels)):
      for j in range(self.num_res_blocks + 1):
        h_BHWC = res(self.ch * self.ch_mult[i], name=f"up_{i}_block_{j}")(
            jnp.concatenate([h_BHWC, skips.pop()], axis=-1), temb_BE, train=train)
        if has_attn(i, h_BHWC):
          h_BHWC = attend(h_BHWC, f"up_{i}_attn_{j}")
      if i != 0:
        h_BHWC = Upsample(self.resamp_with_conv, self.dtype, name=f"up_{i}_upsample")(h_BHWC)
    assert not skips and h_BHWC.shape[1] == height
    h_BHWC = nn.silu(group_norm(self.norm_groups, self.norm_eps, self.dtype, "norm_out")(h_BHWC))
    y_BHWO = conv2d(self.out_channels, 3, "conv_out", init=zero_init, dtype=self.dtype)(h_BHWC)
    return y_BHWO.astype(jnp.float32)


def ho_cifar10_config() -> ml_collections.ConfigDict:
  """Ho et al. (2020)'s CIFAR-10 model (35.7M parameters): ch 128, mult (1,2,2,2), attn at 16."""
  return ml_collections.ConfigDict(dict(
      name="unet", ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
      dropout=0.1))


_UNET_FIELDS = ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "attn_levels", "dropout",
                "attn_head_dim",
                "resamp_with_conv", "downsample_padding", "norm_groups", "norm_eps",
                "scale_shift_norm", "flip_sin_to_cos", "freq_shift", "time_scale",
                "low_res_channels", "low_res_resize", "low_res_noise_cond", "text_vocab_size",
                "text_max_len", "text_width", "text_layers", "text_heads")


@MODELS.register("unet", kind="denoiser", family="diffusion")
def build_unet(cfg: ml_collections.ConfigDict, *, image_shape: Sequence[int], num_classes: int = 0,
               dtype: Any = None) -> UNet:
  """U-Net from ``config.model`` (fields as ``UNet``; missing ones take Ho et al.'s CIFAR-10
  values) plus ``learn_sigma`` (2x output channels: [eps, variance interpolation])."""
  h, w, c = image_shape
  kwargs = {k: cfg[k] for k in _UNET_FIELDS if k in cfg}
  for k in ("ch_mult", "attn_resolutions", "attn_levels"):
    if kwargs.get(k) is not None:
      kwargs[k] = tuple(kwargs[k])
  ch = kwargs.get("ch", 128)
  groups = kwargs.get("norm_groups", 32)
  mult = kwargs.get("ch_mult", (1, 2, 2, 2))
  if any((ch * m) % groups for m in mult):
    raise ConfigError(f"unet: every level's width ch*mult ({[ch * m for m in mult]}) must be "
                      f"divisible by norm_groups={groups}")
  if h % 2 ** (len(mult) - 1) or w % 2 ** (len(mult) - 1):
    raise ConfigError(f"unet: image {h}x{w} is not divisible by 2^{len(mult) - 1} "
                      f"(ch_mult has {len(mult)} levels)")
  out = c * (2 if cfg.get("learn_sigma", False) else 1)
  return UNet(out_channels=out, num_classes=num_classes, dtype=dtype, **kwargs)
