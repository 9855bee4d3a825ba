"""Train-step throughput and MFU of a GPT through the shared train step (jit, data parallel).

Reports, for one preset shape: FLOPs per step from XLA's cost analysis next to the closed-form
count (6·N·tokens + 12·L·T·D·tokens), the median step time (compilation and one warm-up step
excluded), achieved TFLOP/s, MFU and peak device memory. MFU is against the device's dense bf16
peak (seqgen_jax/train/perf.py's table) on TPU / GPU, and against a matmul peak measured in the
same run on CPU (median of jitted square matmuls in the compute dtype), which the table lacks.

  python -m experiments.bench.mfu --preset=gpt2_124m            # GPU / TPU (bf16)
  python -m experiments.bench.mfu --preset=gpt2_124m --batch_size=1 --steps=3 \
      --compute_dtype=float32                                   # CPU (slow: ~1 TFLOP a step)
  python -m experiments.bench.mfu --preset=small --steps=10     # CPU, seconds

``--out`` writes the JSON record (experiments/bench/common.py): FILE.json, or a folder that gets
``mfu_<preset>.json``.
"""

from __future__ import annotations

import functools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import flags

import seqgen_jax.nn  # noqa: F401  (registers the models)
from experiments import cli
from experiments.bench import common
from seqgen_jax.registry import MODELS
from seqgen_jax.train import perf
from seqgen_jax.train import sharding as sharding_lib
from seqgen_jax.train.state import create_train_state
from seqgen_jax.train.step import make_train_step

# name: (num_layers, num_heads, d_model, seq_len, vocab_size)
PRESETS = {
    "gpt2_124m": (12, 12, 768, 1024, 50257),  # GPT-2 small
    "shakespeare": (6, 6, 384, 256, 65),  # nanoGPT's shakespeare_char
    "small": (4, 4, 256, 128, 256),
}
_PRESET = flags.DEFINE_enum("preset", "gpt2_124m", list(PRESETS), "Model shape.")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Global batch; 0: 8 per device.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps (after one warm-up step).")
_DTYPE = flags.DEFINE_enum("compute_dtype", None, ["float32", "bfloat16"],
                           "Compute dtype; default bfloat16 on GPU/TPU, float32 on CPU.")
_FSDP = flags.DEFINE_integer("fsdp", 1, "mesh.fsdp (1: plain data parallel).")
_OUT = flags.DEFINE_string("out", "", "Write the JSON record here (FILE.json, or a folder).")


def gpt_train_flops(layers: int, d: int, seq: int, vocab: int, tokens: int) -> float:
  """6·N·tokens for the matmul weights (d_ff = 4d, tied head) + 12·L·T·D·tokens (attention)."""
  n_matmul = layers * 12 * d * d + d * vocab
  return tokens * (6 * n_matmul + 12 * layers * seq * d)


def measured_matmul_tflops(dtype, n: int = 2048, reps: int = 10) -> float:
  """Median TFLOP/s of a jitted n x n matmul on the default device."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 2 * n**3 / statistics.median(times) / 1e12


def main(argv):
  del argv
  layers, heads, d, seq, vocab = PRESETS[_PRESET.value]
  backend = jax.default_backend()
  dtype_name = _DTYPE.value or ("float32" if backend == "cpu" else "bfloat16")
  dtype = jnp.dtype(dtype_name)
  batch = _BATCH.value or 8 * jax.device_count()
  cfg = ml_collections.ConfigDict(dict(num_layers=layers, num_heads=heads, d_model=d,
                                       d_ff=4 * d, dropout=0.0, use_bias=True))
  model = MODELS.get("gpt", kind="causal_lm")(cfg, vocab_size=vocab, max_len=seq, dtype=dtype)

  def loss_fn(params, b, rng):
    del rng
    logits_BTV = model.apply({"params": params}, b["inputs"], train=True)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, b["targets"])
    return nll.mean(), {}

  tx = optax.adamw(3e-4)
  init = functools.partial(
      create_train_state,
      lambda r: model.init(r, jnp.zeros((1, seq), jnp.int32), train=False)["params"], tx)
  mesh = sharding_lib.make_mesh(_FSDP.value)
  abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
  shardings = sharding_lib.state_shardings(abstract, mesh)
  step = make_train_step(loss_fn, tx, mesh=mesh, state_sharding=shardings, compute_dtype=dtype)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, vocab, (batch, seq + 1), dtype=np.int32)
  host_batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
  global_batch = sharding_lib.make_global_batch(host_batch, mesh)
  lowered = step.lower(abstract, global_batch)
  t0 = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  xla_flops = perf.lowered_flops(lowered)
  analytic = gpt_train_flops(layers, d, seq, vocab, batch * seq)

  state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0))
  state, _ = compiled(state, global_batch)  # warm-up
  jax.block_until_ready(state)
  times = []
  for _ in range(_STEPS.value):
    t0 = time.perf_counter()
    state, metrics = compiled(state, global_batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)
  tflops = xla_flops / step_s / 1e12
  kind = jax.devices()[0].device_kind
  peak = perf.peak_tflops(kind)
  peak_source = f"bf16 datasheet peak of '{kind}'"
  if peak is None and backend == "cpu":
    peak = measured_matmul_tflops(dtype) / jax.device_count()
    peak_source = f"measured {dtype_name} 2048^3 matmul on this CPU, per device"
  mem = perf.peak_memory_bytes(jax.local_devices())
  result = {
      "preset": _PRESET.value, "backend": backend, "device_kind": kind,
      "devices": jax.device_count(), "compute_dtype": dtype_name, "batch": batch, "seq": seq,
      "params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params))),
      "compile_s": round(compile_s, 1), "step_s_median": step_s,
      "xla_flops_per_step": xla_flops, "analytic_flops_per_step": analytic,
      "xla_over_analytic": xla_flops / analytic, "tflops_per_s": tflops,
      "peak_tflops_per_device": peak, "peak_source": peak_source,
      "mfu": tflops / (peak * jax.device_count()) if peak else None,
      "peak_memory_gib": mem / perf.GiB if mem is not None else None,
      "loss": float(metrics["loss"]),
  }
  mfu = f"MFU {100 * result['mfu']:.1f}% ({peak_source})" if peak else "peak unknown"
  mem_s = f"{result['peak_memory_gib']:.2f} GiB" if mem is not None else "n/a"
  print(f"{_PRESET.value} on {jax.device_count()} x {kind} ({dtype_name}, batch {batch} x {seq}): "
        f"{xla_flops:.4g} FLOP/step (XLA; {result['xla_over_analytic']:.4f} x closed form), "
        f"median {step_s * 1e3:.1f} ms/step over {_STEPS.value} steps, {tflops:.4g} TFLOP/s, "
        f"{mfu}, peak mem {mem_s}")
  print(json.dumps(result))
  path = common.out_path(_OUT.value, f"mfu_{_PRESET.value}")
  if path:
    shapes = {"preset": _PRESET.value, "num_layers": layers, "num_heads": heads, "d_model": d,
              "seq_len": seq, "vocab_size": vocab, "batch": batch, "compute_dtype": dtype_name,
              "fsdp": _FSDP.value, "steps": _STEPS.value}
    common.write_json(path, common.bench_record(
        f"mfu_{_PRESET.value}", shapes=shapes, results=result, peer=None,
        notes=f"MFU against the {peak_source}"))
    print(f"wrote {path}")


if __name__ == "__main__":
  cli.run(main)
