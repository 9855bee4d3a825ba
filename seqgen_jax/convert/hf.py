"""Reading Hugging Face checkpoints: a directory (config.json plus safetensors or PyTorch
weights, as transformers' and diffusers' ``save_pretrained`` write them) or an in-memory
transformers / diffusers model.

Axis key: O, I a torch layer's output and input features.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from seqgen_jax.errors import DataError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json",  # transformers
                "diffusion_pytorch_model.safetensors",  # diffusers
                "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.bin",
                "diffusion_pytorch_model.bin.index.json")


@dataclasses.dataclass
class Imported:
  """An imported model: the module, its float32 params, and how to rebuild it by name.

  ``config`` holds the ``config.model`` fields (``config.name`` is the registry name) and
  ``build_kwargs`` the task-side arguments (vocab_size, max_len, ...), so
  ``MODELS.get(config.name, kind=kind)(config, **build_kwargs)`` builds an equal module.
  """

  model: nn.Module
  params: dict
  config: ml_collections.ConfigDict
  kind: str
  build_kwargs: dict[str, Any]


@dataclasses.dataclass
class Checkpoint:
  """A checkpoint's config (config.json as a dict), its tensors (name -> float32 / int numpy
  array), its architecture (the model class name, e.g. "GPT2LMHeadModel"; None if unrecorded),
  and how error messages name it (``name``) and its config (``where``)."""

  config: dict
  tensors: dict[str, np.ndarray]
  architecture: str | None
  name: str
  where: str


def _load_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  from safetensors import safe_open

  out = {}
  with safe_open(str(path), framework="numpy") as f:
    for name in f.keys():
      out[name] = np.asarray(f.get_tensor(name))
  return out


def _load_torch_bin(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError as e:
    raise DataError(f"reading {path} needs PyTorch (pip install torch), or convert the "
                    "checkpoint to model.safetensors") from e
  sd = torch.load(str(path), map_location="cpu", weights_only=True)
  if not isinstance(sd, dict):
    raise DataError(f"{path} does not hold a state dict (got {type(sd).__name__})")
  return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in sd.items()
          if hasattr(v, "numpy")}


def _load_file(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    return _load_safetensors(path) if path.suffix == ".safetensors" else _load_torch_bin(path)
  except DataError:
    raise
  except Exception as e:  # corrupt file: say which one, in one line
    raise DataError(f"cannot read weights from {path}: {type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}") from e


def read_checkpoint(path: str | pathlib.Path) -> tuple[dict, dict[str, np.ndarray]]:
  """(config.json as a dict, tensor name -> float32/int numpy array) of a local checkpoint."""
  d = pathlib.Path(path)
  if not d.is_dir():
    raise DataError(f"checkpoint directory {d} does not exist")
  cfg_path = d / "config.json"
  if not cfg_path.is_file():
    raise DataError(f"{cfg_path} not found: a Hugging Face checkpoint directory needs "
                    "config.json next to its weights")
  try:
    config = json.loads(cfg_path.read_text())
  except json.JSONDecodeError as e:
    raise DataError(f"{cfg_path} is not valid JSON: {e}") from e
  for name in WEIGHT_FILES:
    f = d / name
    if not f.is_file():
      continue
    if name.endswith(".index.json"):
      shards = sorted(set(json.loads(f.read_text()).get("weight_map", {}).values()))
      missing = [s for s in shards if not (d / s).is_file()]
      if not shards or missing:
        raise DataError(f"{f} lists shards that are not in {d}: {', '.join(missing) or 'none'}")
      sd = {}
      for s in shards:
        sd.update(_load_file(d / s))
      return config, sd
    return config, _load_file(f)
  raise DataError(f"no weights in {d}: expected one of {', '.join(WEIGHT_FILES)}")


def state_dict_of(model: Any) -> dict[str, np.ndarray]:
  """A torch module's state dict as numpy arrays (floating point ones as float32)."""
  out = {}
  for k, v in model.state_dict().items():
    v = v.detach().cpu()
    out[k] = (v.float() if v.is_floating_point() else v).numpy()
  return out


def _config_dict(model: Any) -> dict:
  cfg = model.config
  return dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)


def open_checkpoint(source: Any, *, subfolders: tuple[str, ...] = ("unet", "transformer")
                    ) -> Checkpoint:
  """The ``Checkpoint`` of a local directory or of an in-memory transformers / diffusers model.

  A diffusers pipeline directory (model_index.json, no config.json) is read from the first of
  ``subfolders`` it has.
  """
  if isinstance(source, (str, os.PathLike)):
    d = pathlib.Path(source)
    if not (d / "config.json").is_file():
      for sub in subfolders:
        if (d / sub / "config.json").is_file():
          d = d / sub
          break
    config, sd = read_checkpoint(d)
    arch = config.get("_class_name") or (config.get("architectures") or [None])[0]
    return Checkpoint(config, sd, arch, str(d), f"{d}/config.json")
  if hasattr(source, "state_dict") and hasattr(source, "config"):
    arch = type(source).__name__
    return Checkpoint(_config_dict(source), state_dict_of(source), arch, f"the in-memory {arch}",
                      f"the in-memory {arch}'s config")
  raise DataError(f"cannot load pretrained weights from a {type(source).__name__}: pass a "
                  "checkpoint directory or an in-memory transformers / diffusers model")


def expect_model_type(config: dict, model_type: str, where: Any) -> None:
  """One-line DataError unless the config's model_type is ``model_type``."""
  got = config.get("model_type")
  if got != model_type:
    raise DataError(f"{where} has model_type '{got}'; this loader reads "
                    f"'{model_type}' checkpoints")


def unsupported(where: Any, field: str, value: Any, allowed: str) -> DataError:
  """The one-line error for a config setting this codebase cannot reproduce."""
  return DataError(f"{where} sets {field}={value!r}, which is not supported "
                   f"(supported: {allowed})")


class Tensors:
  """Named tensors of a checkpoint, with a one-line error for a missing one."""

  def __init__(self, sd: dict[str, np.ndarray], name: Any, prefix: str = "") -> None:
    self.sd, self.name, self.prefix = sd, name, prefix

  def has(self, name: str) -> bool:
    """Whether the checkpoint holds ``prefix + name``."""
    return self.prefix + name in self.sd

  def __call__(self, name: str) -> np.ndarray:
    """Tensor ``prefix + name`` as float32; a one-line DataError if it is missing."""
    key = self.prefix + name
    if key not in self.sd:
      raise DataError(f"checkpoint {self.name} has no tensor '{key}'")
    return np.asarray(self.sd[key], np.float32)


def check_shapes(model: nn.Module, params: dict, *example_args: Any) -> None:
  """One-line DataError unless ``params`` has exactly the tree and shapes ``model`` expects."""
  want = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *example_args))["params"]
  want_leaves = dict(jax.tree_util.tree_flatten_with_path(want)[0])
  have_leaves = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  for path, leaf in want_leaves.items():
    name = jax.tree_util.keystr(path)
    if path not in have_leaves:
      raise DataError(f"imported params lack {name}")
    if tuple(have_leaves[path].shape) != tuple(leaf.shape):
      raise DataError(f"imported {name} has shape {tuple(have_leaves[path].shape)}, the model "
                      f"wants {tuple(leaf.shape)}")
  extra = set(have_leaves) - set(want_leaves)
  if extra:
    raise DataError(f"imported params have entries the model lacks: "
                    f"{', '.join(sorted(jax.tree_util.keystr(p) for p in extra))}")


def linear(w_OI: np.ndarray, b_O: np.ndarray | None) -> dict:
  """A torch nn.Linear ([out, in] weight) as a flax Dense ([in, out] kernel)."""
  out = {"kernel": w_OI.T}
  if b_O is not None:
    out["bias"] = b_O
  return out


def layer_norm(t: Tensors, name: str) -> dict:
  """A torch LayerNorm (weight, bias) as flax LayerNorm params (scale, bias)."""
  return {"scale": t(f"{name}.weight"), "bias": t(f"{name}.bias")}
