"""Raw dataset files: their place under the data dir, pinned checksums and canonical sources.

A raw file is accepted when the sha256 of the file is one of its pinned digests (the offline copy,
as in ``SHA256SUMS``, or the canonical download), or when the sha256 of its decompressed content
(or of the archive member that holds it) equals the pinned content digest. The content digest
accepts a re-compressed copy of the same bytes (the canonical MNIST ``.gz`` files and the offline
copies differ only in their gzip headers) and an uncompressed one (``input.txt`` for
``input.txt.gz``), while a truncated or corrupted file always fails with a one-line DataError that
names the file, the expected digest and where to get the file.

Downloads (opt-in, see datadir.py) go to a temporary name next to their destination, are checked,
and only then renamed into place, so a broken transfer never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import os
import shutil
import tarfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO

from seqgen_jax import fileio
from seqgen_jax.data import datadir
from seqgen_jax.errors import DataError

_CHUNK = 1 << 20
_READ_ERRORS = (EOFError, OSError, zlib.error, tarfile.TarError, zipfile.BadZipFile, KeyError)


@dataclasses.dataclass(frozen=True)
class RawFile:
  """One raw file of a dataset.

  Attributes:
    path: the offline copy's path under the data dir, e.g. ``mnist/train-images-idx3-ubyte.gz``.
    sha256: digest of the file at ``path`` (the offline copy, pinned in SHA256SUMS).
    content_sha256: digest of its decompressed content; None when the file is itself an archive.
    url: the canonical public source, or None when there is none.
    url_sha256: digest of the file at ``url`` when it is not byte-identical to the offline copy.
    download_as: where a download is stored under the data dir (default: ``path``).
    member: the member of the downloaded archive that holds this file's content.
    how_to_get: what to tell the user when there is no public download.
    rows_sha256, rows_digest: for sources laid out differently from the offline copy (columns
      swapped, another header), ``rows_digest(content)`` is a digest of the parsed rows that
      must equal ``rows_sha256`` whatever the layout.
  """

  path: str
  sha256: str | None
  content_sha256: str | None = None
  url: str | None = None
  url_sha256: str | None = None
  download_as: str | None = None
  member: str | None = None
  how_to_get: str | None = None
  rows_sha256: str | None = None
  rows_digest: Callable[[bytes], str] | None = dataclasses.field(
      default=None, compare=False, repr=False)

  def candidates(self) -> list[tuple[str, str | None]]:
    """(relative path, archive member) pairs accepted under the data dir, in order of preference."""
    out = [(self.path, None)]
    if self.download_as and self.download_as != self.path:
      out.append((self.download_as, self.member))
    return out


@dataclasses.dataclass(frozen=True)
class Located:
  """A verified raw file on disk, possibly a member of an archive."""

  path: str
  member: str | None = None

  @contextlib.contextmanager
  def open(self) -> Iterator[IO[bytes]]:
    """The file's content as a binary stream (gunzipped, or the archive member's bytes)."""
    if self.member is not None and zipfile.is_zipfile(self.path):
      with zipfile.ZipFile(self.path) as zf, zf.open(self.member) as f:
        yield f
    elif self.member is not None:
      with tarfile.open(self.path) as tf:
        f = tf.extractfile(self.member)
        if f is None:
          raise KeyError(f"{self.member} is not a regular file in {self.path}")
        with f:
          yield f
    elif self.path.endswith(".gz") and not self.path.endswith(".tar.gz"):
      with gzip.open(self.path, "rb") as f:
        yield f
    else:
      with open(self.path, "rb") as f:
        yield f

  def read_bytes(self) -> bytes:
    with self.open() as f:
      return f.read()

  def read_text(self, encoding: str = "utf-8") -> str:
    return self.read_bytes().decode(encoding)

  def is_plain(self) -> bool:
    """True when the content is the file's bytes themselves (not gzipped, not a member)."""
    return self.member is None and not self.path.endswith(".gz")


def sha256_stream(f: IO[bytes]) -> str:
  h = hashlib.sha256()
  while chunk := f.read(_CHUNK):
    h.update(chunk)
  return h.hexdigest()


def sha256_file(path: str) -> str:
  with open(path, "rb") as f:
    return sha256_stream(f)


def _fetch_hint(raw: RawFile, data_dir: str) -> str:
  if raw.url is None:
    return raw.how_to_get or "there is no public download of this file"
  dest = os.path.dirname(os.path.join(data_dir, raw.download_as or raw.path))
  return (f"download {raw.url} into {dest}/, or set config.data.download=True "
          f"(or ${datadir.DOWNLOAD_ENV_VAR}=1) to fetch it")


def verify(dataset: str, raw: RawFile, loc: Located) -> None:
  """Raises a one-line DataError unless ``loc`` holds exactly the content ``raw`` pins."""
  offline_form = loc.path.endswith(raw.path) and loc.member is None
  accepted = {d for d in (raw.sha256, raw.url_sha256) if d}
  file_digest = sha256_file(loc.path)
  if file_digest in accepted:
    return
  problem = "truncated or corrupt"
  if raw.content_sha256:
    if loc.is_plain():
      content = file_digest
    else:
      try:
        with loc.open() as f:
          content = sha256_stream(f)
      except _READ_ERRORS as e:
        content, problem = None, f"unreadable ({type(e).__name__})"
    if content == raw.content_sha256:
      return
  if raw.rows_digest is not None and raw.rows_sha256 and not problem.startswith("unreadable"):
    try:
      if raw.rows_digest(loc.read_bytes()) == raw.rows_sha256:
        return
    except (ValueError, *_READ_ERRORS):
      pass  # not parseable as this dataset's rows: reported below as a checksum failure
  if offline_form and raw.sha256:
    expected = raw.sha256
  else:
    expected = raw.url_sha256 or raw.content_sha256 or raw.sha256
  what = f"{loc.path}" + (f" (member {loc.member})" if loc.member else "")
  if raw.url:
    where = f"delete it and download {raw.url} again"
  else:
    where = f"delete it; {raw.how_to_get or 'there is no public download of this file'}"
  raise DataError(f"{dataset}: {what} failed its checksum (sha256 {file_digest}, expected "
                  f"{expected}): {problem}; {where}")


def _download(dataset: str, raw: RawFile, dest: str, member: str | None) -> None:
  """Fetches ``raw.url`` to a temporary file next to ``dest`` and renames it when it checks out."""
  os.makedirs(os.path.dirname(dest), exist_ok=True)
  ext = next((e for e in (".tar.gz", ".gz", ".zip") if dest.endswith(e)), "")
  # The destination is either absent or complete and verified.
  with fileio.atomic_path(dest, suffix=ext) as tmp:
    with open(tmp, "wb") as out:
      try:
        with urllib.request.urlopen(raw.url, timeout=60) as resp:
          shutil.copyfileobj(resp, out, _CHUNK)
      except OSError as e:
        raise DataError(f"{dataset}: downloading {raw.url} failed ({e}); download it by hand "
                        f"into {os.path.dirname(dest)}/") from None
    verify(dataset, raw, Located(tmp, member))


def locate(dataset: str, raw: RawFile, data_dir: str, origin: str, *,
           download: bool = False) -> Located:
  """Finds and verifies ``raw`` under ``data_dir`` (downloading it first if allowed and missing)."""
  if not os.path.isdir(data_dir) and not (download and raw.url):
    raise DataError(
        f"{dataset}: data directory {data_dir} (from {origin}) does not exist; "
        f"{_fetch_hint(raw, data_dir)}, or point config.data.data_dir / ${datadir.ENV_VAR} at a "
        f"directory that has it")
  for rel, member in raw.candidates():
    path = os.path.join(data_dir, rel)
    if os.path.isfile(path):
      loc = Located(path, member)
      verify(dataset, raw, loc)
      return loc
  if download and raw.url:
    rel, member = raw.candidates()[-1]
    dest = os.path.join(data_dir, rel)
    _download(dataset, raw, dest, member)
    return Located(dest, member)
  looked = " or ".join(os.path.join(data_dir, rel) for rel, _ in raw.candidates())
  raise DataError(f"{dataset}: no file {looked} (data dir from {origin}); "
                  f"{_fetch_hint(raw, data_dir)}")
