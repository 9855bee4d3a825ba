"""TFDS builders on the real files: records against plain parses of the raw files, checksums
against SHA256SUMS, failure paths (missing / truncated / corrupt / killed), downloads.

Each builder is prepared once per session on the first SUBSET examples of every split
(``max_examples``); the full preparations are the ``slow`` tests at the end.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import REPO
from PIL import Image

from seqgen_jax.data import (
  builder,
  catalog,
  images,
  multi30k,
  raw,
  sentiment,
  shakespeare,
  timeseries,
)
from seqgen_jax.errors import ConfigError, DataError

SUBSET = 300


@pytest.fixture(scope="module")
def options(data_dir, prepared_dir):
  return builder.DataOptions(data_dir=str(data_dir), prepared_dir=str(prepared_dir),
                             max_examples=SUBSET)


def _gunzip(path) -> bytes:
  with gzip.open(path, "rb") as f:
    return f.read()


def _no_leftovers(root) -> list[str]:
  """Anything half-prepared under ``root``: incomplete.* folders or dataset folders."""
  out = []
  for dirpath, dirs, files in os.walk(root):
    out += [os.path.join(dirpath, d) for d in dirs if d.startswith("incomplete.")]
    out += [os.path.join(dirpath, f) for f in files if ".part" in f or "incomplete" in f]
  return out


# ---------------------------------------------------------------------- pinned checksums


def test_pinned_checksums_are_the_shared_sha256sums(data_dir):
  """Every offline file is pinned by exactly the digest SHA256SUMS lists for it."""
  sums = {}
  for line in (data_dir / "SHA256SUMS").read_text().splitlines():
    digest, path = line.split()
    sums[path.removeprefix("./")] = digest
  pinned = {}
  for name in catalog.OFFLINE:
    entry = catalog.DATASETS[name]
    b = entry.builder(config=entry.config, data_dir="/nonexistent", raw_dir=str(data_dir))
    pinned.update({spec.path: spec.sha256 for spec in b.raw_files().values()})
  assert pinned == sums  # same files, same digests


# ---------------------------------------------------------------------- each builder, real files


def test_tiny_shakespeare_is_the_raw_text_split_90_10(data_dir, options):
  b = catalog.prepare("tinyshakespeare", options)
  train = builder.SplitReader(b, "train").get([0])[0]["text"].decode()
  val = builder.SplitReader(b, "validation").get([0])[0]["text"].decode()
  corpus = _gunzip(data_dir / "tinyshakespeare" / "input.txt.gz").decode()
  assert train + val == corpus
  assert (len(train), len(val)) == (1_003_854, 111_540)  # nanoGPT's prepare.py


@pytest.mark.parametrize("name, folder", [("mnist", "mnist"), ("fashion_mnist", "fashion_mnist")])
def test_idx_images_equal_the_raw_files(data_dir, options, name, folder):
  b = catalog.prepare(name, options)
  for split, prefix in (("train", "train"), ("test", "t10k")):
    # Plain parse: IDX images have a 16-byte header, labels an 8-byte one.
    want_x = np.frombuffer(_gunzip(data_dir / folder / f"{prefix}-images-idx3-ubyte.gz"),
                           np.uint8, offset=16).reshape(-1, 28, 28)
    want_y = np.frombuffer(_gunzip(data_dir / folder / f"{prefix}-labels-idx1-ubyte.gz"),
                           np.uint8, offset=8)
    reader = builder.SplitReader(b, split)
    assert len(reader) == SUBSET
    got = reader.get(range(SUBSET))
    np.testing.assert_array_equal(np.stack([e["image"][..., 0] for e in got]), want_x[:SUBSET])
    np.testing.assert_array_equal([e["label"] for e in got], want_y[:SUBSET])
  data = images.from_builder(b, batch_size=16, eval_batch_size=16, seed=0)
  assert data.num_classes == 10 and data.image_shape == (28, 28, 1)
  ids, _ = data.train.example_ids(3, slice(0, 16))
  batch = data.train.batch(3, slice(0, 16))
  train_x = np.frombuffer(_gunzip(data_dir / folder / "train-images-idx3-ubyte.gz"), np.uint8,
                          offset=16).reshape(-1, 28, 28, 1)
  np.testing.assert_array_equal(batch["image"], train_x[ids])


def test_cifar10_jpeg_records_are_the_decoded_archive_members(data_dir, options, tmp_path):
  b = catalog.prepare("cifar10", options)
  reader = builder.SplitReader(b, "test")
  got = reader.get(range(SUBSET))
  # Ordered by file number, then class: the first 300 are numbers 0..29 of each of 10 classes.
  np.testing.assert_array_equal([e["label"] for e in got], np.tile(np.arange(10), 30))
  picks = {k: f"test/{images.CIFAR10_CLASSES[k % 10]}/{k // 10:04d}.jpg"
           for k in (0, 7, 123, 299)}
  # GNU tar extracts the reference files (our reader is a separate, faster implementation).
  subprocess.run(["tar", "-xzf", str(data_dir / "cifar10_jpg" / "cifar10_jpg.tar.gz"), "-C",
                  str(tmp_path), *picks.values()], check=True)
  for k, member in picks.items():
    want = np.asarray(Image.open(tmp_path / member).convert("RGB"))
    np.testing.assert_array_equal(got[k]["image"], want)
  assert got[0]["image"].shape == (32, 32, 3)


def test_tar_reader_matches_tarfile(tmp_path):
  """iter_tar_files against the standard library on an archive with folders and odd sizes."""
  payloads = {"a/b/x.jpg": b"", "a/b/y.jpg": os.urandom(511), "a/c/z.jpg": os.urandom(1025),
              "a/" + "d" * 120 + "/long.jpg": b"ustar prefix field"}
  path = tmp_path / "t.tar"
  with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
    for name, data in payloads.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tf.addfile(info, io.BytesIO(data))
  assert dict(images.iter_tar_files(path.read_bytes())) == payloads
  with tarfile.open(tmp_path / "pax.tar", "w", format=tarfile.PAX_FORMAT) as tf:
    info = tarfile.TarInfo("é" * 200)
    tf.addfile(info, io.BytesIO(b""))
  with pytest.raises(DataError, match="not supported"):
    list(images.iter_tar_files((tmp_path / "pax.tar").read_bytes()))


def test_cifar10_binary_format_round_trip(tmp_path):
  """The official binary layout (label byte + R, G, B planes), written here from known images."""
  rng = np.random.default_rng(0)
  imgs = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, 7)
  recs = np.concatenate([labels[:, None].astype(np.uint8),
                         imgs.transpose(0, 3, 1, 2).reshape(7, -1)], axis=1)
  path = tmp_path / "cifar-10-binary.tar.gz"
  with tarfile.open(path, "w:gz") as tf:
    for name, part in [("data_batch_1.bin", recs[:4]), ("data_batch_2.bin", recs[4:])]:
      info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
      info.size = part.nbytes
      tf.addfile(info, io.BytesIO(part.tobytes()))
  b = images.Cifar10(config="binary", data_dir=str(tmp_path / "prep"), raw_dir=str(tmp_path))
  got = list(b._binary_examples(str(path), ["data_batch_1.bin", "data_batch_2.bin"]))
  assert [k for k, _ in got] == list(range(7))
  np.testing.assert_array_equal(np.stack([e["image"] for _, e in got]), imgs)
  np.testing.assert_array_equal([e["label"] for _, e in got], labels)


def _plain_sst_rows(path):
  """(label, sentence) rows by plain splitting: header first, label before the tab."""
  lines = [ln.rstrip("\r") for ln in _gunzip(path).decode().split("\n") if ln.strip()]
  return [(int(ln.split("\t")[0]), ln.split("\t", 1)[1].strip()) for ln in lines[1:]]


def test_sst2_rows_and_counts(data_dir, options):
  rows = {s: _plain_sst_rows(data_dir / "sst2" / f"{f}.tsv.gz")
          for s, f in (("train", "train"), ("validation", "dev"), ("test", "test"))}
  assert {s: len(r) for s, r in rows.items()} == {"train": 67_349, "validation": 872,
                                                  "test": 1_821}  # the data README's counts
  assert dict(sentiment.Sst2.SPLIT_SIZES) == {s: len(r) for s, r in rows.items()}
  b = catalog.prepare("sst2", options)
  for split, want in rows.items():
    got = builder.SplitReader(b, split).get(range(SUBSET))
    assert [(int(e["label"]), e["sentence"].decode()) for e in got] == want[:SUBSET]


def test_rt_polarity_alternates_positive_and_negative_lines(data_dir, options):
  pos, neg = ([ln.strip() for ln in _gunzip(data_dir / "rt_polarity" / f"rt-polarity.{k}.gz")
               .decode("latin-1").split("\n") if ln.strip()] for k in ("pos", "neg"))
  assert len(pos) == len(neg) == 5_331
  b = catalog.prepare("rt_polarity", options)
  got = builder.SplitReader(b, "train").get(range(SUBSET))
  for i in range(SUBSET // 2):
    assert (got[2 * i]["sentence"].decode(), got[2 * i]["label"]) == (pos[i], 1)
    assert (got[2 * i + 1]["sentence"].decode(), got[2 * i + 1]["label"]) == (neg[i], 0)


def test_rt_polarity_folds_partition_the_examples():
  folds = [sentiment.rt_polarity_folds(10_662, k) for k in range(10)]
  held = np.concatenate([ev for _, ev in folds])
  assert sorted(held.tolist()) == list(range(10_662))  # each example held out exactly once
  for train, ev in folds:
    assert len(np.intersect1d(train, ev)) == 0 and len(train) + len(ev) == 10_662
    assert len(ev) in (1066, 1067)


def test_multi30k_pairs_are_the_raw_lines(data_dir, options):
  b = catalog.prepare("multi30k", options)
  for split, stem in multi30k.SPLIT_FILES.items():
    lines = {lang: _gunzip(data_dir / "multi30k" / f"{stem}.{lang}.gz").decode().split("\n")
             for lang in ("en", "de")}
    n = multi30k.Multi30k.SPLIT_SIZES[split]
    assert all(len(v) == n + 1 and v[-1] == "" for v in lines.values())  # n lines + final "\n"
    got = builder.SplitReader(b, split).get(range(SUBSET))
    for i in (0, 1, SUBSET - 1):
      assert got[i]["en"].decode() == lines["en"][i].strip()
      assert got[i]["de"].decode() == lines["de"][i].strip()
  assert dict(multi30k.Multi30k.SPLIT_SIZES) == {"train": 29_000, "validation": 1_014,
                                                 "test": 1_000}  # the data README's counts


def test_fast_decoder_equals_tfds_decoder(options):
  """SplitReader parses records itself; TFDS's own NumPy decoding is the reference."""
  for name in ("mnist", "sst2", "multi30k", "etth1", "exchange_rate"):
    b = catalog.prepare(name, options)
    split = next(iter(b.info.splits))
    reference = b.as_data_source(split=split)
    fast = builder.SplitReader(b, split)
    assert fast._decoders is not None
    keys = [0, len(fast) - 1]
    for got, want in zip(fast.get(keys), [reference[k] for k in keys]):
      assert got.keys() == want.keys()
      for k in got:
        np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]))
        assert np.asarray(got[k]).dtype == np.asarray(want[k]).dtype


def test_every_offline_builder_prepares_and_checks_its_sizes(options):
  for name in catalog.OFFLINE:
    b = catalog.prepare(name, options)
    for split, full in b.split_sizes().items():
      assert b.info.splits[split].num_examples == min(full, SUBSET), (name, split)
    assert b.is_prepared() and str(b.data_dir).startswith(str(options.prepared_dir))
  assert "first300" in str(b.data_dir)  # a subset never lands where the full copy goes


# ---------------------------------------------------------------------- failure paths


def _copy_dataset(data_dir, tmp_path, folder):
  dst = tmp_path / "data"
  shutil.copytree(data_dir / folder, dst / folder)
  return dst


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "replace"])
def test_bad_raw_file_is_one_line_error_and_leaves_nothing(data_dir, tmp_path, damage):
  src = _copy_dataset(data_dir, tmp_path, "mnist")
  victim = src / "mnist" / "train-labels-idx1-ubyte.gz"
  data = bytearray(victim.read_bytes())
  if damage == "truncate":
    data = data[:len(data) // 2]
  elif damage == "corrupt":
    data[len(data) // 2] ^= 0xFF
  else:  # a complete, valid gzip of other content
    data = gzip.compress(_gunzip(data_dir / "fashion_mnist" / "train-labels-idx1-ubyte.gz"))
  os.chmod(victim, 0o644)
  victim.write_bytes(bytes(data))
  prep = tmp_path / "prepared"
  opts = builder.DataOptions(data_dir=str(src), prepared_dir=str(prep))
  with pytest.raises(DataError) as e:
    catalog.prepare("mnist", opts)
  msg = str(e.value)
  assert "\n" not in msg
  assert str(victim) in msg and "failed its checksum" in msg
  assert "expected 3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c" in msg
  assert "https://storage.googleapis.com/cvdf-datasets/mnist/train-labels-idx1-ubyte.gz" in msg
  assert not (prep / "seqgen_mnist").exists() and not _no_leftovers(tmp_path)


def test_missing_raw_file_names_the_file_and_the_source(tmp_path):
  opts = builder.DataOptions(data_dir=str(tmp_path), prepared_dir=str(tmp_path / "p"))
  with pytest.raises(DataError, match=r"^MNIST: no file .*mnist/train-images-idx3-ubyte.gz .*"
                                      r"download https://storage.googleapis.com/cvdf-datasets/"
                                      r"mnist/train-images-idx3-ubyte.gz into .*/mnist/, or set "
                                      r"config.data.download=True"):
    catalog.prepare("mnist", opts)
  with pytest.raises(DataError, match=r"data directory .*nowhere .* does not exist"):
    catalog.prepare("mnist", builder.DataOptions(data_dir=str(tmp_path / "nowhere")))
  with pytest.raises(DataError, match=r"JPEG copy of CIFAR-10 has no public download; use the "
                                      r"dataset 'cifar10_official'"):
    catalog.prepare("cifar10", opts)
  assert not (tmp_path / "p").exists()  # nothing prepared, not even the folder


def test_failure_while_writing_removes_what_tfds_created(data_dir, tmp_path, monkeypatch):
  prep = tmp_path / "prepared"
  opts = builder.DataOptions(data_dir=str(data_dir), prepared_dir=str(prep))

  def broken(self, images_file, labels_file):
    yield 0, {"image": np.zeros((28, 28, 1), np.uint8), "label": 0}
    raise OSError("disk full")

  monkeypatch.setattr(images.Mnist, "_examples", broken)
  with pytest.raises(OSError, match="disk full"):
    catalog.prepare("mnist", opts)
  assert not (prep / "seqgen_mnist").exists() and not _no_leftovers(prep)


_KILLED_PREPARE = """
import sys, time
from seqgen_jax.data import builder, images
original = images.Mnist._examples
def slow(self, *files):
  for i, ex in enumerate(original(self, *files)):
    if i == 20:
      sys.__stdout__.write("writing\\n")  # TFDS runs the generator with stdout redirected
      sys.__stdout__.flush()
      time.sleep(120)
    yield ex
images.Mnist._examples = slow
builder.prepare(images.Mnist, builder.DataOptions(data_dir=sys.argv[1], prepared_dir=sys.argv[2],
                                                  max_examples=50))
"""


def test_killed_preparation_is_never_trusted_and_is_cleaned_up(data_dir, tmp_path):
  prep = tmp_path / "prepared"
  proc = subprocess.Popen([sys.executable, "-c", _KILLED_PREPARE, str(data_dir), str(prep)],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
  try:
    while (line := proc.stdout.readline()) and line.strip() != "writing":
      pass  # TFDS prints its own progress lines first
    assert line.strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    proc.kill()
  leftovers = _no_leftovers(prep)
  assert leftovers  # the killed run left its incomplete.* folder behind ...
  opts = builder.DataOptions(data_dir=str(data_dir), prepared_dir=str(prep), max_examples=50)
  b = catalog.prepare("mnist", opts)  # ... which the next run neither reads nor keeps
  assert b.info.splits["train"].num_examples == 50 and not _no_leftovers(prep)
  assert [e["label"] for e in builder.SplitReader(b, "train").get(range(3))] == [5, 0, 4]


def test_prepared_copy_with_wrong_sizes_is_rejected(data_dir, tmp_path):
  prep = tmp_path / "prepared"
  b = catalog.prepare("airline_passengers", builder.DataOptions(
      data_dir=str(data_dir), prepared_dir=str(prep)))
  info_path = b.data_path / "dataset_info.json"
  info = json.loads(info_path.read_text())
  info["splits"][0]["shardLengths"] = ["2"]  # e.g. a copy written by another version
  info_path.write_text(json.dumps(info))
  with pytest.raises(DataError, match=r"has 2 'full' examples, expected 1; delete that directory"):
    catalog.prepare("airline_passengers", builder.DataOptions(
        data_dir=str(data_dir), prepared_dir=str(prep)))


# ---------------------------------------------------------------------- downloads


@pytest.fixture
def http_dir(tmp_path, monkeypatch):
  """A local HTTP server over a temporary folder: (folder, base URL)."""
  import functools
  import http.server
  import threading

  root = tmp_path / "www"
  root.mkdir()
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
  handler.log_message = lambda *a: None
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  monkeypatch.setenv("no_proxy", "127.0.0.1")
  yield root, f"http://127.0.0.1:{server.server_address[1]}/"
  server.shutdown()


def test_download_is_checked_and_renamed_into_place(data_dir, tmp_path, http_dir, monkeypatch):
  www, url = http_dir
  (www / "input.txt").write_bytes(_gunzip(data_dir / "tinyshakespeare" / "input.txt.gz"))
  spec = shakespeare.RAW_FILES["input"]
  monkeypatch.setitem(shakespeare.RAW_FILES, "input",
                      raw.RawFile(**{**spec.__dict__, "url": url + "input.txt"}))
  empty = tmp_path / "fresh"
  opts = builder.DataOptions(data_dir=str(empty), prepared_dir=str(tmp_path / "p"),
                             download=True)
  data = shakespeare.load(opts, seq_len=8, batch_size=2, eval_batch_size=2, seed=0, eval_seed=1)
  assert (empty / "tinyshakespeare" / "input.txt").is_file()
  assert len(data.val_text) == 111_540 and data.vocab_size == 65
  # A corrupted transfer: one-line error, and no partial file where the next run would look.
  (www / "input.txt").write_bytes(b"To be, or not to be")
  (empty / "tinyshakespeare" / "input.txt").unlink()
  with pytest.raises(DataError, match=r"failed its checksum .*expected 86c4e6aa"):
    shakespeare.load(opts, seq_len=8, batch_size=2, eval_batch_size=2, seed=0, eval_seed=1)
  assert os.listdir(empty / "tinyshakespeare") == []


def test_download_in_another_layout_is_checked_by_its_rows(data_dir, tmp_path, http_dir,
                                                           monkeypatch):
  """GLUE's SST-2.zip puts the label last: the file digest differs, the rows must not."""
  www, url = http_dir
  rows = _plain_sst_rows(data_dir / "sst2" / "dev.tsv.gz")
  glue = "sentence\tlabel\n" + "".join(f"{s} \t{lab}\n" for lab, s in rows)
  with zipfile.ZipFile(www / "SST-2.zip", "w") as zf:
    zf.writestr("SST-2/dev.tsv", glue)
  spec = raw.RawFile(**{**sentiment.SST2_RAW["validation"].__dict__, "url": url + "SST-2.zip"})
  got = raw.locate("SST-2", spec, str(tmp_path / "d"), "test", download=True)
  assert got.path.endswith("sst2/SST-2.zip") and got.member == "SST-2/dev.tsv"
  assert sentiment.parse_sst_rows(got.read_bytes()) == rows
  with zipfile.ZipFile(www / "SST-2.zip", "w") as zf:  # one label flipped
    zf.writestr("SST-2/dev.tsv", glue.replace("\t0\n", "\t1\n", 1))
  os.remove(got.path)
  with pytest.raises(DataError, match="failed its checksum"):
    raw.locate("SST-2", spec, str(tmp_path / "d"), "test", download=True)


def test_archive_member_download(data_dir, tmp_path, http_dir):
  """rt-polarity's canonical tarball: members are checked against the offline content."""
  www, url = http_dir
  with tarfile.open(www / "rt.tar.gz", "w:gz") as tf:
    for k in ("pos", "neg"):
      data = _gunzip(data_dir / "rt_polarity" / f"rt-polarity.{k}.gz")
      info = tarfile.TarInfo(f"rt-polaritydata/rt-polarity.{k}")
      info.size = len(data)
      tf.addfile(info, io.BytesIO(data))
  for k in ("pos", "neg"):
    spec = raw.RawFile(**{**sentiment.RT_RAW[k].__dict__, "url": url + "rt.tar.gz"})
    loc = raw.locate("rt-polarity", spec, str(tmp_path / "d"), "test", download=True)
    assert hashlib.sha256(loc.read_bytes()).hexdigest() == spec.content_sha256


# ---------------------------------------------------------------------- mock data


MOCK_N = 12


def _mock_builder(name, tmp_path):
  entry = catalog.DATASETS[name]
  b = builder.make_builder(entry.builder, builder.DataOptions(
      data_dir=str(tmp_path / "no_raw_files"), prepared_dir=str(tmp_path / "p")), entry.config)
  b.download_and_prepare()  # a no-op under mock_data
  return b


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar10_official"])
def test_image_loader_on_mock_data(name, tmp_path):
  with tfds.testing.mock_data(num_examples=MOCK_N):
    data = images.from_builder(_mock_builder(name, tmp_path), batch_size=8, eval_batch_size=8,
                               seed=0)
    batch = data.train.batch(0, slice(0, 8))
    h, w, c = data.image_shape
    assert batch["image"].shape == (8, h, w, c) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32 and batch["weight"].dtype == np.float32
    assert data.eval_batches == 2
    last = data.eval.batch(1, slice(0, 8))
    np.testing.assert_array_equal(last["weight"], [1, 1, 1, 1, 0, 0, 0, 0])


@pytest.mark.parametrize("name", ["sst2", "rt_polarity"])
def test_text_classification_loader_on_mock_data(name, tmp_path):
  with tfds.testing.mock_data(num_examples=MOCK_N):
    data = sentiment.from_builder(_mock_builder(name, tmp_path), seq_len=6, batch_size=4,
                                  eval_batch_size=4, seed=0, eval_split="test")
    batch = data.train.batch(0, slice(0, 4))
  assert set(batch) == {"tokens", "mask", "label", "weight"}
  assert batch["tokens"].shape == batch["mask"].shape == (4, 6)
  assert batch["tokens"].dtype == np.int32 and batch["mask"].dtype == bool
  assert np.all(batch["tokens"][~batch["mask"]] == 0) and data.num_classes == 2


def test_translation_loader_on_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=MOCK_N):
    data = multi30k.from_builder(_mock_builder("multi30k", tmp_path), batch_size=4,
                                 eval_batch_size=8, seed=0, src_len=12, tgt_len=10,
                                 vocab_size=300)
    batch = data.train.batch(0, slice(0, 4))
  assert {k: v.shape for k, v in batch.items()} == {
      "src": (4, 12), "src_mask": (4, 12), "tgt_in": (4, 10), "tgt_out": (4, 10),
      "tgt_mask": (4, 10), "weight": (4,)}
  assert np.all(batch["tgt_in"][:, 0] == data.tokenizer.bos_id)
  assert len(data.references) == MOCK_N and data.eval_references(1, slice(0, 8))[4:] == [None] * 4


def test_char_lm_and_series_builders_on_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=1):
    b = _mock_builder("tinyshakespeare", tmp_path)
    text = builder.SplitReader(b, "train").get([0])[0]["text"]
    assert isinstance(text, bytes)
    for name in ("etth1", "exchange_rate"):
      ex = builder.SplitReader(_mock_builder(name, tmp_path), "full").get([0])[0]
      assert ex["values"].ndim == 2 and ex["values"].dtype == np.float64
      assert ex["values"].shape[1] == len(timeseries.SERIES[name].columns)
      assert ex["time"].ndim == 1 and ex["time"].dtype == np.int64  # (lengths are random)
      # Random short series: ETT's fixed borders overrun them, the 70/10/20 cut is too short.
      with pytest.raises((DataError, ConfigError), match=r"series has \d+ rows but the train "
                                                         r"split needs|too short for look-back"):
        timeseries.from_builder(_mock_builder(name, tmp_path), name, lookback=96, horizon=96,
                                batch_size=2, eval_batch_size=2, seed=0)


# ---------------------------------------------------------------------- full preparations


@pytest.mark.slow
@pytest.mark.parametrize("name", catalog.OFFLINE)
def test_full_preparation_has_the_official_sizes(name, data_dir, prepared_dir):
  b = catalog.prepare(name, builder.DataOptions(data_dir=str(data_dir),
                                                prepared_dir=str(prepared_dir)))
  for split, n in b.split_sizes().items():
    assert b.info.splits[split].num_examples == n
  assert {"mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000, "sst2": 67_349,
          "multi30k": 29_000, "rt_polarity": 10_662}.get(name, 1) == (
              b.info.splits["train"].num_examples if "train" in b.info.splits else 1)
