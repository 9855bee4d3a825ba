"""Recurrent throughput: LSTM (scan / fused cuDNN / PyTorch) and minGRU vs LSTM over length.

Part 1: forward + backward (gradients w.r.t. the parameters and the input) of one LSTM layer,
hidden 1024, input 1024, sequence 512, batch 64, float32: our ``lax.scan`` LSTM, our fused cuDNN
path (GPU only) and ``torch.nn.LSTM`` (oneDNN on CPU, cuDNN on a CUDA GPU when the installed
torch has CUDA), all in the same process. Part 2: one minGRU layer (``associative_scan``)
against one scan LSTM layer of the same width at sequence 512, 2048 and 4096.

Every function is compiled (JAX: ``jit(...).lower(...).compile()``) and run once before timing;
the numbers are medians over ``--reps`` runs; throughput = batch * sequence tokens per second;
speeds are reported as ratios against a peer timed in the same run.

  python -m experiments.bench.rnn_bench                 # full shapes (minutes on a CPU)
  python -m experiments.bench.rnn_bench --quick         # small shapes, seconds
  python -m experiments.bench.rnn_bench --out=/tmp/rnn_bench.json
"""

from __future__ import annotations

import json
from collections.abc import Callable

import jax
import jax.numpy as jnp
from absl import flags

from experiments import cli
from experiments.bench import common
from seqgen_jax.nn.parallel_rnn import MinGRU
from seqgen_jax.nn.rnn import StackedRNN, cudnn_lstm_available

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The command line's flags, defined only when this file is the program (so that importing
  its functions next to another absl program, as the accelerator report does, cannot clash)."""
  flags.DEFINE_bool("quick", False, "small shapes for a fast check")
  flags.DEFINE_integer("reps", 5, "timed repetitions (the median is reported)")
  flags.DEFINE_integer("batch", 64, "part 1 batch size")
  flags.DEFINE_integer("seq_len", 512, "part 1 sequence length")
  flags.DEFINE_integer("hidden", 1024, "part 1 hidden (= input) size")
  flags.DEFINE_list("lengths", ["512", "2048", "4096"], "part 2 sequence lengths (empty: skip)")
  flags.DEFINE_integer("len_batch", 16, "part 2 batch size")
  flags.DEFINE_integer("len_hidden", 512, "part 2 hidden (= input) size of both models")
  flags.DEFINE_bool("torch", True, "time torch.nn.LSTM in part 1")
  flags.DEFINE_string("out", "", "write the JSON record here (FILE.json, or a folder)")


def median_seconds(run: Callable[[], object], reps: int) -> float:
  """Runs ``run`` once (warm-up), then ``reps`` timed times; the median wall time (``run``
  waits for its own result)."""
  return common.median_seconds(run, warmup=1, iters=reps, sync=lambda _: None)


def jax_fwd_bwd(module, x_BTI: jax.Array) -> Callable[[], object]:
  """A compiled forward + backward (grads of params and input) of ``module`` on ``x``."""
  params = jax.jit(module.init)(jax.random.PRNGKey(0), x_BTI)

  def loss(p, x):
    y = module.apply(p, x)[0]
    return jnp.mean(y.astype(jnp.float32) ** 2)

  step = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x_BTI).compile()
  return lambda: jax.block_until_ready(step(params, x_BTI))


def torch_lstm_fwd_bwd(b: int, t: int, h: int) -> tuple[Callable[[], object], str]:
  """A forward + backward of ``torch.nn.LSTM`` (cuDNN on a CUDA GPU), and what it is."""
  import os

  import torch

  torch.set_num_threads(os.cpu_count() or 1)
  dev = common.torch_device()
  lstm = torch.nn.LSTM(h, h, batch_first=True).to(dev)
  x = torch.randn(b, t, h, device=dev, requires_grad=True)

  def run():
    lstm.zero_grad(set_to_none=True)
    x.grad = None
    y, _ = lstm(x)
    (y ** 2).mean().backward()
    common.torch_sync(dev)

  backend = "cuDNN" if dev == "cuda" else (
      "oneDNN" if torch.backends.mkldnn.is_available() else "ATen CPU")
  return run, f"torch {torch.__version__} nn.LSTM on {dev} ({backend}, "\
              f"{torch.get_num_threads()} threads)"


def part1(b: int, t: int, h: int, reps: int, with_torch: bool) -> dict:
  """LSTM forward + backward: scan, fused cuDNN (GPU) and torch; a reason where one cannot
  run. Returns {"shape", "results", "throughput_ratios", "peer"}."""
  x = jax.random.normal(jax.random.PRNGKey(1), (b, t, h), jnp.float32)
  rows = {}
  s = median_seconds(jax_fwd_bwd(StackedRNN("lstm", h), x), reps)
  rows["scan"] = {"seconds": s, "tokens_per_s": b * t / s}
  if cudnn_lstm_available():
    s = median_seconds(jax_fwd_bwd(StackedRNN("lstm", h, impl="cudnn"), x), reps)
    rows["fused"] = {"seconds": s, "tokens_per_s": b * t / s}
  else:
    rows["fused"] = (f"unavailable: the fused cuDNN LSTM needs a CUDA GPU (JAX backend "
                     f"'{jax.default_backend()}')")
  peer = None
  if with_torch:
    try:
      run, peer = torch_lstm_fwd_bwd(b, t, h)
      s = median_seconds(run, reps)
      rows["torch"] = {"seconds": s, "tokens_per_s": b * t / s, "what": peer}
    except ImportError as e:
      peer = rows["torch"] = f"unavailable: {e}"
    finally:
      common.release_torch_memory()
  ratios = {}
  if isinstance(rows.get("torch"), dict):
    ratios["scan / torch"] = rows["torch"]["seconds"] / rows["scan"]["seconds"]
    if isinstance(rows["fused"], dict):
      ratios["fused / torch"] = rows["torch"]["seconds"] / rows["fused"]["seconds"]
  if isinstance(rows["fused"], dict):
    ratios["scan / fused"] = rows["fused"]["seconds"] / rows["scan"]["seconds"]
  return {"shape": {"batch": b, "seq_len": t, "hidden": h, "input": h, "layers": 1},
          "results": rows, "throughput_ratios": ratios, "peer": peer}


def part2(lengths: list[int], b: int, h: int, reps: int) -> dict:
  out = {}
  for t in lengths:
    x = jax.random.normal(jax.random.PRNGKey(1), (b, t, h), jnp.float32)
    s_lstm = median_seconds(jax_fwd_bwd(StackedRNN("lstm", h), x), reps)
    s_min = median_seconds(jax_fwd_bwd(MinGRU(h, scan_impl="associative"), x), reps)
    out[str(t)] = {"lstm_scan_s": s_lstm, "mingru_associative_s": s_min,
                   "lstm_tokens_per_s": b * t / s_lstm, "mingru_tokens_per_s": b * t / s_min,
                   "mingru / lstm throughput": s_lstm / s_min}
  return {"shape": {"batch": b, "hidden": h, "input": h, "layers": 1}, "by_seq_len": out}


def record(lstm: dict, mingru: dict | None, reps: int, command: str | None = None) -> dict:
  """The benchmark's JSON record (experiments/bench/common.py's schema)."""
  shapes = {"lstm_fwd_bwd": lstm["shape"], "dtype": "float32", "reps": reps}
  results = {"lstm_fwd_bwd": {k: lstm[k] for k in ("results", "throughput_ratios")}}
  if mingru is not None:
    shapes["mingru_vs_lstm"] = {**mingru["shape"], "seq_lens": [int(t) for t in
                                                                 mingru["by_seq_len"]]}
    results["mingru_vs_lstm"] = mingru["by_seq_len"]
  return common.bench_record(
      "rnn_bench", shapes=shapes, results=results, peer=lstm["peer"],
      notes="forward + backward (grads of params and input) of one LSTM layer; "
            "throughput ratios > 1: the first named is faster", command=command)


def main(argv):
  del argv
  if FLAGS.quick:
    b, t, h, lengths, lb, lh = 8, 64, 128, [128, 256, 512], 4, 64
  else:
    b, t, h = FLAGS.batch, FLAGS.seq_len, FLAGS.hidden
    lengths, lb, lh = [int(v) for v in FLAGS.lengths], FLAGS.len_batch, FLAGS.len_hidden
  lstm = part1(b, t, h, FLAGS.reps, FLAGS.torch)
  mingru = part2(lengths, lb, lh, FLAGS.reps) if lengths else None
  report = record(lstm, mingru, FLAGS.reps)
  print(json.dumps(common.jsonable(report), indent=2))
  path = common.out_path(FLAGS.out, "rnn_bench")
  if path:
    common.write_json(path, report)


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
