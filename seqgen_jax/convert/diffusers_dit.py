"""Import a diffusers ``DiTTransformer2DModel`` state dict (e.g. facebook/DiT-XL-2-256) into DiT.

diffusers stores the paper's single time/label embedder once per block (conversions from the
official checkpoints copy it into every block); this importer takes block 0's and refuses a state
dict whose blocks disagree. The model built here must use diffusers' conventions:
``freq_shift=1`` (diffusers' DiT time embedding; the paper's code uses 0) and
``norm_eps=config["norm_eps"]`` (the final LayerNorm is 1e-6 in both).

Axis key: D hidden width, C input channels, p patch size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqgen_jax.errors import ConfigError


def dit_kwargs_from_diffusers(dcfg: dict[str, Any]) -> dict[str, Any]:
  """``DiT`` constructor arguments equivalent to a DiTTransformer2DModel config."""
  heads, head_dim = dcfg.get("num_attention_heads", 16), dcfg.get("attention_head_dim", 72)
  if dcfg.get("norm_type", "ada_norm_zero") != "ada_norm_zero":
    raise ConfigError(f"diffusers DiT import: norm_type {dcfg.get('norm_type')} unsupported")
  in_ch = dcfg.get("in_channels", 4)
  return dict(out_channels=dcfg.get("out_channels") or in_ch,
              patch_size=dcfg.get("patch_size", 2), hidden_size=heads * head_dim,
              depth=dcfg.get("num_layers", 28), num_heads=heads,
              num_classes=dcfg.get("num_embeds_ada_norm", 1000),
              norm_eps=dcfg.get("norm_eps", 1e-5), freq_shift=1.0)


def convert_dit_state_dict(sd: dict[str, np.ndarray], depth: int) -> dict[str, Any]:
  """diffusers DiTTransformer2DModel state dict (numpy) -> our DiT params."""
  sd = {k: np.asarray(v, np.float32) for k, v in sd.items()}
  emb = "transformer_blocks.0.norm1.emb"
  for i in range(1, depth):
    for k in [k for k in sd if k.startswith(emb)]:
      other = k.replace("transformer_blocks.0.", f"transformer_blocks.{i}.")
      if not np.array_equal(sd[k], sd[other]):
        raise ConfigError(f"diffusers DiT import: block {i}'s time/label embedder differs from "
                          "block 0's (DiT has one shared embedder)")
  lin = lambda k: {"kernel": sd[f"{k}.weight"].T, "bias": sd[f"{k}.bias"]}
  w_DCpp = sd["pos_embed.proj.weight"]  # -> a Dense over flattened (p, p, C) patches
  params = {
      "x_embedder": {"kernel": w_DCpp.transpose(2, 3, 1, 0).reshape(-1, w_DCpp.shape[0]),
                     "bias": sd["pos_embed.proj.bias"]},
      "t_mlp_0": lin(f"{emb}.timestep_embedder.linear_1"),
      "t_mlp_1": lin(f"{emb}.timestep_embedder.linear_2"),
      "y_embedder": {"embedding": sd[f"{emb}.class_embedder.embedding_table.weight"]},
      "final_adaLN_modulation": lin("proj_out_1"),
      "final_linear": lin("proj_out_2"),
  }
  for i in range(depth):
    b = f"transformer_blocks.{i}"
    qkv = {"kernel": np.concatenate([sd[f"{b}.attn1.to_{n}.weight"] for n in "qkv"]).T,
           "bias": np.concatenate([sd[f"{b}.attn1.to_{n}.bias"] for n in "qkv"])}
    params[f"block_{i}"] = {"adaLN_modulation": lin(f"{b}.norm1.linear"),
                            "attn": {"qkv": qkv, "proj": lin(f"{b}.attn1.to_out.0")},
                            "fc1": lin(f"{b}.ff.net.0.proj"), "fc2": lin(f"{b}.ff.net.2")}
  return params
