"""seqgen_jax.fileio.atomic_path: the destination is either the old file or the whole new one."""

import os

import numpy as np
import pytest

from seqgen_jax import fileio


def test_atomic_path_renames_on_success(tmp_path):
  dest = tmp_path / "batch_0000000.npy"
  with fileio.atomic_path(str(dest), suffix=".npy") as tmp:
    assert os.path.basename(tmp).startswith(".") and tmp.endswith(".part.npy")
    assert os.path.dirname(tmp) == str(tmp_path)  # same filesystem: os.replace is atomic
    np.save(tmp, np.arange(5, dtype=np.uint8))  # np.save keeps a name ending in .npy
    assert not dest.exists()  # nothing at the destination until the block ends
  np.testing.assert_array_equal(np.load(dest), np.arange(5))
  assert [p.name for p in tmp_path.iterdir()] == ["batch_0000000.npy"]


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
  dest = tmp_path / "stats.txt"
  dest.write_text("old")
  with pytest.raises(RuntimeError, match="disk full"):
    with fileio.atomic_path(str(dest)) as tmp, open(tmp, "w") as f:
      f.write("half of the new")
      raise RuntimeError("disk full")
  assert dest.read_text() == "old"
  assert [p.name for p in tmp_path.iterdir()] == ["stats.txt"]  # the temporary is gone


def test_atomic_path_in_the_current_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with fileio.atomic_path("plain.txt") as tmp, open(tmp, "w") as f:
    f.write("x")
  assert (tmp_path / "plain.txt").read_text() == "x"


def test_atomic_path_gives_the_permissions_of_a_plain_open(tmp_path):
  with open(tmp_path / "plain.bin", "wb"):
    pass
  with fileio.atomic_path(str(tmp_path / "atomic.bin")):
    pass
  mode = lambda name: (tmp_path / name).stat().st_mode & 0o777  # noqa: E731
  assert mode("atomic.bin") == mode("plain.bin"), (oct(mode("atomic.bin")), oct(mode("plain.bin")))
