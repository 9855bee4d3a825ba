"""Every dataset by name: its TFDS builder, builder config and loader module.

Family tasks call the loader modules directly (``images.load``, ``sentiment.load``,
``multi30k.load``, ``timeseries.load``, ``shakespeare.load``); this table is for code that walks
all datasets (the throughput benchmark, the tests).
"""

from __future__ import annotations

import dataclasses

from seqgen_jax.data import builder, images, multi30k, sentiment, shakespeare, timeseries


@dataclasses.dataclass(frozen=True)
class Entry:
  builder: type[builder.SeqgenBuilder]
  config: str | None
  kind: str  # "char_lm", "images", "translation", "text_classification" or "forecasting"


DATASETS: dict[str, Entry] = {
    "tinyshakespeare": Entry(shakespeare.TinyShakespeare, None, "char_lm"),
    "mnist": Entry(images.Mnist, None, "images"),
    "fashion_mnist": Entry(images.FashionMnist, None, "images"),
    "cifar10": Entry(images.Cifar10, "jpeg", "images"),
    "cifar10_official": Entry(images.Cifar10, "binary", "images"),
    "multi30k": Entry(multi30k.Multi30k, None, "translation"),
    "sst2": Entry(sentiment.Sst2, None, "text_classification"),
    "rt_polarity": Entry(sentiment.RtPolarity, None, "text_classification"),
    **{name: Entry(timeseries.FORECAST_DATASETS.get(name), name, "forecasting")
       for name in timeseries.SERIES},
}

# Datasets whose raw files are in the offline data directory (all but the official CIFAR-10
# binary release, which is only downloaded).
OFFLINE = [name for name in DATASETS if name != "cifar10_official"]


def prepare(name: str, options: builder.DataOptions) -> builder.SeqgenBuilder:
  """Checks the raw files of dataset ``name`` and prepares its TFDS copy if needed."""
  entry = DATASETS[name]
  return builder.prepare(entry.builder, options, entry.config)
