"""Token and position embeddings.

Axis key: B batch, T time / sequence position, P table rows (max_len), D model width, N heads,
H head width, F frequencies (D/2 or H/2: sin/cos or rotary pairs).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def sinusoidal_positions(num_positions: int, dim: int,
                         max_timescale: float = 10_000.0) -> jax.Array:
  """The fixed sin/cos table of Vaswani et al. (2017): [num_positions, dim], sin then cos halves."""
  if dim % 2:
    raise ValueError(f"sinusoidal positions need an even width, got {dim}")
  pos_T1 = jnp.arange(num_positions, dtype=jnp.float32)[:, None]
  inv_freq_F = jnp.exp(-math.log(max_timescale) * jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
  angles_TF = pos_T1 * inv_freq_F[None, :]
  return jnp.concatenate([jnp.sin(angles_TF), jnp.cos(angles_TF)], axis=-1)


class LearnedPositions(nn.Module):
  """A trainable [max_len, D] table added to the token embeddings (GPT-2 style)."""

  max_len: int
  dim: int
  init_std: float = 0.02
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, positions_BT: jax.Array) -> jax.Array:
    """The table's rows at ``positions_BT``: [B, T, D]."""
    table_PD = self.param("embedding", nn.initializers.normal(self.init_std),
                          (self.max_len, self.dim))
    out_BTD = jnp.take(table_PD, positions_BT, axis=0)
    return out_BTD if self.dtype is None else out_BTD.astype(self.dtype)


def rotary_angles(positions_BT: jax.Array, head_dim: int, base: float = 10_000.0) -> jax.Array:
  """Rotary angles pos * base^(-2i / H) for i < H / 2: [B, T, H / 2] float32."""
  if head_dim % 2:
    raise ValueError(f"rotary positions need an even head size, got {head_dim}")
  inv_freq_F = base ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  return positions_BT.astype(jnp.float32)[..., None] * inv_freq_F


def apply_rotary(x_BTNH: jax.Array, positions_BT: jax.Array, *,
                 base: float = 10_000.0) -> jax.Array:
  """Rotary position embedding (RoFormer, Su et al. 2021) in the half-split layout.

  Feature pairs (i, i + H/2) are rotated by the angle pos * base^(-2i/H) (the GPT-NeoX / LLaMA
  layout), so q.k after rotation depends on positions only through their difference. Computed
  in float32 and cast back to the input dtype.
  """
  h = x_BTNH.shape[-1]
  ang_BT1F = rotary_angles(positions_BT, h, base)[:, :, None, :]
  cos_BT1F, sin_BT1F = jnp.cos(ang_BT1F), jnp.sin(ang_BT1F)
  x1_BTNF, x2_BTNF = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
  out_BTNH = jnp.concatenate([x1_BTNF * cos_BT1F - x2_BTNF * sin_BT1F,
                              x2_BTNF * cos_BT1F + x1_BTNF * sin_BT1F], axis=-1)
  return out_BTNH.astype(x_BTNH.dtype)


def timestep_embedding(t_B: jax.Array, dim: int, max_period: float = 10_000.0, *,
                       flip_sin_to_cos: bool = False, downscale_freq_shift: float = 1.0,
                       scale: float = 1.0) -> jax.Array:
  """Sinusoidal embedding of (integer or continuous) diffusion times: [B] -> float32 [B, dim].

  Same conventions as diffusers' ``get_timestep_embedding``: frequencies
  exp(-log(max_period) * i / (dim/2 - downscale_freq_shift)), sin half then cos half (cos first
  when ``flip_sin_to_cos``), and a zero column appended when ``dim`` is odd. The defaults are
  Ho et al.'s DDPM embedding (shift 1); DiT (Peebles & Xie) uses flip_sin_to_cos=True, shift 0.
  """
  half = dim // 2
  exponent_F = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32)
  freqs_F = jnp.exp(exponent_F / (half - downscale_freq_shift))
  args_BF = scale * jnp.asarray(t_B, jnp.float32)[:, None] * freqs_F[None, :]
  sin_BF, cos_BF = jnp.sin(args_BF), jnp.cos(args_BF)
  emb_BD = jnp.concatenate([cos_BF, sin_BF] if flip_sin_to_cos else [sin_BF, cos_BF], axis=-1)
  if dim % 2:
    emb_BD = jnp.pad(emb_BD, ((0, 0), (0, 1)))
  return emb_BD
