"""Where a task's starting weights come from when they are not a fresh initialisation.

* A finished run of this codebase (``load_config`` / ``load_params``): latent diffusion needs the
  trained autoencoder, a cascade needs the trained base model, and evaluation after training
  (``experiments/diffusion_eval.py``) needs the run itself; all of them read
  ``<workdir>/config.json`` and the latest orbax checkpoint under ``<workdir>/checkpoints``.
* A Hugging Face / diffusers checkpoint, ``config.init.from_pretrained`` (``imported_model``):
  read by ``seqgen_jax.convert.load_pretrained``; the model trained is the checkpoint's.
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from seqgen_jax.convert import load_pretrained
from seqgen_jax.errors import ConfigError
from seqgen_jax.registry import MODELS

PyTree = Any


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The ConfigDict a run wrote to ``<workdir>/config.json``."""
  path = epath.Path(workdir) / "config.json"
  if not path.exists():
    raise ConfigError(f"no finished run at {workdir}: {path} does not exist")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def load_params(workdir: str, *, prefer_ema: bool = True) -> tuple[PyTree, int]:
  """(params, step) of the latest checkpoint: the EMA params if the run kept them."""
  directory = str(epath.Path(workdir) / "checkpoints")
  if "://" not in directory:
    directory = os.path.abspath(directory)
  if not epath.Path(directory).exists():
    raise ConfigError(f"no checkpoints under {directory}")
  mngr = ocp.CheckpointManager(directory, item_names=("state",))
  step = mngr.latest_step()
  if step is None:
    raise ConfigError(f"no checkpoints under {directory}")
  restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  mngr.close()
  state = restored["state"]
  params = state.get("ema_params") if prefer_ema else None
  if params is None:
    params = state["params"]
  return jax.tree.map(jax.numpy.asarray, params), int(step)


# ------------------------------------------------------------------------------ imported weights

# config.model fields that say how a model computes, not what: the experiment's values are kept.
RUNTIME_FIELDS = ("scan_layers", "attention", "remat")
_TRANSFORMER_KINDS = ("causal_lm", "masked_lm", "classifier")


def _fit(imported: dict[str, Any], task: dict[str, Any], source: str) -> dict[str, Any]:
  """The build arguments for the imported model on the task's data (one-line ConfigErrors)."""
  out = dict(imported)
  for key, want in task.items():
    have = imported.get(key)
    if key == "max_len":  # a longer context than the data needs is fine
      if have is not None and have < want:
        raise ConfigError(f"init.from_pretrained={source} has {have} positions, fewer than the "
                          f"data's {want}")
    elif key == "image_shape":  # any size the model accepts; the channels must agree
      if have[-1] != want[-1]:
        raise ConfigError(f"init.from_pretrained={source} takes {have[-1]} channels, the data "
                          f"has {want[-1]}")
      out[key] = tuple(want)
    elif have != want:
      raise ConfigError(f"init.from_pretrained={source} has {key}={have}, the task needs "
                        f"{key}={want}")
  return out


def adopt_model_config(config: ml_collections.ConfigDict,
                       model_cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Replaces ``config.model`` by ``model_cfg`` (keeping the experiment's RUNTIME_FIELDS), so
  the run's config.json records the model that is trained; returns the new config.model."""
  new = ml_collections.ConfigDict(model_cfg.to_dict())
  for key in RUNTIME_FIELDS:
    if key in config.model:
      new[key] = config.model[key]
  with config.unlocked():
    config.model = new
  return config.model


def imported_model(config: ml_collections.ConfigDict, kind: str, task_kwargs: dict[str, Any], *,
                   dtype: Any = None, **load_kwargs: Any) -> tuple[nn.Module, Any] | None:
  """(the module to train, its imported params) when ``config.init.from_pretrained`` is set,
  else None.

  The checkpoint must be readable as ``kind``; ``task_kwargs`` are the build arguments the task
  would use: ``vocab_size`` / ``num_classes`` must equal the checkpoint's, ``max_len`` may be
  smaller (the checkpoint's is kept), ``image_shape`` needs the same channels (its size is the
  data's). ``config.model`` becomes the checkpoint's fields (``adopt_model_config``).
  """
  source = config.get("init", {}).get("from_pretrained", "") or ""
  if not source:
    return None
  if kind in _TRANSFORMER_KINDS:
    load_kwargs.update({k: config.model[k] for k in ("scan_layers", "attention")
                        if k in config.model})
  imported = load_pretrained(source, kind=kind, dtype=dtype, **load_kwargs)
  kwargs = _fit(imported.build_kwargs, task_kwargs, source)
  model_cfg = adopt_model_config(config, imported.config)
  model = MODELS.get(model_cfg.name, kind=kind)(model_cfg, **kwargs, dtype=dtype)
  return model, imported.params
