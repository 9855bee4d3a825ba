"""GPT-2-124M-shaped training step: tokens/s and MFU, JAX (this codebase) vs PyTorch (Hugging Face
GPT2LMHeadModel + torch.compile), same device, same run.

Both sides run the same step: bf16 compute with float32 master weights (JAX: params cast in
the loss, as train/step.py does; PyTorch: autocast), cross-entropy, global-norm clipping at 1,
AdamW. Dropout is 0 on both sides. The JAX step is the shared library's
``make_train_step`` on one device with the "gpt" model (attention backend "auto": cuDNN on a
GPU that can run it, XLA elsewhere).

MFU = (6 N + 12 L D T) * tokens/s / peak (PaLM's accounting: N parameters without the position
table, L layers, D width, T sequence length; the attention term counts the full T x T, as PaLM
does). The peak is MEASURED here, as the best median of square matmuls in the compute dtype.
Times are medians over ``--steps`` steps after ``--warmup`` untimed ones (compilation excluded).

  python -m experiments.bench.gpt2_train_step                 # full: batch 8 x 1024, bf16
  python -m experiments.bench.gpt2_train_step --quick         # CPU: batch 1 x 256, 3 steps
  python -m experiments.bench.gpt2_train_step --quick --dtype float32
"""

from __future__ import annotations

import argparse
import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.bench.common import device_name, measured_matmul_peak, median_seconds
from seqgen_jax.nn.gpt import GPT
from seqgen_jax.tasks.lm import token_nll_and_correct
from seqgen_jax.train import sharding
from seqgen_jax.train.optim import build_optimizer
from seqgen_jax.train.state import create_train_state
from seqgen_jax.train.step import make_train_step

VOCAB, MAX_LEN, LAYERS, HEADS, WIDTH = 50257, 1024, 12, 12, 768


def flops_per_token(n_params: int, layers: int, width: int, seq_len: int) -> float:
  """6 N (forward + backward matmuls) + 12 L D T (attention scores and mixing, fwd + bwd)."""
  return 6 * n_params + 12 * layers * width * seq_len


def jax_step(args, dtype) -> tuple[float, int]:
  """Median seconds per step of the JAX train step, and N (params without the position table)."""
  model = GPT(vocab_size=VOCAB, max_len=MAX_LEN, num_layers=args.layers, num_heads=HEADS,
              d_model=WIDTH, dtype=dtype, attention=args.attention,
              scan_layers=args.scan_layers, remat=args.remat)
  opt_cfg = ml_collections.ConfigDict(dict(name="adamw", lr=3e-4, schedule="constant",
                                           warmup_steps=0, b1=0.9, b2=0.95, eps=1e-8,
                                           weight_decay=0.1))
  tx, schedule = build_optimizer(opt_cfg, 1000)
  mesh = sharding.make_mesh(devices=jax.devices()[:1])

  def init(rng):
    return model.init(rng, jnp.zeros((1, args.seq_len), jnp.int32))["params"]

  def loss_fn(params, batch, rng):
    logits = model.apply({"params": params}, batch["inputs"], train=True, rngs={"dropout": rng})
    nll, _ = token_nll_and_correct(logits, batch["targets"])
    return jnp.mean(nll), {}

  abstract = jax.eval_shape(lambda r: create_train_state(init, tx, r), jax.random.PRNGKey(0))
  state_sh = sharding.state_shardings(abstract, mesh)
  state = jax.jit(lambda r: create_train_state(init, tx, r), out_shardings=state_sh)(
      jax.random.PRNGKey(0))
  n_params = sum(x.size for x in jax.tree.leaves(state.params)) - MAX_LEN * WIDTH
  step = make_train_step(loss_fn, tx, mesh=mesh, state_sharding=state_sh,
                         lr_schedule=schedule, clip_grad_norm=1.0, compute_dtype=dtype)
  toks = np.random.default_rng(0).integers(0, VOCAB, (args.batch, args.seq_len + 1))
  batch = jax.device_put({"inputs": toks[:, :-1].astype(np.int32),
                          "targets": toks[:, 1:].astype(np.int32)},
                         sharding.batch_sharding(mesh))
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], batch)
    return metrics["loss"]

  return median_seconds(run, warmup=args.warmup, iters=args.steps), n_params


def torch_step(args, dtype_name: str) -> tuple[float | None, str]:
  """Median seconds per step of HF GPT2LMHeadModel + torch.compile (None and a note if the
  peer cannot run here)."""
  try:
    import torch
    import transformers
  except ImportError as e:
    return None, f"PyTorch peer unavailable: {e}"
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  torch.manual_seed(0)
  cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=MAX_LEN, n_embd=WIDTH,
                                n_layer=args.layers, n_head=HEADS, resid_pdrop=0.0,
                                embd_pdrop=0.0, attn_pdrop=0.0)
  cfg._attn_implementation = "sdpa"  # flash / memory-efficient kernels where available
  model = transformers.GPT2LMHeadModel(cfg).to(dev).train()
  opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                          fused=dev == "cuda")
  note = "torch.compile"
  try:
    fwd = torch.compile(model)
  except Exception as e:  # noqa: BLE001  (report, fall back to eager)
    fwd, note = model, f"eager (torch.compile failed: {type(e).__name__})"
  toks = torch.randint(0, VOCAB, (args.batch, args.seq_len), device=dev)
  amp_dtype = torch.bfloat16 if dtype_name == "bfloat16" else torch.float32

  def run():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(dev, dtype=amp_dtype, enabled=amp_dtype != torch.float32):
      loss = fwd(input_ids=toks, labels=toks).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss

  def sync(loss):
    if dev == "cuda":
      torch.cuda.synchronize()
    return loss.detach().item()

  try:
    return median_seconds(run, warmup=args.warmup, iters=args.steps, sync=sync), note
  except Exception as e:  # noqa: BLE001
    if fwd is model:
      raise
    fwd, note = model, f"eager (torch.compile failed at run time: {type(e).__name__})"
    return median_seconds(run, warmup=args.warmup, iters=args.steps, sync=sync), note


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="CPU-sized run: batch 1 x 256, 3 steps")
  p.add_argument("--batch", type=int, default=None)
  p.add_argument("--seq_len", type=int, default=None)
  p.add_argument("--layers", type=int, default=LAYERS)
  p.add_argument("--steps", type=int, default=None)
  p.add_argument("--warmup", type=int, default=None)
  p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  p.add_argument("--attention", default="auto", choices=["xla", "cudnn", "auto"])
  p.add_argument("--scan_layers", action="store_true")
  p.add_argument("--remat", default="none", choices=["none", "full", "dots"])
  p.add_argument("--skip_torch", action="store_true")
  args = p.parse_args()
  quick = args.quick
  args.batch = args.batch or (1 if quick else 8)
  args.seq_len = args.seq_len or (256 if quick else 1024)
  args.steps = args.steps or (3 if quick else 20)
  args.warmup = args.warmup or (2 if quick else 5)
  dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32

  on_gpu = jax.default_backend() == "gpu"
  peak, peak_n = measured_matmul_peak(dtype, (4096, 8192) if on_gpu else (1024, 2048))
  t_jax, n_params = jax_step(args, dtype)
  t_torch, torch_note = (None, "skipped") if args.skip_torch else torch_step(args, args.dtype)
  tokens = args.batch * args.seq_len
  fpt = flops_per_token(n_params, args.layers, WIDTH, args.seq_len)
  row = {
      "device": device_name(), "dtype": args.dtype, "batch": args.batch,
      "seq_len": args.seq_len, "layers": args.layers, "params_N": n_params,
      "flops_per_token": fpt, "matmul_peak_tflops": peak / 1e12, "peak_matmul_n": peak_n,
      "jax_step_s": t_jax, "jax_tokens_per_s": tokens / t_jax,
      "jax_mfu": fpt * tokens / t_jax / peak,
  }
  if t_torch is not None:
    row.update(torch_step_s=t_torch, torch_tokens_per_s=tokens / t_torch,
               torch_mfu=fpt * tokens / t_torch / peak, jax_over_torch=t_torch / t_jax)
  row["torch_note"] = torch_note
  print(json.dumps(row))
  print(f"\n{row['device']}, {args.dtype}, batch {args.batch} x {args.seq_len}, "
        f"{args.layers} layers, N={n_params / 1e6:.1f}M; measured matmul peak "
        f"{peak / 1e12:.3f} TFLOP/s (n={peak_n})")
  print(f"  JAX   : {tokens / t_jax:10.1f} tokens/s  MFU {row['jax_mfu']:.1%}  "
        f"({t_jax * 1e3:.1f} ms/step)")
  if t_torch is not None:
    print(f"  torch : {tokens / t_torch:10.1f} tokens/s  MFU {row['torch_mfu']:.1%}  "
          f"({t_torch * 1e3:.1f} ms/step, {torch_note})")
    print(f"  JAX / torch throughput: {row['jax_over_torch']:.2f}x")
  assert math.isfinite(t_jax)


if __name__ == "__main__":
  main()
