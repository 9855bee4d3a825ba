"""The base TFDS builder every dataset uses, preparation with a lock, and random-access reading.

Every dataset is a ``tfds.core.GeneratorBasedBuilder`` that writes array_record files (read back
by ``tfds.data_source`` / ``builder.as_data_source``, no TensorFlow needed). Records keep the
order in which the builder generates them (``disable_shuffling``), so record ``i`` of a split is
example ``i`` of the raw files, which is what the tests compare against.

Preparation (``prepare``):
  1. the raw files are located under the data dir and checked against their pinned checksums on
     every start (a fraction of a second; they stay the source of truth, the prepared copy is a
     cache), downloading them first when allowed;
  2. under a per-dataset file lock, TFDS writes the copy into ``incomplete.*`` and renames it into
     place only when complete; leftovers of a killed run are deleted, a failed run removes what it
     created, and a directory without its ``dataset_info.json`` is never read;
  3. the split sizes are checked against the dataset's known sizes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import inspect
import io
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from array_record.python import array_record_data_source
from etils import epath
from tensorflow_datasets.proto import tf_example_pb2

from seqgen_jax.data import datadir, raw
from seqgen_jax.errors import DataError

Example = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class DataOptions:
  """Where the raw files and the prepared copies live, and how much to prepare.

  ``max_examples`` keeps only the first N examples of every split (a quick subset for tests and
  smoke runs); such a copy is prepared under ``<prepared_dir>/first<N>/`` so it is never
  mistaken for the full one.
  """

  data_dir: str | None = None
  prepared_dir: str | None = None
  download: bool = False
  max_examples: int | None = None

  @classmethod
  def from_config(cls, cfg) -> DataOptions:
    """From a ``config.data`` ConfigDict (missing fields take their defaults)."""
    return cls(data_dir=cfg.get("data_dir", None) or None,
               prepared_dir=cfg.get("prepared_dir", None) or None,
               download=bool(cfg.get("download", False)),
               max_examples=cfg.get("max_examples", None) or None)


class SeqgenBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base builder: raw files from the data dir, array_record output in generation order.

  Subclasses set ``DATASET`` (a human name for messages), implement ``raw_files`` (name ->
  RawFile), ``_features`` and ``_splits(located)`` (split -> generator of (int key, example)),
  and list their full split sizes in ``SPLIT_SIZES``.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  DATASET = ""
  HOMEPAGE = ""
  CITATION = ""
  SPLIT_SIZES: dict[str, int] = {}

  def __init__(self, *, raw_dir: str | None = None, raw_dir_origin: str = "",
               download: bool = False, **kwargs):
    self._raw_dir = raw_dir
    self._raw_dir_origin = raw_dir_origin
    self._download = download
    self._located: dict[str, raw.Located] | None = None
    super().__init__(**kwargs)

  # TFDS locates a builder's source file through importlib_resources, which it does not install;
  # the plain file path is all it needs (for checksums.tsv / metadata lookups, which we skip).
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))

  # ------------------------------------------------------------------ for subclasses

  def raw_files(self) -> dict[str, raw.RawFile]:
    raise NotImplementedError

  def _features(self) -> tfds.features.FeaturesDict:
    raise NotImplementedError

  def _metadata(self) -> dict[str, Any]:
    return {}

  def _splits(self, located: dict[str, raw.Located]) -> dict[str, Iterator]:
    raise NotImplementedError

  def split_sizes(self) -> dict[str, int]:
    return dict(self.SPLIT_SIZES)

  # ------------------------------------------------------------------ tfds hooks

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, features=self._features(),
        homepage=self.HOMEPAGE, citation=self.CITATION, disable_shuffling=True,
        metadata=tfds.core.MetadataDict(self._metadata()))

  def _split_generators(self, dl_manager):
    del dl_manager  # downloads go through raw.locate, with our own checksums
    return self._splits(self.locate_raw())

  def _generate_examples(self, *args):  # tfds requires it; _splits supplies the generators
    raise NotImplementedError

  # ------------------------------------------------------------------ raw files

  def locate_raw(self) -> dict[str, raw.Located]:
    """Finds and checks every raw file (downloading when allowed); one-line DataError if not."""
    if self._located is None:
      data_dir, origin = datadir.resolve_data_dir(self._raw_dir)
      origin = self._raw_dir_origin or origin
      self._located = {name: raw.locate(self.DATASET, spec, data_dir, origin,
                                        download=self._download)
                       for name, spec in self.raw_files().items()}
    return self._located


# ---------------------------------------------------------------------- preparation


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
  """An exclusive advisory lock (concurrent preparers on one machine or one NFS share)."""
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _remove_stale_incomplete(dataset_dir: str) -> None:
  """Deletes ``incomplete.*`` directories left by a killed run (called under the lock)."""
  if not os.path.isdir(dataset_dir):
    return
  for root, dirs, _ in os.walk(dataset_dir):
    for d in list(dirs):
      if d.startswith("incomplete."):
        logging.warning("removing %s, left behind by an interrupted preparation",
                        os.path.join(root, d))
        shutil.rmtree(os.path.join(root, d), ignore_errors=True)
        dirs.remove(d)


def prepared_root(options: DataOptions) -> tuple[str, str]:
  """The TFDS data_dir that holds the prepared copies, and where that choice came from."""
  root, origin = datadir.resolve_prepared_dir(options.prepared_dir)
  if options.max_examples:
    root = os.path.join(root, f"first{int(options.max_examples)}")
  return root, origin


def make_builder(cls: type[SeqgenBuilder], options: DataOptions, config: str | None = None
                 ) -> SeqgenBuilder:
  """A builder reading raw files as ``options`` says, writing under the prepared root."""
  data_dir, origin = datadir.resolve_data_dir(options.data_dir)
  root, _ = prepared_root(options)
  return cls(data_dir=root, config=config, file_format="array_record", raw_dir=data_dir,
             raw_dir_origin=origin, download=datadir.download_enabled(options.download))


def prepare(cls: type[SeqgenBuilder], options: DataOptions, config: str | None = None
            ) -> SeqgenBuilder:
  """Checks the raw files, prepares the TFDS copy once (atomically), returns the builder."""
  builder = make_builder(cls, options, config)
  builder.locate_raw()  # every start: bad or missing raw files stop here, before any write
  if not builder.is_prepared():
    root, origin = prepared_root(options)
    try:
      os.makedirs(root, exist_ok=True)
    except OSError as e:
      raise DataError(f"{cls.DATASET}: cannot create the prepared-data directory {root} (from "
                      f"{origin}): {e.strerror}; set config.data.prepared_dir or "
                      f"${datadir.PREPARED_ENV_VAR} to a writable directory") from None
    dataset_dir = os.path.join(root, builder.name)
    with _file_lock(os.path.join(root, f".{builder.name}.lock")):
      located = builder.locate_raw()
      builder = make_builder(cls, options, config)  # another process may have finished it
      builder._located = located  # already checked: no second pass over the raw files
      if not builder.is_prepared():
        _prepare_locked(builder, dataset_dir, options)
        builder = make_builder(cls, options, config)
  check_split_sizes(builder, options)
  return builder


def _prepare_locked(builder: SeqgenBuilder, dataset_dir: str, options: DataOptions) -> None:
  _remove_stale_incomplete(dataset_dir)
  existed = os.path.isdir(dataset_dir)
  variant_dir = str(builder.data_path)
  variant_existed = os.path.isdir(variant_dir)
  download_dir = tempfile.mkdtemp(prefix="seqgen_tfds_downloads_")
  logging.info("preparing %s into %s", builder.name, variant_dir)
  tfds.display_progress_bar(False)
  printed = io.StringIO()
  try:
    with contextlib.redirect_stdout(printed):  # TFDS prints two banners; send them to the log
      builder.download_and_prepare(
          download_dir=download_dir,
          download_config=tfds.download.DownloadConfig(
              max_examples_per_split=options.max_examples, try_download_gcs=False))
  except BaseException:
    # TFDS already deleted its incomplete.* directory; also remove the folders it made for it.
    if not existed:
      shutil.rmtree(dataset_dir, ignore_errors=True)
    elif not variant_existed:
      shutil.rmtree(variant_dir, ignore_errors=True)
    raise
  finally:
    tfds.display_progress_bar(True)
    shutil.rmtree(download_dir, ignore_errors=True)
    for line in printed.getvalue().splitlines():
      logging.info("tfds: %s", line)


def check_split_sizes(builder: SeqgenBuilder, options: DataOptions) -> None:
  """One-line DataError when a prepared copy does not hold the dataset's known split sizes."""
  if not builder.is_prepared():
    return  # tfds.testing.mock_data: download_and_prepare is a no-op and nothing is on disk
  for split, full in builder.split_sizes().items():
    want = min(full, options.max_examples) if options.max_examples else full
    got = builder.info.splits[split].num_examples if split in builder.info.splits else 0
    if got != want:
      raise DataError(f"{builder.DATASET}: the prepared copy {builder.data_path} has {got} "
                      f"'{split}' examples, expected {want}; delete that directory and run again")


# ---------------------------------------------------------------------- random access


def _fast_field_decoder(feature):
  """A decoder from a tf.train.Feature for the feature types we write, or None if unsupported."""
  F = tfds.features
  if type(feature) is F.Text:
    return lambda f: f.bytes_list.value[0]
  if type(feature) is F.ClassLabel:
    return lambda f: np.int64(f.int64_list.value[0])
  if type(feature) is F.Tensor:
    shape, dtype = feature.shape, np.dtype(feature.np_dtype)
    if feature._encoding == F.Encoding.BYTES and sum(d is None for d in shape) <= 1:
      target = tuple(-1 if d is None else d for d in shape)
      return lambda f: np.frombuffer(f.bytes_list.value[0], dtype).reshape(target)
    if shape == () and feature._encoding == F.Encoding.NONE:
      if np.issubdtype(dtype, np.integer):
        return lambda f: dtype.type(f.int64_list.value[0])
      if np.issubdtype(dtype, np.floating):
        return lambda f: dtype.type(f.float_list.value[0])
  return None


class SplitReader:
  """Random access to one prepared split: ``reader.get(keys)`` -> list of example dicts.

  Reads through ``builder.as_data_source`` (array_record). For the feature types our builders
  write, the source hands over raw record bytes and each tf.train.Example is parsed here, about
  ten times faster than TFDS's generic NumPy decoder (a test checks both give the same arrays);
  other features go through the data source's own decoding.
  """

  def __init__(self, builder: tfds.core.DatasetBuilder, split: str):
    self.split = split
    decoders = {k: _fast_field_decoder(f) for k, f in builder.info.features.items()}
    self._decoders = decoders if all(d is not None for d in decoders.values()) else None
    method = tfds.decode.DeserializeMethod
    self.source = builder.as_data_source(
        split=split, deserialize_method=(method.RAW_BYTES if self._decoders
                                         else method.DESERIALIZE_AND_DECODE))
    # array_record reads a list of keys in one call; other sources (tfds.testing.mock_data's)
    # are read key by key.
    self._array_record = isinstance(getattr(self.source, "data_source", None),
                                    array_record_data_source.ArrayRecordDataSource)

  def __len__(self) -> int:
    return len(self.source)

  def get(self, keys: Sequence[int]) -> list[Example]:
    """The examples with these record keys, in this order."""
    keys = [int(k) for k in keys]
    if not self._array_record:
      records = [self.source[k] for k in keys]
    elif self._decoders is not None:
      records = self.source.data_source.__getitems__(keys)  # raw bytes, one batched read
    else:
      return list(self.source.__getitems__(keys))
    if self._decoders is None:
      return records
    out = []
    for record in records:
      fields = tf_example_pb2.Example.FromString(bytes(record)).features.feature
      out.append({k: dec(fields[k]) for k, dec in self._decoders.items()})
    return out

  def all(self, chunk: int = 4096) -> list[Example]:
    """Every example of the split, in record order."""
    n = len(self)
    return [ex for s in range(0, n, chunk) for ex in self.get(range(s, min(n, s + chunk)))]
