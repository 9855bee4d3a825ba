"""Import a diffusers ``DiTTransformer2DModel`` (e.g. facebook/DiT-XL-2-256) into DiT.

diffusers stores the paper's single time/label embedder once per block (conversions from the
official checkpoints copy it into every block); this importer takes block 0's and refuses a state
dict whose blocks disagree. The module built here follows diffusers' conventions exactly:

* the time embedding uses ``freq_shift=1`` (the paper's code uses 0);
* each block's first (pre-attention) LayerNorm and the final ``norm_out`` use eps 1e-6 whatever
  the config says, and the config's ``norm_eps`` is used only by the LayerNorm before the MLP
  (``attn_norm_eps=1e-6``, ``final_norm_eps=1e-6``, ``norm_eps=config["norm_eps"]``);
* at an input size other than ``sample_size`` the positional grid is rescaled to the
  ``sample_size // patch_size`` grid (``pos_base_size``), as diffusers' PatchEmbed interpolates.

Supported config: ``norm_type="ada_norm_zero"`` with class labels (``num_embeds_ada_norm``),
``activation_fn="gelu-approximate"``, ``attention_bias=True``, ``norm_elementwise_affine=False``,
``dropout=0``, ``out_channels`` equal to ``in_channels`` (or twice it: a learned variance, the
official checkpoints' layout). Anything else is refused with a one-line DataError.

Axis key: D hidden width, C input channels, p patch size.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seqgen_jax.convert.hf import Checkpoint, Imported, check_shapes, open_checkpoint
from seqgen_jax.errors import DataError
from seqgen_jax.nn.dit import DiT

DIFFUSERS_LN_EPS = 1e-6  # diffusers' AdaLayerNormZero and DiT norm_out: fixed, not norm_eps


def _get(dcfg: dict[str, Any], key: str, default: Any) -> Any:
  value = dcfg.get(key)
  return default if value is None else value


def _refuse(what: str) -> DataError:
  return DataError(f"diffusers DiTTransformer2DModel import: unsupported config ({what})")


def dit_kwargs_from_diffusers(dcfg: dict[str, Any]) -> dict[str, Any]:
  """``DiT`` constructor arguments equivalent to a DiTTransformer2DModel config."""
  checks = {"norm_type": ("ada_norm_zero",), "activation_fn": ("gelu-approximate",),
            "attention_bias": (True,), "norm_elementwise_affine": (False,), "dropout": (0, 0.0)}
  defaults = {"norm_type": "ada_norm_zero", "activation_fn": "gelu-approximate",
              "attention_bias": True, "norm_elementwise_affine": False, "dropout": 0.0}
  for key, allowed in checks.items():
    value = _get(dcfg, key, defaults[key])
    if value not in allowed:
      raise _refuse(f"{key}={value!r}; supported: {', '.join(repr(a) for a in allowed)}")
  if dcfg.get("num_embeds_ada_norm", 1000) is None:
    raise _refuse("num_embeds_ada_norm=None; ada_norm_zero needs class labels")
  heads, head_dim = _get(dcfg, "num_attention_heads", 16), _get(dcfg, "attention_head_dim", 72)
  patch, size = _get(dcfg, "patch_size", 2), _get(dcfg, "sample_size", 32)
  if not isinstance(size, int) or size % patch:
    raise _refuse(f"sample_size={size!r} must be an int divisible by patch_size={patch}")
  in_ch = _get(dcfg, "in_channels", 4)
  return dict(out_channels=_get(dcfg, "out_channels", in_ch), patch_size=patch,
              hidden_size=heads * head_dim, depth=_get(dcfg, "num_layers", 28), num_heads=heads,
              num_classes=dcfg.get("num_embeds_ada_norm", 1000),
              norm_eps=_get(dcfg, "norm_eps", 1e-5), attn_norm_eps=DIFFUSERS_LN_EPS,
              final_norm_eps=DIFFUSERS_LN_EPS, freq_shift=1.0, pos_base_size=size // patch)


def dit_model_config(dcfg: dict[str, Any]) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """(``config.model`` fields of the "dit" builder, its build kwargs) for a DiT config."""
  kwargs = dit_kwargs_from_diffusers(dcfg)
  in_ch, out_ch = _get(dcfg, "in_channels", 4), kwargs.pop("out_channels")
  if out_ch not in (in_ch, 2 * in_ch):
    raise _refuse(f"out_channels={out_ch} with in_channels={in_ch}: the dit predicts "
                  "in_channels, or twice that with a learned variance")
  num_classes = kwargs.pop("num_classes")
  size = _get(dcfg, "sample_size", 32)
  return (ml_collections.ConfigDict(dict(name="dit", **kwargs, learn_sigma=out_ch == 2 * in_ch)),
          dict(image_shape=(size, size, in_ch), num_classes=num_classes))


def convert_dit_state_dict(sd: dict[str, np.ndarray], depth: int) -> dict[str, Any]:
  """diffusers DiTTransformer2DModel state dict (numpy) -> our DiT params."""
  sd = {k: np.asarray(v, np.float32) for k, v in sd.items()}
  emb = "transformer_blocks.0.norm1.emb"
  for i in range(1, depth):
    for k in [k for k in sd if k.startswith(emb)]:
      other = k.replace("transformer_blocks.0.", f"transformer_blocks.{i}.")
      if other not in sd or not np.array_equal(sd[k], sd[other]):
        raise DataError(f"diffusers DiT import: block {i}'s time/label embedder differs from "
                        "block 0's (DiT has one shared embedder)")

  def get(k: str) -> np.ndarray:
    if k not in sd:
      raise DataError(f"diffusers DiT import: the state dict has no tensor '{k}'")
    return sd[k]

  lin = lambda k: {"kernel": get(f"{k}.weight").T, "bias": get(f"{k}.bias")}
  w_DCpp = get("pos_embed.proj.weight")  # -> a Dense over flattened (p, p, C) patches
  params = {
      "x_embedder": {"kernel": w_DCpp.transpose(2, 3, 1, 0).reshape(-1, w_DCpp.shape[0]),
                     "bias": get("pos_embed.proj.bias")},
      "t_mlp_0": lin(f"{emb}.timestep_embedder.linear_1"),
      "t_mlp_1": lin(f"{emb}.timestep_embedder.linear_2"),
      "y_embedder": {"embedding": get(f"{emb}.class_embedder.embedding_table.weight")},
      "final_adaLN_modulation": lin("proj_out_1"),
      "final_linear": lin("proj_out_2"),
  }
  for i in range(depth):
    b = f"transformer_blocks.{i}"
    qkv = {"kernel": np.concatenate([get(f"{b}.attn1.to_{n}.weight") for n in "qkv"]).T,
           "bias": np.concatenate([get(f"{b}.attn1.to_{n}.bias") for n in "qkv"])}
    params[f"block_{i}"] = {"adaLN_modulation": lin(f"{b}.norm1.linear"),
                            "attn": {"qkv": qkv, "proj": lin(f"{b}.attn1.to_out.0")},
                            "fc1": lin(f"{b}.ff.net.0.proj"), "fc2": lin(f"{b}.ff.net.2")}
  return params


def dit_from_checkpoint(ckpt: Checkpoint, *, dtype: Any = None) -> Imported:
  """A diffusers DiTTransformer2DModel ``Checkpoint`` as the denoiser "dit" (float32 params)."""
  if ckpt.architecture not in (None, "DiTTransformer2DModel"):
    raise _refuse(f"class {ckpt.architecture}, expected DiTTransformer2DModel")
  kwargs = dit_kwargs_from_diffusers(ckpt.config)
  cfg, build_kwargs = dit_model_config(ckpt.config)
  model = DiT(dtype=dtype, **kwargs)
  params = convert_dit_state_dict(ckpt.tensors, kwargs["depth"])
  h, w, c = build_kwargs["image_shape"]
  check_shapes(model, params, jnp.zeros((1, h, w, c)), jnp.zeros((1,), jnp.int32))
  return Imported(model, jax.tree.map(jnp.asarray, params), cfg, "denoiser", build_kwargs)


def load_diffusers_dit(source: Any, *, dtype: Any = None) -> Imported:
  """A local diffusers DiTTransformer2DModel directory (or a pipeline's transformer/, or an
  in-memory DiTTransformer2DModel) as the denoiser "dit"."""
  return dit_from_checkpoint(open_checkpoint(source, subfolders=("transformer",)), dtype=dtype)
