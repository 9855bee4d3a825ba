"""ViT, the Vision Transformer (Dosovitskiy et al. 2021): registers the image_classifier "vit".

Axis key: B batch, H image height, W image width, C channels, P tokens (patches, plus the class
token with "cls" pooling), D model width, K classes; lower-case h, w: the patch grid.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from seqgen_jax.errors import ConfigError
from seqgen_jax.nn.embeddings import LearnedPositions
from seqgen_jax.nn.transformer import POOLINGS, BlockConfig, Stack, choice
from seqgen_jax.registry import MODELS


class ViT(nn.Module):
  """Vision Transformer (Dosovitskiy et al. 2021): non-overlapping patches, linear patch
  embedding, learned positions, pre-LN encoder, class token or mean pooling, linear head."""

  num_classes: int
  image_shape: tuple[int, int, int]  # (H, W, C)
  patch_size: int
  num_layers: int
  num_heads: int
  d_model: int
  d_ff: int | None = None
  dropout: float = 0.0
  pooling: str = "cls"
  activation: str = "gelu"
  ln_eps: float = 1e-6
  attention: str = "xla"
  scan_layers: bool = False
  remat: str = "none"
  dtype: jnp.dtype | None = None

  def num_patches(self) -> int:
    """The number of patches per image; a ConfigError if the patch size does not divide it."""
    h, w, _ = self.image_shape
    p = self.patch_size
    if h % p or w % p:
      raise ConfigError(f"image size {h}x{w} is not divisible by patch_size={p}")
    return (h // p) * (w // p)

  @nn.compact
  def __call__(self, images_BHWC: jax.Array, *, train: bool = False) -> jax.Array:
    """Float32 class logits [B, K]."""
    if tuple(images_BHWC.shape[1:]) != tuple(self.image_shape):
      raise ValueError(f"images have shape {images_BHWC.shape[1:]}, the model was built for "
                       f"{tuple(self.image_shape)}")
    choice("pooling", self.pooling, POOLINGS)
    p, n = self.patch_size, self.num_patches()
    x_BHWC = jnp.asarray(images_BHWC, self.dtype or jnp.float32)
    b = x_BHWC.shape[0]
    # A stride-p p x p convolution is exactly a linear map of each flattened patch.
    x_BhwD = nn.Conv(self.d_model, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                     name="patch_embed")(x_BHWC)
    x_BPD = x_BhwD.reshape(b, n, self.d_model)
    if self.pooling == "cls":
      cls_11D = self.param("cls", nn.initializers.zeros, (1, 1, self.d_model))
      cls_B1D = jnp.broadcast_to(cls_11D, (b, 1, self.d_model)).astype(x_BPD.dtype)
      x_BPD = jnp.concatenate([cls_B1D, x_BPD], axis=1)
    x_BPD = LearnedPositions(x_BPD.shape[1], self.d_model, dtype=self.dtype, name="pos_embed")(
        jnp.arange(x_BPD.shape[1])[None, :]) + x_BPD
    x_BPD = nn.Dropout(self.dropout)(x_BPD, deterministic=not train)
    block = BlockConfig(num_heads=self.num_heads, d_ff=self.d_ff or 4 * self.d_model,
                        dropout=self.dropout, norm="pre", activation=self.activation,
                        ln_eps=self.ln_eps, attention=self.attention, dtype=self.dtype)
    x_BPD, _ = Stack(block, self.num_layers, scan=self.scan_layers, remat=self.remat,
                     name="blocks")(x_BPD, {}, train=train)
    x_BPD = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="final_ln")(x_BPD)
    pooled_BD = x_BPD[:, 0] if self.pooling == "cls" else jnp.mean(x_BPD, axis=1)
    # Zero-initialised head, as in the ViT paper's fine-tuning recipe.
    logits_BK = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                         name="head")(pooled_BD)
    return logits_BK.astype(jnp.float32)

@MODELS.register("vit", kind="image_classifier", family="transformer")
def build_vit(cfg: ml_collections.ConfigDict, *, image_shape: tuple[int, int, int],
              num_classes: int, dtype: jnp.dtype | None = None) -> ViT:
  """ViT: the common fields plus patch_size, pooling ("cls" | "mean")."""
  model = ViT(num_classes=num_classes, image_shape=tuple(image_shape),
              patch_size=cfg.patch_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
              d_model=cfg.d_model, d_ff=cfg.get("d_ff", None), dropout=cfg.get("dropout", 0.0),
              pooling=choice("pooling", cfg.get("pooling", "cls"), POOLINGS),
              attention=cfg.get("attention", "xla"), scan_layers=cfg.get("scan_layers", False),
              remat=cfg.get("remat", "none"), dtype=dtype)
  model.num_patches()  # a bad patch size fails here, before anything is built
  return model
