"""Metric writing: TensorBoard event files (no TensorFlow needed), a JSONL log, a progress line.

The event files are written directly in TensorBoard's record format (length, masked CRC32C,
serialized ``Event`` protobuf, masked CRC32C). The few protobuf messages needed (scalars, images,
text) are encoded by hand below, so the only dependency is the standard library.

A remote workdir (``gs://...``; objects there cannot be appended to) is mirrored: files are
written to a local directory and copied over (through etils.epath) at most once a minute and on
close; an existing remote ``metrics.jsonl`` is fetched first, so a resumed run continues it.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import struct
import tempfile
import time
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from etils import epath

# --------------------------------------------------------------------------- protobuf encoding


def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1
  out = bytearray()
  while True:
    b = n & 0x7F
    n >>= 7
    if n:
      out.append(b | 0x80)
    else:
      out.append(b)
      return bytes(out)


def _key(field: int, wire: int) -> bytes:
  return _varint(field << 3 | wire)


def _f_varint(field: int, v: int) -> bytes:
  return _key(field, 0) + _varint(v)


def _f_double(field: int, v: float) -> bytes:
  return _key(field, 1) + struct.pack("<d", v)


def _f_float(field: int, v: float) -> bytes:
  return _key(field, 5) + struct.pack("<f", v)


def _f_bytes(field: int, v: bytes | str) -> bytes:
  if isinstance(v, str):
    v = v.encode("utf-8")
  return _key(field, 2) + _varint(len(v)) + v


def _event(step: int, *, summary_values: list[bytes] | None = None,
           file_version: str | None = None, wall_time: float | None = None) -> bytes:
  ev = _f_double(1, time.time() if wall_time is None else wall_time) + _f_varint(2, step)
  if file_version is not None:
    ev += _f_bytes(3, file_version)
  if summary_values is not None:
    ev += _f_bytes(5, b"".join(_f_bytes(1, v) for v in summary_values))
  return ev


def _scalar_value(tag: str, value: float) -> bytes:
  return _f_bytes(1, tag) + _f_float(2, float(value))


def _image_value(tag: str, png: bytes, height: int, width: int, channels: int) -> bytes:
  image = _f_varint(1, height) + _f_varint(2, width) + _f_varint(3, channels) + _f_bytes(4, png)
  return _f_bytes(1, tag) + _f_bytes(4, image)


def _text_value(tag: str, text: str) -> bytes:
  # TensorProto{dtype: DT_STRING(7), tensor_shape: {}, string_val: [text]}
  tensor = _f_varint(1, 7) + _f_bytes(2, b"") + _f_bytes(8, text)
  metadata = _f_bytes(1, _f_bytes(1, "text"))  # SummaryMetadata{plugin_data{plugin_name}}
  return _f_bytes(1, tag) + _f_bytes(8, tensor) + _f_bytes(9, metadata)


# --------------------------------------------------------------------------- record framing


def _crc32c_table() -> list[int]:
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    table.append(c)
  return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), the checksum TFRecord framing uses."""
  c = 0xFFFFFFFF
  for b in data:
    c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
  return c ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  c = crc32c(data)
  return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _record(data: bytes) -> bytes:
  header = struct.pack("<Q", len(data))
  return (header + struct.pack("<I", _masked_crc(header)) + data +
          struct.pack("<I", _masked_crc(data)))


# --------------------------------------------------------------------------- PNG


def encode_png(image: np.ndarray) -> bytes:
  """Encodes an HxW, HxWx1, HxWx3 or HxWx4 uint8 array as PNG (zlib, no filtering)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"encode_png needs uint8 pixels, got {image.dtype}")
  if image.ndim == 2:
    image = image[:, :, None]
  h, w, c = image.shape
  color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
  raw = b"".join(b"\x00" + image[y].tobytes() for y in range(h))

  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

  ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) +
          chunk(b"IEND", b""))


# --------------------------------------------------------------------------- writers


class TensorBoardWriter:
  """Appends scalars, images and text to a TensorBoard event file in ``logdir``."""

  _opened = itertools.count()  # distinct file names for writers opened in the same second

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = (f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}."
            f"{next(self._opened)}")
    self.path = os.path.join(logdir, name)
    self._f = open(self.path, "ab")
    self._f.write(_record(_event(0, file_version="brain.Event:2")))
    self._f.flush()

  def _write(self, step: int, values: list[bytes]) -> None:
    self._f.write(_record(_event(step, summary_values=values)))

  def scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    self._write(step, [_scalar_value(k, v) for k, v in scalars.items()])

  def image(self, step: int, tag: str, image: np.ndarray) -> None:
    """``image``: HxWxC uint8."""
    image = np.asarray(image)
    if image.ndim == 2:
      image = image[:, :, None]
    self._write(step, [_image_value(tag, encode_png(image), *image.shape)])

  def text(self, step: int, tag: str, text: str) -> None:
    self._write(step, [_text_value(tag, text)])

  def flush(self) -> None:
    self._f.flush()

  def close(self) -> None:
    self._f.close()


def copy_tree(local_dir: str, dest: str) -> None:
  """Copies every file under ``local_dir`` to the same relative path under ``dest`` (any epath,
  e.g. gs://...), overwriting."""
  for root, _, files in os.walk(local_dir):
    for name in files:
      dst = epath.Path(dest) / os.path.relpath(os.path.join(root, name), local_dir)
      dst.parent.mkdir(parents=True, exist_ok=True)
      epath.Path(os.path.join(root, name)).copy(dst, overwrite=True)


class MetricWriter:
  """Writes metrics to TensorBoard and to ``metrics.jsonl``; a no-op on non-zero processes.

  ``workdir`` may be remote (``gs://...``): see the module docstring.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, sync_every_s: float = 60.0):
    self.enabled = enabled
    self.workdir = workdir
    self.remote = "://" in workdir
    self.sync_every_s = sync_every_s
    self._synced = time.monotonic()
    if not enabled:
      return
    self.local = tempfile.mkdtemp(prefix="seqgen_metrics_") if self.remote else workdir
    if self.remote and (epath.Path(workdir) / "metrics.jsonl").exists():
      (epath.Path(workdir) / "metrics.jsonl").copy(os.path.join(self.local, "metrics.jsonl"))
    self.tb = TensorBoardWriter(os.path.join(self.local, "tensorboard"))
    self._jsonl = open(os.path.join(self.local, "metrics.jsonl"), "a")

  def write_scalars(self, step: int, split: str, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self.tb.scalars(step, {f"{split}/{k}": v for k, v in scalars.items()})
    self._jsonl.write(json.dumps({"step": int(step), "split": split, **scalars}) + "\n")
    self.flush()

  def write_text(self, step: int, tag: str, text: str) -> None:
    if self.enabled:
      self.tb.text(step, tag, text)
      self._jsonl.write(json.dumps({"step": int(step), "split": "text", tag: text}) + "\n")
      self.flush()

  def write_image(self, step: int, tag: str, image: np.ndarray) -> str | None:
    """Logs an HxW(xC) uint8 image to TensorBoard and ``samples/<tag>_<step>.png``; its path."""
    if not self.enabled:
      return None
    self.tb.image(step, tag, image)
    name = f"{tag.replace('/', '_')}_{step}.png"
    os.makedirs(os.path.join(self.local, "samples"), exist_ok=True)
    with open(os.path.join(self.local, "samples", name), "wb") as f:
      f.write(encode_png(np.asarray(image)))
    self.flush()
    return os.path.join(self.workdir, "samples", name)

  def flush(self, *, sync: bool = False) -> None:
    """Flushes the local files; a remote workdir gets a copy if a minute passed (or ``sync``)."""
    if not self.enabled:
      return
    self.tb.flush()
    self._jsonl.flush()
    if self.remote and (sync or time.monotonic() - self._synced >= self.sync_every_s):
      self._push()

  def _push(self) -> None:
    copy_tree(self.local, self.workdir)
    self._synced = time.monotonic()

  def close(self) -> None:
    if self.enabled:
      self.flush(sync=True)
      self.tb.close()
      self._jsonl.close()


def _fmt_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
  """Formats the one-line console progress: step, loss, steps/s, ETA (and an optional extra)."""

  def __init__(self, total_steps: int, start_step: int = 0):
    self.total = total_steps
    self._t = time.perf_counter()
    self._step = start_step

  def exclude(self, seconds: float) -> None:
    """Leaves ``seconds`` of non-training work (eval, sampling, saving) out of steps/s."""
    self._t += seconds

  def rate(self, step: int) -> float:
    """Steps/s since the previous call (or since start), and restarts the clock."""
    now = time.perf_counter()
    rate = (step - self._step) / max(now - self._t, 1e-9)
    self._t, self._step = now, step
    return rate

  def format(self, step: int, metrics: Mapping[str, float], rate: float,
             extra: str | None = None) -> str:
    """The progress line for ``step`` at ``rate`` steps/s; ``extra`` goes before steps/s."""
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    parts = [f"step {step}/{self.total}"]
    parts += [f"{k} {v:.4g}" for k, v in metrics.items()]
    if extra:
      parts.append(extra)
    parts += [f"{rate:.2f} steps/s", f"ETA {_fmt_duration(eta) if eta != float('inf') else '?'}"]
    return " | ".join(parts)

  def line(self, step: int, metrics: Mapping[str, float]) -> tuple[str, float]:
    """Returns (the progress line, steps/s since the previous call)."""
    rate = self.rate(step)
    return self.format(step, metrics, rate), rate
