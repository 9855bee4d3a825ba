"""Writing files so that a reader (or a rerun after a crash) never sees half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

# The process umask, read once (os.umask can only be read by setting it): mkstemp makes its file
# 0600, and the renamed file should get the mode a plain open() would have given it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
  """Yields a temporary path beside ``path``; renames it onto ``path`` when the block succeeds.

  The temporary file is hidden (a leading dot, so ``*`` globs skip it) and ends in
  ``.part<suffix>`` (pass ``suffix=".npy"`` for ``np.save``, which appends ``.npy`` to any other
  name). If the block raises, the temporary file is removed and ``path`` is left as it was:
  absent, or the previous complete file. The file gets the permissions ``open()`` would give
  it (0666 less the umask), not mkstemp's owner-only 0600. ``os.replace`` is atomic on one
  filesystem, which is why the temporary file lives in the destination's directory.
  """
  folder = os.path.dirname(path) or "."
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".part{suffix}",
                             dir=folder)
  os.close(fd)
  try:
    os.chmod(tmp, 0o666 & ~_UMASK)
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
