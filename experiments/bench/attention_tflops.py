"""Causal attention forward + backward throughput at head size 128: this codebase's
dot_product_attention (XLA, and cuDNN where available) vs PyTorch scaled_dot_product_attention,
same device, same run.

FLOPs follow the FlashAttention papers: a causal forward is 4 B N T^2 H / 2 (two matmuls, half
the score matrix), the backward 2.5x the forward, so forward + backward = 3.5x the forward.
A backend that computes the full T x T and masks it still gets credit only for the causal
half, so its number shows the work it wastes. Times are medians after untimed warm-up calls
(compilation excluded); batch x sequence is held at ``--tokens`` tokens.

  python -m experiments.bench.attention_tflops                      # GPU: T = 1k .. 8k, bf16
  python -m experiments.bench.attention_tflops --quick              # CPU: T = 512, 1024
  python -m experiments.bench.attention_tflops --quick --dtype float32
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp

from experiments.bench.common import device_name, median_seconds
from seqgen_jax.nn.attention import cudnn_unsupported_reason, dot_product_attention


def causal_fwd_bwd_flops(b: int, n: int, t: int, h: int) -> float:
  return 3.5 * (4 * b * n * t * t * h / 2)


def jax_time(impl: str, b, n, t, h, dtype, iters) -> float:
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  q, k, v, g = (jax.random.normal(key, (b, t, n, h), jnp.float32).astype(dtype) for key in keys)

  @jax.jit
  def fwd_bwd(q, k, v, g):
    out, vjp = jax.vjp(lambda q, k, v: dot_product_attention(
        q, k, v, causal=True, implementation=impl), q, k, v)
    return out, vjp(g)

  return median_seconds(lambda: fwd_bwd(q, k, v, g), warmup=2, iters=iters)


def torch_time(b, n, t, h, dtype_name, iters) -> tuple[float | None, str]:
  try:
    import torch
    import torch.nn.functional as F
  except ImportError as e:
    return None, f"PyTorch unavailable: {e}"
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  dt = torch.bfloat16 if dtype_name == "bfloat16" else torch.float32
  q, k, v, g = (torch.randn(b, n, t, h, device=dev, dtype=dt) for _ in range(4))
  for x in (q, k, v):
    x.requires_grad_(True)

  def run():
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return torch.autograd.grad(out, (q, k, v), g)

  def sync(_):
    if dev == "cuda":
      torch.cuda.synchronize()

  return median_seconds(run, warmup=2, iters=iters, sync=sync), f"torch sdpa on {dev}"


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="CPU-sized: T = 512, 1024; 4 heads")
  p.add_argument("--seq_lens", default=None, help="comma-separated, e.g. 1024,2048,4096,8192")
  p.add_argument("--tokens", type=int, default=None, help="batch * sequence length")
  p.add_argument("--heads", type=int, default=None)
  p.add_argument("--head_dim", type=int, default=128)
  p.add_argument("--iters", type=int, default=None)
  p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  args = p.parse_args()
  q = args.quick
  seq_lens = [int(x) for x in (args.seq_lens or ("512,1024" if q else "1024,2048,4096,8192")
                               ).split(",")]
  tokens = args.tokens or (1024 if q else 16384)
  n, h = args.heads or (4 if q else 16), args.head_dim
  iters = args.iters or (3 if q else 10)
  dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
  print(f"{device_name()}, {args.dtype}, heads {n} x {h}, {tokens} tokens per call")
  for t in seq_lens:
    b = max(1, tokens // t)
    flops = causal_fwd_bwd_flops(b, n, t, h)
    row = {"device": device_name(), "dtype": args.dtype, "batch": b, "seq_len": t, "heads": n,
           "head_dim": h}
    probe = jnp.zeros((b, t, n, h), dtype)
    impls = ["xla"] + (["cudnn"] if cudnn_unsupported_reason(probe, probe) is None else [])
    for impl in impls:
      row[f"jax_{impl}_tflops"] = flops / jax_time(impl, b, n, t, h, dtype, iters) / 1e12
    t_torch, note = torch_time(b, n, t, h, args.dtype, iters)
    if t_torch is not None:
      row["torch_sdpa_tflops"] = flops / t_torch / 1e12
      best = max(row[f"jax_{i}_tflops"] for i in impls)
      row["best_jax_over_torch"] = best / row["torch_sdpa_tflops"]
    row["note"] = note
    print(json.dumps(row))


if __name__ == "__main__":
  main()
