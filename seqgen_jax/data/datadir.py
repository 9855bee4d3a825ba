"""Where datasets live: a data directory given by config / flag or $SEQGEN_DATA_DIR."""

from __future__ import annotations

import os

from seqgen_jax.errors import DataError

ENV_VAR = "SEQGEN_DATA_DIR"
DEFAULT_DIR = os.path.join("~", "seqgen_data")


def resolve_data_dir(configured: str | None) -> tuple[str, str]:
  """Returns (data directory, a phrase saying where that choice came from)."""
  if configured:
    return os.path.expanduser(configured), "config.data.data_dir"
  if os.environ.get(ENV_VAR):
    return os.path.expanduser(os.environ[ENV_VAR]), f"${ENV_VAR}"
  return (os.path.expanduser(DEFAULT_DIR),
          f"the default (neither config.data.data_dir nor ${ENV_VAR} set)")


def find_file(configured_dir: str | None, candidates: list[str], *, dataset: str,
              how_to_get: str) -> str:
  """First existing ``data_dir/candidate``, else a one-line DataError saying where it looked."""
  data_dir, origin = resolve_data_dir(configured_dir)
  if not os.path.isdir(data_dir):
    raise DataError(
        f"{dataset}: data directory {data_dir} (from {origin}) does not exist; {how_to_get}, "
        f"or point config.data.data_dir / ${ENV_VAR} at a directory that has it")
  for rel in candidates:
    path = os.path.join(data_dir, rel)
    if os.path.isfile(path):
      return path
  looked = " or ".join(os.path.join(data_dir, rel) for rel in candidates)
  raise DataError(f"{dataset}: no file {looked} (data dir from {origin}); {how_to_get}")
