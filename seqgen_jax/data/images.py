"""MNIST, Fashion-MNIST and CIFAR-10: TFDS builders and the image loader.

Official train / test splits. Images are stored as raw ``uint8 [H, W, C]`` tensors:
``tfds.features.Image`` would PNG-encode them with TensorFlow, which is not installed at run
time, and raw bytes also read faster. Batches are
``{"image": uint8[B, H, W, C], "label": int32[B], "weight": float32[B]}``.

CIFAR-10 comes in two variants of one builder:
  * ``jpeg`` (dataset name ``cifar10``): the offline JPEG copy (quality about 75, lossy; the
    original order is lost, so examples are ordered by file number, then class, which keeps any
    prefix class-balanced). There is no public download of this copy.
  * ``binary`` (dataset name ``cifar10_official``): the official CIFAR-10 binary release, in its
    original order, downloaded from the University of Toronto when missing.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import tarfile
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from seqgen_jax.data import builder as builder_lib
from seqgen_jax.data import pipeline, raw
from seqgen_jax.errors import DataError
from seqgen_jax.registry import Registry

_MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_CIFAR_BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"

# (file, sha256 of the offline copy, sha256 of its content, sha256 of the canonical download)
_MNIST_FILES = [
    ("train-images-idx3-ubyte.gz",
     "c946c58ddc26a26c01a6d50c9c917ad9d049a2150bfa256b19f99e7e1e7b4ba0",
     "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
     "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    ("train-labels-idx1-ubyte.gz",
     "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
     "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
     "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    ("t10k-images-idx3-ubyte.gz",
     "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
     "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
     "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    ("t10k-labels-idx1-ubyte.gz",
     "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
     "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
     "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
]
_FASHION_FILES = [
    ("train-images-idx3-ubyte.gz",
     "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
     "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
     "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    ("train-labels-idx1-ubyte.gz",
     "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
     "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
     "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    ("t10k-images-idx3-ubyte.gz",
     "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
     "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
     "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    ("t10k-labels-idx1-ubyte.gz",
     "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
     "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
     "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
]

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


def _idx_raw_files(folder: str, files, url: str) -> dict[str, raw.RawFile]:
  return {name.split("-")[0] + "_" + name.split("-")[1]: raw.RawFile(
      path=f"{folder}/{name}", sha256=sha, content_sha256=content, url=url + name,
      url_sha256=url_sha) for name, sha, content, url_sha in files}


def read_idx(data: bytes) -> np.ndarray:
  """Parses an IDX file (the MNIST format: magic, big-endian dims, then uint8 data)."""
  if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
    raise DataError("not an IDX file of unsigned bytes")
  ndim = data[3]
  dims = np.frombuffer(data, ">u4", count=ndim, offset=4).astype(int)
  body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(dims)):
    raise DataError(f"IDX file holds {body.size} bytes, its header says {tuple(dims)}")
  return body.reshape(dims)


def iter_tar_files(archive: bytes) -> Iterator[tuple[str, bytes]]:
  """(name, content) of each regular file in an uncompressed POSIX (ustar) tar archive.

  A strict reader for the pinned CIFAR-10 JPEG archive: about 20 times faster than ``tarfile``
  on its 60,000 small members, and it stops with a DataError at anything it does not handle
  (a bad header checksum, PAX or GNU long-name entries, links).
  """
  off = 0
  while off + 512 <= len(archive):
    header = archive[off:off + 512]
    if header == bytes(512):
      return  # end-of-archive marker
    stored = int(header[148:156].split(b"\0")[0].strip() or b"0", 8)
    if sum(header[:148]) + 8 * 32 + sum(header[156:]) != stored:
      raise DataError(f"tar header at byte {off} fails its checksum")
    kind = header[156:157]
    if kind not in (b"0", b"\0", b"5"):
      raise DataError(f"tar entry type {kind!r} at byte {off} is not supported")
    name = header[:100].split(b"\0")[0].decode("utf-8")
    if header[257:262] == b"ustar" and header[345]:
      name = header[345:500].split(b"\0")[0].decode("utf-8") + "/" + name
    size = int(header[124:136].split(b"\0")[0].strip() or b"0", 8)
    if kind != b"5":
      yield name, archive[off + 512:off + 512 + size]
    off += 512 + -(-size // 512) * 512
  raise DataError("tar archive ends without its end-of-archive marker")


def _image_features(shape, class_names) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      # uint8 bytes rather than tfds.features.Image, which needs TensorFlow to encode PNGs.
      "image": tfds.features.Tensor(shape=shape, dtype=np.uint8,
                                    encoding=tfds.features.Encoding.BYTES),
      "label": tfds.features.ClassLabel(names=class_names),
  })


class _IdxBuilder(builder_lib.SeqgenBuilder, skip_registration=True):
  """Shared by MNIST and Fashion-MNIST (same IDX layout, 28x28 grey, 60,000 / 10,000)."""

  CLASSES: list[str] = []
  SPLIT_SIZES = {"train": 60_000, "test": 10_000}

  def _features(self):
    return _image_features((28, 28, 1), self.CLASSES)

  def _splits(self, located):
    return {split: self._examples(located[f"{prefix}_images"], located[f"{prefix}_labels"])
            for split, prefix in (("train", "train"), ("test", "t10k"))}

  def _examples(self, images_file, labels_file):
    images = read_idx(images_file.read_bytes())
    labels = read_idx(labels_file.read_bytes())
    if images.shape[0] != labels.shape[0]:
      raise DataError(f"{self.DATASET}: {images.shape[0]} images but {labels.shape[0]} labels")
    for i in range(images.shape[0]):
      yield i, {"image": images[i, :, :, None], "label": int(labels[i])}


class Mnist(_IdxBuilder):
  """MNIST handwritten digits (LeCun et al.), official split."""

  name = "seqgen_mnist"
  DATASET = "MNIST"
  HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"
  CLASSES = MNIST_CLASSES

  def raw_files(self):
    return _idx_raw_files("mnist", _MNIST_FILES, _MNIST_URL)


class FashionMnist(_IdxBuilder):
  """Fashion-MNIST (Zalando, MIT licence), official split."""

  name = "seqgen_fashion_mnist"
  DATASET = "Fashion-MNIST"
  HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"
  CLASSES = FASHION_CLASSES

  def raw_files(self):
    return _idx_raw_files("fashion_mnist", _FASHION_FILES, _FASHION_URL)


_CIFAR_RAW = {
    "jpeg": raw.RawFile(
        path="cifar10_jpg/cifar10_jpg.tar.gz",
        sha256="58c58e3af3ec7ed2054f439f35ad3c83dc1ab019f4af6037f60612ea098c8fa1",
        how_to_get=("this JPEG copy of CIFAR-10 has no public download; use the dataset "
                    f"'cifar10_official' (the binary release, {_CIFAR_BINARY_URL}) instead")),
    "binary": raw.RawFile(
        path="cifar10/cifar-10-binary.tar.gz",
        sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        url=_CIFAR_BINARY_URL),
}


class Cifar10(builder_lib.SeqgenBuilder):
  """CIFAR-10 (Krizhevsky 2009), 32x32 RGB, official 50,000 / 10,000 split."""

  name = "seqgen_cifar10"
  DATASET = "CIFAR-10"
  HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="jpeg", description="offline JPEG copy (lossy)"),
      tfds.core.BuilderConfig(name="binary", description="official binary release"),
  ]
  SPLIT_SIZES = {"train": 50_000, "test": 10_000}

  def raw_files(self):
    return {"archive": _CIFAR_RAW[self.builder_config.name]}

  def _features(self):
    return _image_features((32, 32, 3), CIFAR10_CLASSES)

  def _splits(self, located):
    path = located["archive"].path
    if self.builder_config.name == "jpeg":
      members = self._read_jpeg_members(path)
      return {s: self._jpeg_examples(members[s]) for s in ("train", "test")}
    return {"train": self._binary_examples(path, [f"data_batch_{i}.bin" for i in range(1, 6)]),
            "test": self._binary_examples(path, ["test_batch.bin"])}

  def _read_jpeg_members(self, path: str) -> dict[str, list[tuple[int, int, bytes]]]:
    """split -> [(file number, label, JPEG bytes)], sorted by (number, label)."""
    found = {"train": [], "test": []}
    with gzip.open(path, "rb") as f:
      archive = f.read()
    for name, data in iter_tar_files(archive):
      parts = name.split("/")
      if len(parts) != 3 or parts[0] not in found or not parts[2].endswith(".jpg"):
        continue
      if parts[1] not in CIFAR10_CLASSES:
        raise DataError(f"CIFAR-10: unknown class folder {parts[0]}/{parts[1]} in {path}")
      found[parts[0]].append((int(parts[2][:-4]), CIFAR10_CLASSES.index(parts[1]), data))
    for items in found.values():
      items.sort(key=lambda t: (t[0], t[1]))
    return found

  def _jpeg_examples(self, items: list[tuple[int, int, bytes]]):
    for key, (_, label, data) in enumerate(items):
      with Image.open(io.BytesIO(data), formats=("JPEG",)) as im:
        image = np.asarray(im.convert("RGB"), np.uint8)
      yield key, {"image": image, "label": label}

  def _binary_examples(self, path: str, names: list[str]):
    """The official format: records of 1 label byte + 3,072 bytes (R, G, B planes of 32x32)."""
    key = 0
    with tarfile.open(path) as tf:
      members = {os.path.basename(m.name): m for m in tf if m.isfile()}
      for name in names:
        if name not in members:
          raise DataError(f"CIFAR-10: {path} has no member {name}")
        data = np.frombuffer(tf.extractfile(members[name]).read(), np.uint8).reshape(-1, 3073)
        for rec in data:
          yield key, {"image": rec[1:].reshape(3, 32, 32).transpose(1, 2, 0),
                      "label": int(rec[0])}
          key += 1


# ---------------------------------------------------------------------- loader


@dataclasses.dataclass
class ImageData:
  """Train / eval sources and what a model needs to know about the images."""

  train: pipeline.ExampleSource
  eval: pipeline.ExampleSource
  num_classes: int
  class_names: list[str]
  image_shape: tuple[int, int, int]

  @property
  def eval_batches(self) -> int:
    """Batches in one pass over the eval split (the last one padded with weight 0)."""
    return self.eval.num_batches


IMAGE_DATASETS: Registry[tuple[type[builder_lib.SeqgenBuilder], str | None]] = Registry(
    "image dataset")
IMAGE_DATASETS.register("mnist")((Mnist, None))
IMAGE_DATASETS.register("fashion_mnist")((FashionMnist, None))
IMAGE_DATASETS.register("cifar10")((Cifar10, "jpeg"))
IMAGE_DATASETS.register("cifar10_official")((Cifar10, "binary"))


def collate(examples: list[dict], weight: np.ndarray) -> pipeline.Batch:
  return {"image": np.stack([e["image"] for e in examples]).astype(np.uint8),
          "label": np.asarray([e["label"] for e in examples], np.int32),
          "weight": np.asarray(weight, np.float32)}


def from_builder(b: tfds.core.DatasetBuilder, *, batch_size: int, eval_batch_size: int,
                 seed: int, eval_split: str = "test", shuffle: bool = True) -> ImageData:
  """Sources over a prepared (or mocked) image builder."""
  train = builder_lib.SplitReader(b, "train")
  ev = builder_lib.SplitReader(b, eval_split)
  label = b.info.features["label"]
  return ImageData(
      train=pipeline.ExampleSource(
          train, pipeline.ShuffledSampler(len(train), batch_size, seed, shuffle=shuffle), collate),
      eval=pipeline.ExampleSource(ev, pipeline.EvalSampler(len(ev), eval_batch_size), collate),
      num_classes=label.num_classes, class_names=list(label.names),
      image_shape=tuple(b.info.features["image"].shape))


def load(name: str, options: builder_lib.DataOptions, *, batch_size: int, eval_batch_size: int,
         seed: int, eval_split: str = "test") -> ImageData:
  """Prepares image dataset ``name`` if needed; shuffled train and exact-once eval sources."""
  cls, config = IMAGE_DATASETS.get(name)
  b = builder_lib.prepare(cls, options, config)
  return from_builder(b, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
                      eval_split=eval_split)
