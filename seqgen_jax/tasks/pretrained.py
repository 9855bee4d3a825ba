"""Reads a finished run back from its workdir: its config and its (EMA) parameters.

Latent diffusion needs the trained autoencoder, a cascade needs the trained base model, and
evaluation after training (``experiments/diffusion_eval.py``) needs the run itself; all of them
read ``<workdir>/config.json`` and the latest orbax checkpoint under ``<workdir>/checkpoints``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from seqgen_jax.errors import ConfigError

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
