"""Time series: ETTh1 / ETTh2 and the small classic series; TFDS builders and the forecasting
loader.

Each series is stored whole, as one example ``{"values": float64[N, F], "time": int64[N]}``
(``time``: seconds since 1970-01-01 of each row's timestamp as written in the file, or the row
number for ``exchange_rate``, whose file has no dates), because the task-standard splits depend
on the look-back length. The loader cuts them as the Informer / Autoformer code does:

* ETT (``etth1``, ``etth2``; 12 / 4 / 4 months of hours, the last 4 months of the file unused):
  train rows [0, 8640), validation [8640 - L, 11520), test [11520 - L, 14400) for look-back L.
* the others (Autoformer's ``Dataset_Custom``): the first 70% train, the last 20% test, the rest
  validation, each evaluation split starting L rows early.

Every variable is standardised with the mean and standard deviation (ddof 0) of the training
rows (``Scaler``, saved next to the checkpoint). Windows: ``x`` = L rows, ``y`` = the next H
rows; all variables in and out (the "M" setting) unless ``target_only`` ("S": the target only).
Batches: ``{"x": float32[B, L, F], "y": float32[B, H, F], "weight": float32[B]}``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json

import numpy as np
import tensorflow_datasets as tfds

from seqgen_jax.data import builder as builder_lib
from seqgen_jax.data import pipeline, raw
from seqgen_jax.errors import ConfigError, DataError
from seqgen_jax.registry import Registry

ETT_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
ETT_MONTH_HOURS = 30 * 24
_ETT_URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/"
_BROWNLEE_URL = "https://raw.githubusercontent.com/jbrownlee/Datasets/master/"
_LAI_URL = ("https://raw.githubusercontent.com/laiguokun/multivariate-time-series-data/master/"
            "exchange_rate/exchange_rate.txt.gz")


@dataclasses.dataclass(frozen=True)
class Series:
  """One series file: its raw file, variable names, target and whether rows carry dates."""

  raw_file: raw.RawFile
  columns: tuple[str, ...]
  target: str
  dated: bool = True


SERIES = {
    "etth1": Series(raw.RawFile(
        path="ett/ETTh1.csv.gz",
        sha256="3171b6f191903e6fd7ffce92da7efb78d11bc3046f0b1d2981ff037355647996",
        content_sha256="f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
        url=_ETT_URL + "ETTh1.csv", download_as="ett/ETTh1.csv"), tuple(ETT_COLUMNS), "OT"),
    "etth2": Series(raw.RawFile(
        path="ett/ETTh2.csv.gz",
        sha256="d100fe8d6c1440b7a771c9f5baf7bb3423f72be2c77cf3110717fb5c4cb4fa82",
        content_sha256="a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
        url=_ETT_URL + "ETTh2.csv", download_as="ett/ETTh2.csv"), tuple(ETT_COLUMNS), "OT"),
    "airline_passengers": Series(raw.RawFile(
        path="ts_small/airline-passengers.csv.gz",
        sha256="fcbfe9cafb11d2d649cb091e51ba6c657dfd1942f1d125f9a79cbe5a4e42318c",
        content_sha256="8cb51be753a718d9be5d76d7e238cc224792754676adc21faa59e954b0201621",
        url=_BROWNLEE_URL + "airline-passengers.csv",
        download_as="ts_small/airline-passengers.csv"), ("Passengers",), "Passengers"),
    "daily_min_temperatures": Series(raw.RawFile(
        path="ts_small/daily-min-temperatures.csv.gz",
        sha256="d89463675f685a3c861fe14c6d1c1958f0d1125c77d0f44756e60230059a3420",
        content_sha256="8b9de63ed6789492bf497625e7f9beb96a63d367b4b0a21754006f749fa5e5da",
        url=_BROWNLEE_URL + "daily-min-temperatures.csv",
        download_as="ts_small/daily-min-temperatures.csv"), ("Temp",), "Temp"),
    "monthly_sunspots": Series(raw.RawFile(
        path="ts_small/monthly-sunspots.csv.gz",
        sha256="df6ff68836d81987a941f012bc7577633a7b820b4923d52e20aff133966076b2",
        content_sha256="c4ec8cc57d9f6fb6ecdb3e1f37f25b6f4badd5124c55931052b0cd2fc3bc71f3",
        url=_BROWNLEE_URL + "monthly-sunspots.csv",
        download_as="ts_small/monthly-sunspots.csv"), ("Sunspots",), "Sunspots"),
    "exchange_rate": Series(raw.RawFile(
        path="ts_small/exchange_rate.txt.gz",
        sha256="6a4fbb561dcdee43f071a83badbeec9223a335552278348656738b556f1c2e9d",
        content_sha256="0127465b51e3cd3c360f8eb2be30cfd294689a2a55903eb8245aafc396626c7f",
        url=_LAI_URL), tuple(f"rate{i}" for i in range(8)), "rate7", dated=False),
}
# Expected row counts (a check on the parse, not only on the bytes).
SERIES_ROWS = {"etth1": 17_420, "etth2": 17_420, "airline_passengers": 144,
               "daily_min_temperatures": 3_650, "monthly_sunspots": 2_820, "exchange_rate": 7_588}


def parse_series(content: bytes, series: Series) -> tuple[np.ndarray, np.ndarray]:
  """(values float64 [N, F], time int64 [N]) from a CSV with a date column, or a bare CSV."""
  rows = [r for r in csv.reader(io.StringIO(content.decode("utf-8"))) if r]
  if not series.dated:
    values = np.asarray(rows, np.float64)
    return values, np.arange(len(values), dtype=np.int64)
  header, body = rows[0], rows[1:]
  if tuple(h.strip() for h in header[1:]) != series.columns:
    raise DataError(f"unexpected columns {header[1:]}; expected {list(series.columns)}")
  time = np.asarray([r[0].strip() for r in body], "datetime64[s]").astype(np.int64)
  values = np.asarray([r[1:] for r in body], np.float64)
  return values, time


class _SeriesBuilder(builder_lib.SeqgenBuilder, skip_registration=True):
  """One config per series; a single split ``full`` holding the whole series."""

  SPLIT_SIZES = {"full": 1}

  @property
  def series(self) -> Series:
    return SERIES[self.builder_config.name]

  def raw_files(self):
    return {"series": self.series.raw_file}

  def _features(self):
    f = len(self.series.columns)
    return tfds.features.FeaturesDict({
        "values": tfds.features.Tensor(shape=(None, f), dtype=np.float64,
                                       encoding=tfds.features.Encoding.BYTES),
        "time": tfds.features.Tensor(shape=(None,), dtype=np.int64,
                                     encoding=tfds.features.Encoding.BYTES),
    })

  def _metadata(self):
    s = self.series
    return {"columns": list(s.columns), "target": s.target,
            "time": "seconds since 1970-01-01" if s.dated else "row number (no dates in file)"}

  def _splits(self, located):
    values, time = parse_series(located["series"].read_bytes(), self.series)
    want = SERIES_ROWS[self.builder_config.name]
    if len(values) != want:
      raise DataError(f"{self.DATASET} {self.builder_config.name}: parsed {len(values)} rows, "
                      f"expected {want}")
    return {"full": iter([(0, {"values": values, "time": time})])}


class Ett(_SeriesBuilder):
  """ETTh1 / ETTh2: hourly electricity-transformer load and oil temperature, 7 variables."""

  name = "seqgen_ett"
  DATASET = "ETT"
  HOMEPAGE = "https://github.com/zhouhaoyi/ETDataset"
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in ("etth1", "etth2")]


class TsSmall(_SeriesBuilder):
  """Small classic series: airline passengers, Melbourne daily minimum temperatures, monthly
  sunspots, and the 8 daily exchange rates of LSTNet."""

  name = "seqgen_ts_small"
  DATASET = "small time series"
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in
                     ("airline_passengers", "daily_min_temperatures", "monthly_sunspots",
                      "exchange_rate")]


FORECAST_DATASETS: Registry[type[_SeriesBuilder]] = Registry("forecasting dataset")
for _name in SERIES:
  FORECAST_DATASETS.register(_name)(Ett if _name.startswith("ett") else TsSmall)


# ---------------------------------------------------------------------- splits and scaling


def split_borders(name: str, num_rows: int, lookback: int) -> dict[str, tuple[int, int]]:
  """Row ranges [start, stop) of train / validation / test for look-back ``lookback``."""
  if name.startswith("ett"):
    m = ETT_MONTH_HOURS
    return {"train": (0, 12 * m), "validation": (12 * m - lookback, 16 * m),
            "test": (16 * m - lookback, 20 * m)}
  n_train, n_test = int(num_rows * 0.7), int(num_rows * 0.2)
  n_val = num_rows - n_train - n_test
  return {"train": (0, n_train), "validation": (n_train - lookback, n_train + n_val),
          "test": (num_rows - n_test - lookback, num_rows)}


@dataclasses.dataclass
class Scaler:
  """Per-variable standardisation with training statistics (mean, std with ddof 0)."""

  mean: np.ndarray
  std: np.ndarray
  columns: list[str]

  @classmethod
  def fit(cls, values: np.ndarray, columns: list[str]) -> Scaler:
    std = values.std(axis=0)
    return cls(values.mean(axis=0), np.where(std > 0, std, 1.0), list(columns))

  def transform(self, x: np.ndarray) -> np.ndarray:
    return (x - self.mean) / self.std

  def inverse_transform(self, x: np.ndarray) -> np.ndarray:
    return x * self.std + self.mean

  def save(self, path: str) -> None:
    with open(path, "w") as f:
      json.dump({"columns": self.columns, "mean": self.mean.tolist(),
                 "std": self.std.tolist()}, f)

  @classmethod
  def load(cls, path: str) -> Scaler:
    with open(path) as f:
      d = json.load(f)
    return cls(np.asarray(d["mean"]), np.asarray(d["std"]), d["columns"])


class WindowSource:
  """Look-back / horizon windows from rows [start, stop) of a (scaled) series."""

  def __init__(self, series_NF: np.ndarray, start: int, stop: int, lookback: int, horizon: int,
               sampler_for):
    self.series_NF = series_NF
    self.lookback, self.horizon = lookback, horizon
    self.starts = np.arange(start, stop - lookback - horizon + 1)
    self.sampler = sampler_for(len(self.starts))
    self.global_batch_size = self.sampler.global_batch_size
    self.num_examples = len(self.starts)
    self.num_batches = getattr(self.sampler, "num_batches", None)

  def example_ids(self, index: int, rows: slice) -> tuple[np.ndarray, np.ndarray]:
    return self.sampler.sample(index, rows)

  def batch(self, index: int, rows: slice) -> pipeline.Batch:
    ids, weight = self.sampler.sample(index, rows)
    s = self.starts[ids][:, None]
    x = self.series_NF[s + np.arange(self.lookback)]
    y = self.series_NF[s + self.lookback + np.arange(self.horizon)]
    return {"x": x.astype(np.float32), "y": y.astype(np.float32),
            "weight": np.asarray(weight, np.float32)}


@dataclasses.dataclass
class ForecastData:
  """Train / validation / test windows, the scaler and the variable names."""

  train: WindowSource
  eval: WindowSource
  test: WindowSource
  scaler: Scaler
  columns: list[str]
  lookback: int
  horizon: int
  borders: dict[str, tuple[int, int]]
  time: np.ndarray  # per row of the whole series

  @property
  def num_features(self) -> int:
    return len(self.columns)

  @property
  def eval_batches(self) -> int:
    return self.eval.num_batches


def from_builder(b: tfds.core.DatasetBuilder, name: str, *, lookback: int, horizon: int,
                 batch_size: int, eval_batch_size: int, seed: int, eval_split: str = "validation",
                 target_only: bool = False) -> ForecastData:
  """Windows over a prepared (or mocked) series builder."""
  example = builder_lib.SplitReader(b, "full").get([0])[0]
  values, time = np.asarray(example["values"], np.float64), np.asarray(example["time"])
  columns = list(SERIES[name].columns)
  if target_only:
    j = columns.index(SERIES[name].target)
    values, columns = values[:, j:j + 1], [columns[j]]
  if eval_split not in ("validation", "test"):
    raise ConfigError(f"{name}: unknown eval split '{eval_split}'; choose one of: test, "
                      f"validation")
  borders = split_borders(name, len(values), lookback)
  for split, (start, stop) in borders.items():
    if stop > len(values):
      raise DataError(f"{name}: the series has {len(values)} rows but the {split} split needs "
                      f"rows {start}..{stop}")
    if stop - start < lookback + horizon or start < 0:
      raise ConfigError(
          f"{name}: the {split} split (rows {start}..{stop}) is too short for look-back "
          f"{lookback} + horizon {horizon}; use shorter windows")
  scaler = Scaler.fit(values[borders["train"][0]:borders["train"][1]], columns)
  scaled = scaler.transform(values)

  def make(split, sampler_for):
    return WindowSource(scaled, *borders[split], lookback, horizon, sampler_for)

  train = make("train", lambda n: pipeline.ShuffledSampler(n, batch_size, seed))
  evals = {s: make(s, lambda n: pipeline.EvalSampler(n, eval_batch_size))
           for s in ("validation", "test")}
  return ForecastData(train=train, eval=evals[eval_split], test=evals["test"], scaler=scaler,
                      columns=columns, lookback=lookback, horizon=horizon, borders=borders,
                      time=time)


def load(name: str, options: builder_lib.DataOptions, *, lookback: int = 96, horizon: int = 96,
         batch_size: int, eval_batch_size: int, seed: int, eval_split: str = "validation",
         target_only: bool = False) -> ForecastData:
  """Prepares series ``name`` if needed; standardised look-back / horizon windows."""
  b = builder_lib.prepare(FORECAST_DATASETS.get(name), options, config=name)
  return from_builder(b, name, lookback=lookback, horizon=horizon, batch_size=batch_size,
                      eval_batch_size=eval_batch_size, seed=seed, eval_split=eval_split,
                      target_only=target_only)
