"""Preparation time and read throughput of every dataset's TFDS builder and input pipeline.

  python -m experiments.bench.data_throughput --data_dir=../shared/data
  python -m experiments.bench.data_throughput --data_dir=../shared/data --datasets=mnist,sst2
  python -m experiments.bench.data_throughput --data_dir=../shared/data --out=/tmp/bench

For each dataset, on this machine's CPU:
  * prep s: full preparation (raw-file checks, parsing, TFDS array_record writing) into a fresh
    directory, median of ``--repeats`` runs after one untimed run (first touch: imports, file
    cache, lazy initialisation);
  * reader ex/s: random-access reads of ``--batch`` shuffled record keys through
    ``SplitReader`` (raw record bytes parsed by our decoder), and, in the same run, through the
    TFDS data source's own NumPy decoding (the peer); ``x tfds`` is their ratio;
  * batch ex/s: whole training batches from the loader's StepSource (read, tokenize, pad,
    collate; windows for the series and Tiny Shakespeare, whose splits are single records), the
    first batch excluded.
Throughputs are medians over ``--repeats`` timings of ``--batches`` batches each. ``--out``
writes the JSON record (experiments/bench/common.py): FILE.json, or a folder.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time

import numpy as np
from absl import app, flags, logging

from experiments import cli
from experiments.bench import common
from seqgen_jax.data import builder, catalog, images, multi30k, sentiment, shakespeare, timeseries

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Raw data directory (else $SEQGEN_DATA_DIR).")
_DATASETS = flags.DEFINE_list("datasets", catalog.OFFLINE, "Datasets to measure.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats (after one untimed run).")
_BATCH = flags.DEFINE_integer("batch", 128, "Examples per batch.")
_BATCHES = flags.DEFINE_integer("batches", 20, "Batches per timing.")
_OUT = flags.DEFINE_string("out", "", "Write the JSON record here (FILE.json, or a folder).")


def _train_source(name: str, options: builder.DataOptions, batch: int):
  kind = catalog.DATASETS[name].kind
  kw = dict(batch_size=batch, eval_batch_size=batch, seed=0)
  if kind == "images":
    return images.load(name, options, **kw).train
  if kind == "text_classification":
    return sentiment.load(name, options, seq_len=64, **kw).train
  if kind == "translation":
    return multi30k.load(options, **kw).train
  if kind == "char_lm":
    return shakespeare.load(options, seq_len=256, eval_seed=1, **kw).train
  lookback, horizon = (24, 12) if name == "airline_passengers" else (96, 96)
  return timeseries.load(name, options, lookback=lookback, horizon=horizon, **kw).train


def _time(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def _measure(name: str, data_dir: str | None, repeats: int, batch: int, batches: int) -> dict:
  prep_times, keep = [], None
  for r in range(repeats + 1):
    root = tempfile.mkdtemp(prefix="seqgen_bench_")
    opts = builder.DataOptions(data_dir=data_dir, prepared_dir=root)
    t = _time(lambda opts=opts: catalog.prepare(name, opts))
    if r:
      prep_times.append(t)
    if keep is None:
      keep = opts
    else:
      shutil.rmtree(root)
  b = catalog.prepare(name, keep)
  split = "train" if "train" in b.info.splits else "full"
  reader = builder.SplitReader(b, split)
  peer = b.as_data_source(split=split)
  n = len(reader)
  rng = np.random.default_rng(0)
  k = min(batch, n)
  key_sets = [rng.choice(n, k, replace=False).tolist() for _ in range(batches)]
  reader.get(key_sets[0])
  ours = [k * batches / _time(lambda: [reader.get(ks) for ks in key_sets])
          for _ in range(repeats)]
  tfds_ = [k * batches / _time(lambda: [peer.__getitems__(ks) for ks in key_sets])
           for _ in range(repeats)]
  source = _train_source(name, keep, batch)
  source.batch(0, slice(0, batch))  # first touch
  pipe = [batch * batches / _time(
      lambda r=r: [source.batch(1 + r * batches + i, slice(0, batch)) for i in range(batches)])
          for r in range(repeats)]
  shutil.rmtree(keep.prepared_dir)
  examples = sum(s.num_examples for s in b.info.splits.values())
  return {"name": name, "examples": examples, "prep": statistics.median(prep_times),
          "ours": statistics.median(ours), "tfds": statistics.median(tfds_),
          "pipe": statistics.median(pipe)}


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  rows = []
  for name in _DATASETS.value:
    if name not in catalog.DATASETS:
      raise app.UsageError(f"unknown dataset '{name}'; choose from {', '.join(catalog.DATASETS)}")
    rows.append(_measure(name, _DATA_DIR.value, _REPEATS.value, _BATCH.value, _BATCHES.value))
    r = rows[-1]
    print(f"{r['name']}: prep {r['prep']:.2f} s", flush=True)
  head = (f"| dataset | examples | prep s | prep ex/s | reader ex/s | tfds decode ex/s | "
          f"x tfds | batch ex/s (B={_BATCH.value}) |")
  print("\n" + head + "\n|" + "---|" * 8)
  for r in rows:
    if r["examples"] < _BATCH.value:  # one record per split holds the whole text / series
      per_example = "(whole-series records) | - | - | -"
    else:
      per_example = (f"{r['examples'] / r['prep']:,.0f} | {r['ours']:,.0f} | {r['tfds']:,.0f} | "
                     f"{r['ours'] / r['tfds']:.1f}")
    print(f"| {r['name']} | {r['examples']:,} | {r['prep']:.2f} | {per_example} | "
          f"{r['pipe']:,.0f} |")

  path = common.out_path(_OUT.value, "data_throughput")
  if path:
    common.write_json(path, common.bench_record(
        "data_throughput",
        shapes={"datasets": list(_DATASETS.value), "batch": _BATCH.value,
                "batches": _BATCHES.value, "repeats": _REPEATS.value},
        results={"rows": rows}, peer="TFDS data source (its own NumPy decoding), same records",
        notes="prep s: full preparation; ours / tfds: random-access reads, examples/s; "
              "pipe: whole training batches, examples/s"))
    print(f"wrote {path}")


if __name__ == "__main__":
  cli.run(main)
