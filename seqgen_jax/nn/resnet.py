"""A small pre-activation ResNet image classifier with GroupNorm (no batch statistics).

The network is the CIFAR-style pre-activation ResNet of He et al. (2016, "Identity Mappings in
Deep Residual Networks"): a 3x3 stem convolution, three stages of residual blocks of widths
(w, 2w, 4w) at full, 1/2 and 1/4 resolution, each block ``x + conv(act(norm(conv(act(norm(x))))))``
with a 1x1 projection shortcut where the width or resolution changes, then norm, activation,
global average pooling and a linear head. With ``blocks_per_stage=n`` it has 6n + 2 weight
layers (n=3: ResNet-20). One substitution: GroupNorm (Wu & He 2018) instead of BatchNorm, so the
model has no batch statistics and ``apply`` is a pure function of (params, images) -- the same
at training and test time, and usable as a fixed feature extractor (``features``).

``features(images) -> [B, 4w]`` is the pooled penultimate activation; the project uses it as the
FID feature network (seqgen_jax/eval/fid.py), since Inception weights cannot be downloaded here.

Axis key: B batch, H height, W width, C channels (input), D features, K classes; r x r: the
current stage's resolution.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from seqgen_jax.errors import ConfigError
from seqgen_jax.registry import MODELS

ACTIVATIONS = {"relu": nn.relu, "swish": nn.swish, "gelu": nn.gelu}


def _groups(channels: int, max_groups: int) -> int:
  """The largest divisor of ``channels`` that is <= max_groups (32 by default, as Wu & He).

  Layers narrower than ``max_groups`` channels get one channel a group (instance
  normalisation); with the small CPU widths of the configs that is the whole first stages. A
  cap of >= 4 channels a group was tried and learned markedly slower
  (docs/image_classification_and_fid.md).
  """
  g = min(max_groups, channels)
  while channels % g:
    g -= 1
  return g


class PreActBlock(nn.Module):
  """norm -> act -> conv3x3(stride) -> norm -> act -> conv3x3, plus the (projected) input."""

  width: int
  stride: int = 1
  groups: int = 32
  activation: str = "relu"
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    """The block applied to ``x_BHWC`` (H, W, C: this block's input): [B, H/s, W/s, width]."""
    act = ACTIVATIONS[self.activation]
    conv = lambda w, k, s, name: nn.Conv(w, (k, k), strides=(s, s), padding="SAME",
                                         use_bias=False, dtype=self.dtype, name=name)
    h_BHWC = act(nn.GroupNorm(_groups(x_BHWC.shape[-1], self.groups), dtype=self.dtype,
                              name="norm1")(x_BHWC))
    # The shortcut sees the pre-activated input when it has to be projected (He et al. 2016).
    shortcut_BrrD = x_BHWC
    if self.stride != 1 or x_BHWC.shape[-1] != self.width:
      shortcut_BrrD = conv(self.width, 1, self.stride, "proj")(h_BHWC)
    h_BrrD = conv(self.width, 3, self.stride, "conv1")(h_BHWC)
    h_BrrD = act(nn.GroupNorm(_groups(self.width, self.groups), dtype=self.dtype, name="norm2")(
        h_BrrD))
    h_BrrD = conv(self.width, 3, 1, "conv2")(h_BrrD)
    return shortcut_BrrD + h_BrrD


class ResNet(nn.Module):
  """Pre-activation ResNet (GroupNorm) for small images: see the module docstring."""

  num_classes: int
  image_shape: tuple[int, int, int]
  width: int = 32
  blocks_per_stage: int = 2
  num_stages: int = 3
  groups: int = 32
  activation: str = "relu"
  dtype: jnp.dtype | None = None

  def setup(self):
    self.stem = nn.Conv(self.width, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype)
    blocks = []
    for s in range(self.num_stages):
      for b in range(self.blocks_per_stage):
        blocks.append(PreActBlock(self.width * 2**s, stride=2 if (s > 0 and b == 0) else 1,
                                  groups=self.groups, activation=self.activation,
                                  dtype=self.dtype, name=f"stage{s}_block{b}"))
    self.blocks = blocks
    self.final_norm = nn.GroupNorm(_groups(self.width * 2**(self.num_stages - 1), self.groups),
                                   dtype=self.dtype)
    self.head = nn.Dense(self.num_classes, dtype=self.dtype)

  def features(self, images_BHWC: jax.Array) -> jax.Array:
    """Penultimate activations: globally averaged, normalised last-stage features, [B, D]."""
    if tuple(images_BHWC.shape[1:]) != tuple(self.image_shape):
      raise ValueError(f"images have shape {images_BHWC.shape[1:]}, the model was built for "
                       f"{tuple(self.image_shape)}")
    h_BrrD = self.stem(jnp.asarray(images_BHWC, self.dtype or jnp.float32))
    for block in self.blocks:
      h_BrrD = block(h_BrrD)
    h_BrrD = ACTIVATIONS[self.activation](self.final_norm(h_BrrD))
    return jnp.mean(h_BrrD, axis=(1, 2)).astype(jnp.float32)

  def __call__(self, images_BHWC: jax.Array, *, train: bool = False) -> jax.Array:
    """Float32 class logits [B, K]."""
    del train  # no dropout and no batch statistics: training and test forward passes agree
    return self.head(self.features(images_BHWC)).astype(jnp.float32)

  def feature_dim(self) -> int:
    """D, the width of ``features``: the last stage's channels."""
    return self.width * 2**(self.num_stages - 1)


@MODELS.register("resnet", kind="image_classifier", family="cnn")
def build_resnet(cfg: ml_collections.ConfigDict, *, image_shape: tuple[int, int, int],
                 num_classes: int, dtype: jnp.dtype | None = None) -> ResNet:
  """Pre-activation GroupNorm ResNet: width (32), blocks_per_stage (2), num_stages (3),
  groups (32: GroupNorm groups, fewer where a layer has fewer channels), activation ("relu" |
  "swish" | "gelu")."""
  act = cfg.get("activation", "relu")
  if act not in ACTIVATIONS:
    raise ConfigError(f"unknown activation '{act}'; choose one of: {', '.join(ACTIVATIONS)}")
  for field in ("width", "blocks_per_stage", "num_stages", "groups"):
    if int(cfg.get(field, 1)) < 1:
      raise ConfigError(f"model.{field} must be >= 1, got {cfg.get(field)}")
  h, w, _ = image_shape
  stages = cfg.get("num_stages", 3)
  if h % 2**(stages - 1) or w % 2**(stages - 1):
    raise ConfigError(f"image size {h}x{w} cannot be halved {stages - 1} times "
                      f"(model.num_stages={stages})")
  return ResNet(num_classes=num_classes, image_shape=tuple(image_shape),
                width=cfg.get("width", 32), blocks_per_stage=cfg.get("blocks_per_stage", 2),
                num_stages=stages, groups=cfg.get("groups", 32), activation=act, dtype=dtype)
