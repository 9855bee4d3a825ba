"""Where datasets live: the raw files' data directory and the prepared (TFDS) copies.

* Raw files: ``config.data.data_dir``, else ``$SEQGEN_DATA_DIR``, else ``~/seqgen_data``.
* Prepared array_record copies: ``config.data.prepared_dir``, else ``$SEQGEN_PREPARED_DIR``, else
  ``~/tensorflow_datasets`` (TFDS's own default; our builders' names all start with ``seqgen_``
  so they never clash with TFDS's). Never inside the data dir, which may be a read-only share.
* Downloads from the canonical sources: off unless ``config.data.download`` is true or
  ``$SEQGEN_DOWNLOAD`` is 1 / true / yes, so that a run never touches the network by surprise.
"""

from __future__ import annotations

import os

from seqgen_jax.errors import DataError

ENV_VAR = "SEQGEN_DATA_DIR"
PREPARED_ENV_VAR = "SEQGEN_PREPARED_DIR"
DOWNLOAD_ENV_VAR = "SEQGEN_DOWNLOAD"
DEFAULT_DIR = os.path.join("~", "seqgen_data")
TFDS_DEFAULT_DIR = os.path.join("~", "tensorflow_datasets")


def resolve_data_dir(configured: str | None) -> tuple[str, str]:
  """Returns (data directory, a phrase saying where that choice came from)."""
  if configured:
    return os.path.expanduser(configured), "config.data.data_dir"
  if os.environ.get(ENV_VAR):
    return os.path.expanduser(os.environ[ENV_VAR]), f"${ENV_VAR}"
  return (os.path.expanduser(DEFAULT_DIR),
          f"the default (neither config.data.data_dir nor ${ENV_VAR} set)")


def resolve_prepared_dir(configured: str | None) -> tuple[str, str]:
  """Returns (directory for prepared TFDS copies, where that choice came from)."""
  if configured:
    return os.path.expanduser(configured), "config.data.prepared_dir"
  if os.environ.get(PREPARED_ENV_VAR):
    return os.path.expanduser(os.environ[PREPARED_ENV_VAR]), f"${PREPARED_ENV_VAR}"
  return (os.path.expanduser(TFDS_DEFAULT_DIR),
          f"the default (neither config.data.prepared_dir nor ${PREPARED_ENV_VAR} set)")


def download_enabled(configured: bool | None) -> bool:
  """Whether missing raw files may be fetched from their canonical public source."""
  if configured:
    return True
  return os.environ.get(DOWNLOAD_ENV_VAR, "").strip().lower() in ("1", "true", "yes")


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
