"""GPT-2 (GPT2LMHeadModel / GPT2Model) checkpoints -> the causal_lm "gpt".

GPT-2's Conv1D layers store [in, out] weights, already in flax's kernel layout; the fused
c_attn columns are [all query heads | all key heads | all value heads], which is exactly our
fused projection to (3N, H) heads.

Axis key: D model width, N heads, H head width, F MLP width, V vocabulary, P positions.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from seqgen_jax.convert.hf import (
  Checkpoint,
  Imported,
  Tensors,
  check_shapes,
  expect_model_type,
  open_checkpoint,
  unsupported,
)
from seqgen_jax.errors import DataError
from seqgen_jax.nn.gpt import build_gpt
from seqgen_jax.nn.transformer import stack_layer_params

GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
                    "relu": "relu"}


def gpt2_model_config(hf: dict, where: str | pathlib.Path = "checkpoint"
                      ) -> ml_collections.ConfigDict:
  """The ``config.model`` fields of the "gpt" builder that reproduce a GPT-2 config.json."""
  expect_model_type(hf, "gpt2", where)
  act = hf.get("activation_function", "gelu_new")
  if act not in GPT2_ACTIVATIONS:
    raise unsupported(where, "activation_function", act, ", ".join(GPT2_ACTIVATIONS))
  if not hf.get("scale_attn_weights", True):
    raise unsupported(where, "scale_attn_weights", False, "true")
  for flag in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
    if hf.get(flag, False):
      raise unsupported(where, flag, True, "false")
  d = hf["n_embd"]
  return ml_collections.ConfigDict(dict(
      name="gpt", num_layers=hf["n_layer"], num_heads=hf["n_head"], d_model=d,
      d_ff=hf.get("n_inner") or 4 * d, dropout=hf.get("resid_pdrop", 0.0), use_bias=True,
      positions="learned", activation=GPT2_ACTIVATIONS[act],
      ln_eps=hf.get("layer_norm_epsilon", 1e-5)))


def _conv1d(t: Tensors, name: str, kernel_shape: tuple[int, ...], bias_shape: tuple[int, ...]
            ) -> dict:
  return {"kernel": t(f"{name}.weight").reshape(kernel_shape),
          "bias": t(f"{name}.bias").reshape(bias_shape)}


def gpt2_from_checkpoint(ckpt: Checkpoint, *, dtype: jnp.dtype | None = None,
                         scan_layers: bool = False, attention: str = "xla") -> Imported:
  """A GPT-2 ``Checkpoint`` as the "gpt" causal LM (float32 params)."""
  hf, sd = ckpt.config, ckpt.tensors
  cfg = gpt2_model_config(hf, ckpt.where)
  cfg.scan_layers, cfg.attention = scan_layers, attention
  prefix = "transformer." if any(k.startswith("transformer.") for k in sd) else ""
  t = Tensors(sd, ckpt.name, prefix)
  d, n = cfg.d_model, cfg.num_heads
  h = d // n

  def ln(name: str) -> dict:
    return {"scale": t(f"{name}.weight"), "bias": t(f"{name}.bias")}

  layers = {}
  for i in range(cfg.num_layers):
    p = f"h.{i}."
    layers[f"layers_{i}"] = {
        "ln1": ln(p + "ln_1"), "ln2": ln(p + "ln_2"),
        "attn": {"qkv": _conv1d(t, p + "attn.c_attn", (d, 3 * n, h), (3 * n, h)),
                 "out": _conv1d(t, p + "attn.c_proj", (n, h, d), (d,))},
        "mlp": {"fc": _conv1d(t, p + "mlp.c_fc", (d, cfg.d_ff), (cfg.d_ff,)),
                "proj": _conv1d(t, p + "mlp.c_proj", (cfg.d_ff, d), (d,))}}
  wte_VD = t("wte.weight")
  if "lm_head.weight" in sd and not np.array_equal(np.asarray(sd["lm_head.weight"]), wte_VD):
    raise DataError(f"checkpoint {ckpt.name} has an lm_head that is not tied to wte; the gpt "
                    "model ties its output projection to the token embeddings")
  params = {"wte": {"embedding": wte_VD}, "wpe": {"embedding": t("wpe.weight")},
            "decoder": stack_layer_params(layers) if scan_layers else layers,
            "ln_f": ln("ln_f")}
  kwargs = dict(vocab_size=hf["vocab_size"], max_len=hf["n_positions"])
  model = build_gpt(cfg, **kwargs, dtype=dtype)
  check_shapes(model, params, jnp.zeros((1, 1), jnp.int32))
  return Imported(model, params, cfg, "causal_lm", kwargs)


def load_gpt2(source: Any, *, dtype: jnp.dtype | None = None, scan_layers: bool = False,
              attention: str = "xla") -> Imported:
  """A GPT-2 checkpoint directory (or an in-memory GPT2LMHeadModel / GPT2Model) as the "gpt"
  causal LM (float32 params)."""
  return gpt2_from_checkpoint(open_checkpoint(source), dtype=dtype, scan_layers=scan_layers,
                              attention=attention)
