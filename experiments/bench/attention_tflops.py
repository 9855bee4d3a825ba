"""Causal attention forward + backward throughput: this codebase's dot_product_attention with
each backend (XLA, blockwise flash attention in pure JAX, and cuDNN where it can serve the call)
vs PyTorch scaled_dot_product_attention, same device, same run, at several head sizes.

FLOPs follow the FlashAttention papers: a causal forward is 4 B N T^2 H / 2 (two matmuls, half
the score matrix), the backward 2.5x the forward, so forward + backward = 3.5x the forward.
A backend that computes the full T x T and masks it still gets credit only for the causal
half, so its number shows the work it wastes. Times are medians after untimed warm-up calls
(compilation excluded); batch x sequence is held at ``--tokens`` tokens and heads x head size
at ``--model_dim`` (FlashAttention-2's set-up: 16k tokens, width 2048). Each backend's TFLOP/s
is also given as a ratio to SDPA's; a backend that cannot run a point (cuDNN off an NVIDIA GPU,
out of memory) gets its reason instead of a number.

  python -m experiments.bench.attention_tflops --out=/tmp/bench      # GPU: T = 1k .. 8k, bf16
  python -m experiments.bench.attention_tflops --quick               # CPU: T = 128, 256, float32
  python -m experiments.bench.attention_tflops --head_dims=64,128 --seq_lens=1024,4096

Axis key: B batch, T sequence, N heads, H head size.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp

from experiments.bench.common import (
  Deadline,
  bench_record,
  device_name,
  median_seconds,
  out_path,
  torch_device,
  torch_sync,
  write_json,
)
from seqgen_jax.nn.attention import cudnn_unsupported_reason, dot_product_attention

IMPLS = ("xla", "blockwise", "cudnn")


def causal_fwd_bwd_flops(b: int, n: int, t: int, h: int) -> float:
  """FLOPs credited to one causal forward + backward (FlashAttention's accounting)."""
  return 3.5 * (4 * b * n * t * t * h / 2)


def jax_time(impl: str, b: int, n: int, t: int, h: int, dtype, iters: int) -> float:
  """Median seconds of one jitted causal forward + backward with backend ``impl``."""
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  q, k, v, g = (jax.random.normal(key, (b, t, n, h), jnp.float32).astype(dtype) for key in keys)

  @jax.jit
  def fwd_bwd(q, k, v, g):
    out, vjp = jax.vjp(lambda q, k, v: dot_product_attention(
        q, k, v, causal=True, implementation=impl), q, k, v)
    return out, vjp(g)

  return median_seconds(lambda: fwd_bwd(q, k, v, g), warmup=2, iters=iters)


def torch_peer() -> str:
  """What the peer is: torch's SDPA and the device it runs on (or why it cannot run)."""
  try:
    import torch
  except ImportError as e:
    return f"unavailable: PyTorch cannot be imported ({e})"
  return f"torch {torch.__version__} scaled_dot_product_attention on {torch_device()}"


def torch_time(b: int, n: int, t: int, h: int, dtype_name: str, iters: int) -> float:
  """Median seconds of one causal forward + backward of torch SDPA (BNTH layout)."""
  import torch
  import torch.nn.functional as F

  dev = torch_device()
  dt = torch.bfloat16 if dtype_name == "bfloat16" else torch.float32
  q, k, v, g = (torch.randn(b, n, t, h, device=dev, dtype=dt) for _ in range(4))
  for x in (q, k, v):
    x.requires_grad_(True)

  def run():
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return torch.autograd.grad(out, (q, k, v), g)

  return median_seconds(run, warmup=2, iters=iters, sync=lambda _: torch_sync(dev))


def _failure(e: Exception) -> str:
  text = str(e)
  if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
    return "out of memory"
  return f"{type(e).__name__}: {text.strip().splitlines()[0] if text.strip() else ''}"[:300]


def measure(seq_lens: list[int], head_dims: list[int], *, tokens: int, model_dim: int,
            dtype_name: str, iters: int, heads: int | None = None,
            deadline: Deadline | None = None) -> tuple[list[dict], str]:
  """One row per (head size, T): TFLOP/s of every backend and of SDPA, and each backend's
  ratio to SDPA; a backend that cannot run a point has its reason under ``reasons``. Points
  left when ``deadline`` expires are rows with ``skipped``. Returns (rows, peer)."""
  dtype = jnp.bfloat16 if dtype_name == "bfloat16" else jnp.float32
  peer = torch_peer()
  rows = []
  # Length-major, so that a deadline drops the longest sequences rather than a head size.
  for t in seq_lens:
    for h in head_dims:
      n = heads or max(1, model_dim // h)
      b = max(1, tokens // t)
      row = {"head_dim": h, "heads": n, "seq_len": t, "batch": b}
      if rows and deadline is not None and deadline.expired():  # the first point always runs
        rows.append({**row, "skipped": "time budget spent"})
        continue
      rows.append(row)
      flops = causal_fwd_bwd_flops(b, n, t, h)
      row["gflop_per_call"] = flops / 1e9
      reasons = {}
      probe = jax.ShapeDtypeStruct((b, t, n, h), dtype)
      for impl in IMPLS:
        why = cudnn_unsupported_reason(probe, probe) if impl == "cudnn" else None
        if why is None:
          try:
            row[f"{impl}_tflops"] = flops / jax_time(impl, b, n, t, h, dtype, iters) / 1e12
          except Exception as e:  # noqa: BLE001  (one backend's failure is a result, not a crash)
            why = _failure(e)
        if why is not None:
          reasons[impl] = why
      if peer.startswith("unavailable"):
        reasons["sdpa"] = peer
      else:
        try:
          row["sdpa_tflops"] = flops / torch_time(b, n, t, h, dtype_name, iters) / 1e12
        except Exception as e:  # noqa: BLE001
          reasons["sdpa"] = _failure(e)
      for impl in IMPLS:
        if f"{impl}_tflops" in row and "sdpa_tflops" in row:
          row[f"{impl}_vs_sdpa"] = row[f"{impl}_tflops"] / row["sdpa_tflops"]
      if reasons:
        row["reasons"] = reasons
  return rows, peer


def record(rows: list[dict], peer: str, *, seq_lens, head_dims, tokens: int, model_dim: int,
           dtype_name: str, iters: int, command: str | None = None) -> dict:
  """The benchmark's JSON record (experiments/bench/common.py's schema)."""
  return bench_record(
      "attention_tflops",
      shapes={"seq_lens": list(seq_lens), "head_dims": list(head_dims),
              "tokens_per_call": tokens, "model_dim": model_dim, "dtype": dtype_name,
              "causal": True, "iters": iters},
      results={"rows": rows}, peer=peer,
      notes="causal forward + backward; TFLOP/s credit the causal half only (3.5 x 2 B N T^2 H)",
      command=command)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true",
                 help="CPU-sized: T = 128, 256; head sizes 16, 32; width 64; float32")
  p.add_argument("--seq_lens", default=None, help="comma-separated, e.g. 1024,2048,4096,8192")
  p.add_argument("--head_dims", default=None, help="comma-separated head sizes, e.g. 64,128")
  p.add_argument("--tokens", type=int, default=None, help="batch * sequence length")
  p.add_argument("--model_dim", type=int, default=None, help="heads * head size")
  p.add_argument("--heads", type=int, default=None, help="fixed head count (overrides width)")
  p.add_argument("--iters", type=int, default=None)
  p.add_argument("--dtype", default=None, choices=["bfloat16", "float32"])
  p.add_argument("--out", default="", help="FILE.json, or a folder for attention_tflops.json")
  args = p.parse_args()
  q = args.quick
  seq_lens = [int(x) for x in (args.seq_lens or ("128,256" if q else "1024,2048,4096,8192")
                               ).split(",")]
  head_dims = [int(x) for x in (args.head_dims or ("16,32" if q else "64,128")).split(",")]
  tokens = args.tokens or (512 if q else 16384)
  model_dim = args.model_dim or (64 if q else 2048)
  iters = args.iters or (3 if q else 10)
  dtype_name = args.dtype or ("float32" if q else "bfloat16")
  print(f"{device_name()}, {dtype_name}, width {model_dim}, head sizes {head_dims}, "
        f"{tokens} tokens per call")
  rows, peer = measure(seq_lens, head_dims, tokens=tokens, model_dim=model_dim,
                       dtype_name=dtype_name, iters=iters, heads=args.heads)
  for row in rows:
    print(json.dumps(row))
  path = out_path(args.out, "attention_tflops")
  if path:
    write_json(path, record(rows, peer, seq_lens=seq_lens, head_dims=head_dims, tokens=tokens,
                            model_dim=model_dim, dtype_name=dtype_name, iters=iters))
    print(f"wrote {path}")


if __name__ == "__main__":
  main()
