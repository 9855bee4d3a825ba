"""A small KL-regularised convolutional autoencoder for latent diffusion (Rombach et al. 2022).

Encoder: conv, per level ``num_res_blocks`` residual blocks (and self-attention at
``attn_resolutions``), a strided-conv downsample between levels, a middle res-attn-res block,
GroupNorm-SiLU-conv to the 2*z_channels moments of a diagonal Gaussian (1x1 ``quant_conv``).
Decoder: the mirror image (1x1 ``post_quant_conv``, middle block, ``num_res_blocks + 1`` blocks
per level, nearest-neighbour upsampling). An H x W x C image maps to an H/f x W/f x z_channels
latent with f = 2^(len(ch_mult) - 1). Blocks are the U-Net's (``nn.unet``) without a time input.

Simplification, stated: LDM trains this with L1 + LPIPS perceptual loss + a patch GAN; LPIPS
weights cannot be downloaded here, so the loss pieces exposed are the reconstruction term
(L1 or L2) and the KL term, combined as LDM does (sums over pixels / latent dims, mean over the
batch, KL weight 1e-6 by default). Diffusion then runs on z * scale_factor, where
``latent_scale_factor`` is LDM's 1 / std of the encoded training latents (0.18215 for SD's VAE).

Axis key: B batch, H height, W width, C image channels, h = H/f, w = W/f, Z latent channels;
inside the encoder / decoder stacks, r x r is the current resolution and E its feature width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqgen_jax.nn.unet import AttnBlock, Downsample, ResBlock, Upsample, conv2d, group_norm

LOGVAR_RANGE = (-30.0, 20.0)  # LDM's clamp of the posterior log-variance


class _Stack(nn.Module):
  """Shared fields of encoder and decoder."""

  ch: int = 64
  ch_mult: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 1
  attn_resolutions: Sequence[int] = ()
  norm_groups: int = 32
  dtype: Any = None

  def _res(self, out_ch: int, name: str) -> ResBlock:
    return ResBlock(out_ch, norm_groups=self.norm_groups, dtype=self.dtype, name=name)

  def _attn(self, name: str) -> AttnBlock:
    return AttnBlock(None, self.norm_groups, dtype=self.dtype, name=name)

  def _mid(self, h_BrrE: jax.Array) -> jax.Array:
    h_BrrE = self._res(h_BrrE.shape[-1], "mid_block_1")(h_BrrE)
    h_BrrE = self._attn("mid_attn")(h_BrrE)
    return self._res(h_BrrE.shape[-1], "mid_block_2")(h_BrrE)


class Encoder(_Stack):
  """[B, H, W, C] -> moments [B, h, w, 2Z] (mean, log-variance)."""

  z_channels: int = 4

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    """Moments [B, h, w, 2Z] of the image ``x_BHWC``."""
    h_BrrE = conv2d(self.ch, 3, "conv_in", dtype=self.dtype)(
        x_BHWC.astype(self.dtype or jnp.float32))
    for i, mult in enumerate(self.ch_mult):
      for j in range(self.num_res_blocks):
        h_BrrE = self._res(self.ch * mult, f"down_{i}_block_{j}")(h_BrrE)
        if h_BrrE.shape[1] in self.attn_resolutions:
          h_BrrE = self._attn(f"down_{i}_attn_{j}")(h_BrrE)
      if i != len(self.ch_mult) - 1:
        h_BrrE = Downsample(True, 0, self.dtype, name=f"down_{i}_downsample")(h_BrrE)
    h_BhwE = self._mid(h_BrrE)
    h_BhwE = nn.silu(group_norm(self.norm_groups, 1e-6, self.dtype, "norm_out")(h_BhwE))
    moments_BhwZ2 = conv2d(2 * self.z_channels, 3, "conv_out", dtype=self.dtype)(h_BhwE)
    return conv2d(2 * self.z_channels, 1, "quant_conv", dtype=self.dtype)(moments_BhwZ2)


class Decoder(_Stack):
  """Latent [B, h, w, Z] -> image [B, H, W, out_channels]."""

  out_channels: int = 3

  @nn.compact
  def __call__(self, z_BhwZ: jax.Array) -> jax.Array:
    """Float32 image [B, H, W, out_channels] decoded from the latent ``z_BhwZ``."""
    z_BhwZ = z_BhwZ.astype(self.dtype or jnp.float32)
    z_BhwZ = conv2d(z_BhwZ.shape[-1], 1, "post_quant_conv", dtype=self.dtype)(z_BhwZ)
    h_BrrE = conv2d(self.ch * self.ch_mult[-1], 3, "conv_in", dtype=self.dtype)(z_BhwZ)
    h_BrrE = self._mid(h_BrrE)
    for i in reversed(range(len(self.ch_mult))):
      for j in range(self.num_res_blocks + 1):
        h_BrrE = self._res(self.ch * self.ch_mult[i], f"up_{i}_block_{j}")(h_BrrE)
        if h_BrrE.shape[1] in self.attn_resolutions:
          h_BrrE = self._attn(f"up_{i}_attn_{j}")(h_BrrE)
      if i != 0:
        h_BrrE = Upsample(True, self.dtype, name=f"up_{i}_upsample")(h_BrrE)
    h_BHWE = nn.silu(group_norm(self.norm_groups, 1e-6, self.dtype, "norm_out")(h_BrrE))
    return conv2d(self.out_channels, 3, "conv_out", dtype=self.dtype)(h_BHWE).astype(
        jnp.float32)


class AutoencoderKL(nn.Module):
  """encode: image -> (mean, logvar) of q(z|x); decode: z -> image; __call__: both."""

  in_channels: int = 3
  ch: int = 64
  ch_mult: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 1
  attn_resolutions: Sequence[int] = ()
  z_channels: int = 4
  norm_groups: int = 32
  dtype: Any = None

  @property
  def downsample_factor(self) -> int:
    """f: the image side over the latent side."""
    return 2 ** (len(self.ch_mult) - 1)

  def setup(self):
    shared = dict(ch=self.ch, ch_mult=tuple(self.ch_mult), num_res_blocks=self.num_res_blocks,
                  attn_resolutions=tuple(self.attn_resolutions), norm_groups=self.norm_groups,
                  dtype=self.dtype)
    self.encoder = Encoder(z_channels=self.z_channels, **shared)
    self.decoder = Decoder(out_channels=self.in_channels, **shared)

  def encode(self, x_BHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Posterior mean and (clamped) log-variance, each [B, h, w, Z] float32."""
    mean_BhwZ, logvar_BhwZ = jnp.split(self.encoder(x_BHWC).astype(jnp.float32), 2, axis=-1)
    return mean_BhwZ, jnp.clip(logvar_BhwZ, *LOGVAR_RANGE)

  def decode(self, z_BhwZ: jax.Array) -> jax.Array:
    """Float32 image [B, H, W, C] decoded from the latent ``z_BhwZ``."""
    return self.decoder(z_BhwZ)

  def __call__(self, x_BHWC: jax.Array, rng: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(reconstruction, mean, logvar); decodes a posterior sample if ``rng`` is given, else the
    mean."""
    mean_BhwZ, logvar_BhwZ = self.encode(x_BHWC)
    z_BhwZ = mean_BhwZ if rng is None else sample_posterior(rng, mean_BhwZ, logvar_BhwZ)
    return self.decode(z_BhwZ), mean_BhwZ, logvar_BhwZ


def sample_posterior(rng: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """z = mean + exp(logvar / 2) * N(0, I) (the reparameterisation trick), any shape."""
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) per example, summed over the latent dims: [B]."""
  kl = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)  # [B, ...], like mean
  return kl.reshape(kl.shape[0], -1).sum(-1)


def reconstruction_error(x_BHWC: jax.Array, recon_BHWC: jax.Array, kind: str = "l1") -> jax.Array:
  """Per-example sum over pixels of |x - x'| ("l1", LDM's choice) or (x - x')^2 ("l2"): [B]."""
  if kind not in ("l1", "l2"):
    raise ValueError(f"reconstruction kind must be 'l1' or 'l2', got '{kind}'")
  diff_BHWC = recon_BHWC.astype(jnp.float32) - x_BHWC.astype(jnp.float32)
  err_BHWC = jnp.abs(diff_BHWC) if kind == "l1" else jnp.square(diff_BHWC)
  return err_BHWC.reshape(err_BHWC.shape[0], -1).sum(-1)


def vae_loss(x_BHWC: jax.Array, recon_BHWC: jax.Array, mean: jax.Array, logvar: jax.Array, *,
             kl_weight: float = 1e-6, kind: str = "l1") -> tuple[jax.Array, dict[str, jax.Array]]:
  """LDM's loss without the perceptual and GAN terms: mean_B(rec) + kl_weight * mean_B(KL)."""
  rec = reconstruction_error(x_BHWC, recon_BHWC, kind).mean()
  kl = kl_divergence(mean, logvar).mean()
  return rec + kl_weight * kl, {"rec": rec, "kl": kl}


def latent_scale_factor(latents: jax.Array) -> jax.Array:
  """1 / std of a batch of training latents: scales z to unit variance for the diffusion model."""
  return 1.0 / jnp.std(latents.astype(jnp.float32))
