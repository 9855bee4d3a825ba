"""A thin wrapper over orbax's CheckpointManager.

One checkpoint holds the TrainState (params, optimizer state, EMA, RNG, step), the data
iterator's position and the config, so a restored run continues exactly where it stopped.
Saves are asynchronous; ``wait`` blocks until the last one is on disk. The directory may be
local or remote (``gs://bucket/run/checkpoints``: orbax writes through etils.epath / tensorstore).
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

PyTree = Any


def _abs(path: str) -> str:
  return path if "://" in path else os.path.abspath(path)


class Checkpointer:
  """Periodic, asynchronous, keep-the-last-k checkpoints of (state, data position, config)."""

  def __init__(self, directory: str, *, save_every: int, keep: int = 3,
               async_save: bool = True):
    self.directory = _abs(directory)
    self.save_every = int(save_every)
    # The save interval is applied in ``save`` (orbax would also save the very first step).
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        enable_async_checkpointing=async_save, create=True)
    self._mngr = ocp.CheckpointManager(self.directory, options=options,
                                       item_names=("state", "data", "config"))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def is_due(self, step: int) -> bool:
    """Whether ``step`` is on the save interval."""
    return self.save_every > 0 and step % self.save_every == 0

  def save(self, step: int, state: PyTree, data_state: dict, config: dict, *,
           force: bool = False) -> bool:
    """Starts a save if ``step`` is on the save interval (or ``force``); returns whether it did."""
    if not force and not self.is_due(step):
      return False
    return self._mngr.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                data=ocp.args.JsonSave(data_state),
                                config=ocp.args.JsonSave(config)),
        force=True)

  def restore(self, step: int, abstract_state: PyTree) -> tuple[PyTree, dict]:
    """Restores (state, data position) at ``step`` with ``abstract_state``'s shapes/shardings."""
    out = self._mngr.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                data=ocp.args.JsonRestore()))
    return out["state"], out["data"]

  def reached_preemption(self, step: int) -> bool:
    """True when JAX's multi-host preemption service says every host must save now."""
    return self._mngr.reached_preemption(step)

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.close()
