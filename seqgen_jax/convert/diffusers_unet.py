"""Import a diffusers ``UNet2DModel`` (DDPM layout, e.g. google/ddpm-cifar10-32) into our UNet.

Reads a local directory holding ``config.json`` and ``diffusion_pytorch_model.safetensors`` (or
``.bin``, which needs torch), as written by ``UNet2DModel.save_pretrained``, a pipeline directory
with a ``unet/`` subfolder, or an in-memory ``UNet2DModel``; nothing is downloaded. Supported:
``DownBlock2D`` / ``AttnDownBlock2D`` down blocks mirrored by ``UpBlock2D`` / ``AttnUpBlock2D`` up
blocks (attention at the same resolutions on both sides, as in Ho et al.), positional time
embedding, SiLU, conv resampling, ``resnet_time_scale_shift="default"``, no class embedding, and
``out_channels`` equal to ``in_channels`` (or twice it: a learned variance). Anything else is
refused with a one-line DataError naming the setting.

Usage::

  imported = load_diffusers_unet("/path/to/ddpm-cifar10-32/unet")   # or load_pretrained(...)
  eps_BHWC = imported.model.apply({"params": imported.params}, x_BHWC, t_B)

Inputs and outputs are NHWC here and NCHW in diffusers; the weights are transposed accordingly.

Axis key: B batch, H, W height and width (of an image or a kernel), C channels, O, I a layer's
output and input channels (torch convolutions are OIHW, flax ones HWIO).
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seqgen_jax.convert.hf import Checkpoint, Imported, open_checkpoint
from seqgen_jax.errors import DataError
from seqgen_jax.nn.unet import UNet

_DOWN = {"DownBlock2D": False, "AttnDownBlock2D": True}
_UP = {"UpBlock2D": False, "AttnUpBlock2D": True}
# Attention parameter names of old diffusers checkpoints (diffusers renames them on load too).
_LEGACY_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _require(cond: bool, what: str) -> None:
  if not cond:
    raise DataError(f"diffusers UNet2DModel import: unsupported config ({what})")


def unet_kwargs_from_diffusers(dcfg: dict[str, Any]) -> dict[str, Any]:
  """``UNet`` constructor arguments equivalent to a diffusers UNet2DModel ``config.json``."""
  get = lambda k, default: dcfg.get(k, default) if dcfg.get(k) is not None else default
  _require(dcfg.get("_class_name", "UNet2DModel") == "UNet2DModel",
           f"class {dcfg.get('_class_name')}, expected UNet2DModel")
  _require(get("time_embedding_type", "positional") == "positional", "time_embedding_type")
  _require(get("act_fn", "silu") in ("silu", "swish"), f"act_fn={dcfg.get('act_fn')}")
  _require(get("resnet_time_scale_shift", "default") == "default", "resnet_time_scale_shift")
  _require(get("mid_block_type", "UNetMidBlock2D") == "UNetMidBlock2D", "mid_block_type")
  _require(get("add_attention", True), "add_attention=False")
  _require(get("downsample_type", "conv") == "conv" and get("upsample_type", "conv") == "conv",
           "resampling type")
  _require(dcfg.get("class_embed_type") is None and dcfg.get("num_class_embeds") is None,
           "class embedding")
  _require(get("mid_block_scale_factor", 1) == 1, "mid_block_scale_factor != 1")
  _require(not get("center_input_sample", False), "center_input_sample")
  _require(dcfg.get("time_embedding_dim") is None, "time_embedding_dim")
  _require(dcfg.get("attn_norm_num_groups") in (None, get("norm_num_groups", 32)),
           "attn_norm_num_groups")
  chans = list(get("block_out_channels", (224, 448, 672, 896)))
  down, up = list(dcfg["down_block_types"]), list(dcfg["up_block_types"])
  _require(all(b in _DOWN for b in down), f"down_block_types {down}")
  _require(all(b in _UP for b in up), f"up_block_types {up}")
  _require(len(down) == len(up) == len(chans), "block counts differ")
  attn_down = [_DOWN[b] for b in down]
  _require(attn_down == [_UP[b] for b in reversed(up)],
           "attention must sit at the same levels in the down and up paths")
  ch = chans[0]
  _require(all(c % ch == 0 for c in chans), f"block_out_channels {chans} not multiples of {ch}")
  size = get("sample_size", 32)
  size = size[0] if isinstance(size, (list, tuple)) else size
  return dict(
      out_channels=get("out_channels", 3), ch=ch, ch_mult=tuple(c // ch for c in chans),
      num_res_blocks=get("layers_per_block", 2),
      attn_resolutions=tuple(size // 2 ** i for i, a in enumerate(attn_down) if a),
      attn_levels=tuple(i for i, a in enumerate(attn_down) if a),
      dropout=get("dropout", 0.0), attn_head_dim=dcfg.get("attention_head_dim", 8),
      downsample_padding=get("downsample_padding", 1), norm_groups=get("norm_num_groups", 32),
      norm_eps=get("norm_eps", 1e-5), flip_sin_to_cos=get("flip_sin_to_cos", True),
      freq_shift=get("freq_shift", 0))


def _canonical(key: str) -> str:
  parts = key.split(".")
  if "attentions" in parts and parts[-2] in _LEGACY_ATTN:
    parts[-2:-1] = _LEGACY_ATTN[parts[-2]].split(".")
  return ".".join(parts).replace("downsamplers.0.op.", "downsamplers.0.conv.")


def _torch_module_to_flax(prefix: str, levels: int) -> str | None:
  """diffusers module path (no .weight/.bias) -> our flax module path, '/'-separated."""
  sub = {"time_emb_proj": "temb_proj", "conv_shortcut": "nin_shortcut", "group_norm": "norm",
         "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
  fixed = {"conv_in": "conv_in", "conv_out": "conv_out", "conv_norm_out": "norm_out",
           "time_embedding.linear_1": "temb_dense0", "time_embedding.linear_2": "temb_dense1"}
  if prefix in fixed:
    return fixed[prefix]
  m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)"
                   r"\.(\d+)(?:\.(.+))?", prefix)
  if m:
    side, blk, kind, j, leaf = m.groups()
    level = int(blk) if side == "down" else levels - 1 - int(blk)
    if kind in ("downsamplers", "upsamplers"):
      mod = f"{side}_{level}_{kind[:-2]}/conv"
      return mod if leaf == "conv" else None
    mod = f"{side}_{level}_{'block' if kind == 'resnets' else 'attn'}_{j}"
  else:
    m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)(?:\.(.+))?", prefix)
    if not m:
      return None
    kind, j, leaf = m.groups()
    mod = f"mid_block_{int(j) + 1}" if kind == "resnets" else "mid_attn"
  return f"{mod}/{sub.get(leaf, leaf)}"


def convert_unet_state_dict(state_dict: dict[str, np.ndarray], levels: int) -> dict[str, Any]:
  """diffusers UNet2DModel state dict (numpy, NCHW convs) -> our nested flax params."""
  params: dict[str, Any] = {}
  for key, value in state_dict.items():
    key = _canonical(key)
    module, leaf = key.rsplit(".", 1)
    path = _torch_module_to_flax(module, levels)
    if path is None:
      raise DataError(f"diffusers UNet2DModel import: unexpected parameter '{key}'")
    v = np.asarray(value, np.float32)
    is_norm = path.rsplit("/", 1)[-1].startswith("norm")
    if leaf == "weight":
      if is_norm:
        name = "scale"
      elif v.ndim == 4 and path.rsplit("/", 1)[-1] in ("q", "k", "v", "proj_out"):
        name, v = "kernel", v[:, :, 0, 0].T   # very old checkpoints: 1x1 convs in attention
      elif v.ndim == 4:
        name, v = "kernel", v.transpose(2, 3, 1, 0)   # OIHW -> HWIO
      else:
        name, v = "kernel", v.T
    elif leaf == "bias":
      name = "bias"
    else:
      raise DataError(f"diffusers UNet2DModel import: unexpected parameter '{key}'")
    node = params
    for part in path.split("/"):
      node = node.setdefault(part, {})
    node[name] = v
  return params


def unet_model_config(dcfg: dict[str, Any]) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """(``config.model`` fields of the "unet" builder, its build kwargs) for a UNet2DModel config."""
  kwargs = unet_kwargs_from_diffusers(dcfg)
  in_ch, out_ch = dcfg.get("in_channels") or 3, kwargs.pop("out_channels")
  _require(out_ch in (in_ch, 2 * in_ch),
           f"out_channels={out_ch} with in_channels={in_ch}: the unet predicts in_channels, or "
           "twice that with a learned variance")
  size = dcfg.get("sample_size") or 32
  h, w = (size, size) if isinstance(size, int) else tuple(size)
  fields = dict(name="unet", **kwargs, learn_sigma=out_ch == 2 * in_ch)
  return ml_collections.ConfigDict(fields), dict(image_shape=(h, w, in_ch), num_classes=0)


def unet_from_checkpoint(ckpt: Checkpoint, *, dtype: Any = None) -> Imported:
  """A diffusers UNet2DModel ``Checkpoint`` as the denoiser "unet" (float32 params)."""
  dcfg = dict(ckpt.config)
  _require(ckpt.architecture in (None, "UNet2DModel"),
           f"class {ckpt.architecture}, expected UNet2DModel")
  cfg, build_kwargs = unet_model_config(dcfg)
  kwargs = unet_kwargs_from_diffusers(dcfg)
  model = UNet(dtype=dtype, **kwargs)
  params = convert_unet_state_dict(ckpt.tensors, len(kwargs["ch_mult"]))
  # Every parameter of the module must be filled, with the right shape.
  x = jax.ShapeDtypeStruct((1, *build_kwargs["image_shape"]), jnp.float32)
  want = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, jnp.zeros((1,))), x)["params"]
  got_shapes = jax.tree.map(lambda a: a.shape, params)
  want_shapes = jax.tree.map(lambda a: a.shape, want)
  if got_shapes != want_shapes:
    raise DataError(f"diffusers UNet2DModel import: converted parameters do not fit the model "
                    f"(e.g. {_first_difference(got_shapes, want_shapes)})")
  return Imported(model, jax.tree.map(jnp.asarray, params), cfg, "denoiser", build_kwargs)


def load_diffusers_unet(source: Any, *, dtype: Any = None) -> Imported:
  """A local diffusers UNet2DModel directory (or a pipeline's unet/, or an in-memory
  UNet2DModel) as the denoiser "unet"."""
  return unet_from_checkpoint(open_checkpoint(source, subfolders=("unet",)), dtype=dtype)


def _first_difference(got: dict, want: dict, prefix: str = "") -> str:
  for k in sorted(set(got) | set(want)):
    if k not in got or k not in want:
      return f"{prefix}{k} {'missing' if k not in got else 'unexpected'}"
    if isinstance(got[k], dict) and isinstance(want[k], dict):
      diff = _first_difference(got[k], want[k], f"{prefix}{k}/")
      if diff:
        return diff
    elif got[k] != want[k]:
      return f"{prefix}{k}: {got[k]} vs {want[k]}"
  return ""
