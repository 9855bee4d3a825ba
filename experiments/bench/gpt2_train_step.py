"""GPT-2-124M-shaped training step: tokens/s and MFU, JAX (this codebase) vs PyTorch (Hugging Face
GPT2LMHeadModel + torch.compile), same device, same run.

Both sides run the same step: bf16 compute with float32 master weights (JAX: params cast in
the loss, as train/step.py does; PyTorch: autocast), cross-entropy, global-norm clipping at 1,
AdamW. Dropout is 0 on both sides. The JAX step is the shared library's
``make_train_step`` on one device with the "gpt" model (attention backend "auto": cuDNN on a
GPU that can run it, else blockwise from 1024 keys on, else XLA; ``--attention`` picks one).

MFU = (6 N + 12 L D T) * tokens/s / peak (PaLM's accounting: N parameters without the position
table, L layers, D width, T sequence length; the attention term counts the full T x T, as PaLM
does). The peak is MEASURED here, as the best median of square matmuls in the compute dtype.
MFU against the device's datasheet bf16 peak (seqgen_jax/train/perf.py) is given too where the
device is in that table. Times are medians over ``--steps`` steps after ``--warmup`` untimed ones
(compilation excluded). ``--out`` writes the JSON record (experiments/bench/common.py).

  python -m experiments.bench.gpt2_train_step --out=/tmp/bench   # full: batch 8 x 1024, bf16
  python -m experiments.bench.gpt2_train_step --quick            # CPU: batch 1 x 256, 3 steps
  python -m experiments.bench.gpt2_train_step --quick --dtype float32
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.bench import common
from experiments.bench.common import device_name, measured_matmul_peak, median_seconds
from seqgen_jax.nn.gpt import GPT
from seqgen_jax.tasks.lm import token_nll_and_correct
from seqgen_jax.train import sharding
from seqgen_jax.train.optim import build_optimizer
from seqgen_jax.train.perf import peak_tflops
from seqgen_jax.train.state import create_train_state
from seqgen_jax.train.step import make_train_step

VOCAB, MAX_LEN, LAYERS, HEADS, WIDTH = 50257, 1024, 12, 12, 768


@dataclasses.dataclass(frozen=True)
class Shape:
  """The model and batch of one measurement (GPT-2-124M by default)."""

  batch: int = 8
  seq_len: int = 1024
  layers: int = LAYERS
  heads: int = HEADS
  width: int = WIDTH
  vocab: int = VOCAB
  max_len: int = MAX_LEN


def flops_per_token(n_params: int, layers: int, width: int, seq_len: int) -> float:
  """6 N (forward + backward matmuls) + 12 L D T (attention scores and mixing, fwd + bwd)."""
  return 6 * n_params + 12 * layers * width * seq_len


def jax_step(shape: Shape, dtype, *, steps: int, warmup: int, attention: str = "auto",
             scan_layers: bool = False, remat: str = "none") -> tuple[float, int]:
  """Median seconds per step of the JAX train step, and N (params without the position table)."""
  model = GPT(vocab_size=shape.vocab, max_len=shape.max_len, num_layers=shape.layers,
              num_heads=shape.heads, d_model=shape.width, dtype=dtype, attention=attention,
              scan_layers=scan_layers, remat=remat)
  opt_cfg = ml_collections.ConfigDict(dict(name="adamw", lr=3e-4, schedule="constant",
                                           warmup_steps=0, b1=0.9, b2=0.95, eps=1e-8,
                                           weight_decay=0.1))
  tx, schedule = build_optimizer(opt_cfg, 1000)
  mesh = sharding.make_mesh(devices=jax.devices()[:1])

  def init(rng):
    return model.init(rng, jnp.zeros((1, shape.seq_len), jnp.int32))["params"]

  def loss_fn(params, batch, rng):
    logits = model.apply({"params": params}, batch["inputs"], train=True, rngs={"dropout": rng})
    nll, _ = token_nll_and_correct(logits, batch["targets"])
    return jnp.mean(nll), {}

  abstract = jax.eval_shape(lambda r: create_train_state(init, tx, r), jax.random.PRNGKey(0))
  state_sh = sharding.state_shardings(abstract, mesh)
  state = jax.jit(lambda r: create_train_state(init, tx, r), out_shardings=state_sh)(
      jax.random.PRNGKey(0))
  n_params = sum(x.size for x in jax.tree.leaves(state.params)) - shape.max_len * shape.width
  step = make_train_step(loss_fn, tx, mesh=mesh, state_sharding=state_sh,
                         lr_schedule=schedule, clip_grad_norm=1.0, compute_dtype=dtype)
  toks = np.random.default_rng(0).integers(0, shape.vocab, (shape.batch, shape.seq_len + 1))
  batch = jax.device_put({"inputs": toks[:, :-1].astype(np.int32),
                          "targets": toks[:, 1:].astype(np.int32)},
                         sharding.batch_sharding(mesh))
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], batch)
    return metrics["loss"]

  return median_seconds(run, warmup=warmup, iters=steps), n_params


def torch_step(shape: Shape, dtype_name: str, *, steps: int, warmup: int,
               compile_model: bool = True) -> tuple[float, str]:
  """Median seconds per step of HF GPT2LMHeadModel (+ torch.compile), and a note saying how
  it ran. Raises ImportError where torch / transformers are missing."""
  import torch
  import transformers

  dev = common.torch_device()
  torch.manual_seed(0)
  cfg = transformers.GPT2Config(vocab_size=shape.vocab, n_positions=shape.max_len,
                                n_embd=shape.width, n_layer=shape.layers, n_head=shape.heads,
                                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                bos_token_id=shape.vocab - 1, eos_token_id=shape.vocab - 1)
  cfg._attn_implementation = "sdpa"  # flash / memory-efficient kernels where available
  model = transformers.GPT2LMHeadModel(cfg).to(dev).train()
  opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                          fused=dev == "cuda")
  note = f"torch.compile on {dev}" if compile_model else f"eager on {dev}"
  fwd = model
  if compile_model:
    try:
      fwd = torch.compile(model)
    except Exception as e:  # noqa: BLE001  (report, fall back to eager)
      note = f"eager on {dev} (torch.compile failed: {type(e).__name__})"
  toks = torch.randint(0, shape.vocab, (shape.batch, shape.seq_len), device=dev)
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
    common.torch_sync(dev)
    return loss.detach().item()

  try:
    return median_seconds(run, warmup=warmup, iters=steps, sync=sync), note
  except Exception as e:  # noqa: BLE001
    if fwd is model:
      raise
    fwd, note = model, f"eager on {dev} (torch.compile failed at run time: {type(e).__name__})"
    return median_seconds(run, warmup=warmup, iters=steps, sync=sync), note


def measure(shape: Shape, dtype_name: str, *, steps: int, warmup: int, attention: str = "auto",
            scan_layers: bool = False, remat: str = "none", peer: bool = True,
            torch_compile: bool = True, peak_sizes: tuple[int, ...] | None = None
            ) -> tuple[dict, str | None]:
  """Tokens/s and MFU of both sides; (results, peer description or None without a peer).
  A peer that cannot run leaves its reason under ``torch_note`` instead of numbers."""
  dtype = jnp.bfloat16 if dtype_name == "bfloat16" else jnp.float32
  on_gpu = jax.default_backend() == "gpu"
  peak, peak_n = measured_matmul_peak(dtype, peak_sizes or ((4096, 8192) if on_gpu
                                                            else (1024, 2048)))
  t_jax, n_params = jax_step(shape, dtype, steps=steps, warmup=warmup, attention=attention,
                             scan_layers=scan_layers, remat=remat)
  t_torch, torch_note, peer_name = None, "skipped", None
  if peer:
    peer_name = "Hugging Face GPT2LMHeadModel (sdpa attention) + " + (
        "torch.compile" if torch_compile else "eager PyTorch")
    try:
      t_torch, torch_note = torch_step(shape, dtype_name, steps=steps, warmup=warmup,
                                       compile_model=torch_compile)
    except ImportError as e:
      torch_note = f"unavailable: {e}"
    finally:
      common.release_torch_memory()
  tokens = shape.batch * shape.seq_len
  fpt = flops_per_token(n_params, shape.layers, shape.width, shape.seq_len)
  sheet = peak_tflops(jax.devices()[0].device_kind)
  row = {"params_N": n_params, "flops_per_token": fpt, "matmul_peak_tflops": peak / 1e12,
         "peak_matmul_n": peak_n, "jax_step_s": t_jax, "jax_tokens_per_s": tokens / t_jax,
         "jax_mfu": fpt * tokens / t_jax / peak}
  if sheet:  # a device in perf.py's table of datasheet bf16 peaks
    row["datasheet_peak_tflops"] = sheet
    row["jax_mfu_datasheet"] = fpt * tokens / t_jax / (sheet * 1e12)
  if t_torch is not None:
    row.update(torch_step_s=t_torch, torch_tokens_per_s=tokens / t_torch,
               torch_mfu=fpt * tokens / t_torch / peak, jax_vs_torch=t_torch / t_jax)
    if sheet:
      row["torch_mfu_datasheet"] = fpt * tokens / t_torch / (sheet * 1e12)
  row["torch_note"] = torch_note
  return row, peer_name


def record(row: dict, peer: str | None, shape: Shape, dtype_name: str, *, attention: str,
           steps: int, warmup: int, command: str | None = None) -> dict:
  """The benchmark's JSON record (experiments/bench/common.py's schema)."""
  return common.bench_record(
      "gpt2_train_step",
      shapes={**dataclasses.asdict(shape), "dtype": dtype_name, "attention": attention,
              "steps": steps, "warmup": warmup},
      results=row, peer=peer,
      notes="MFU = (6 N + 12 L D T) tokens/s / measured matmul peak (compute dtype)",
      command=command)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="CPU-sized run: batch 1 x 256, 3 steps")
  p.add_argument("--batch", type=int, default=None)
  p.add_argument("--seq_len", type=int, default=None)
  p.add_argument("--layers", type=int, default=LAYERS)
  p.add_argument("--steps", type=int, default=None)
  p.add_argument("--warmup", type=int, default=None)
  p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  p.add_argument("--attention", default="auto", choices=["xla", "blockwise", "cudnn", "auto"])
  p.add_argument("--scan_layers", action="store_true")
  p.add_argument("--remat", default="none", choices=["none", "full", "dots"])
  p.add_argument("--skip_torch", action="store_true")
  p.add_argument("--no_compile", action="store_true", help="eager PyTorch peer")
  p.add_argument("--out", default="", help="FILE.json, or a folder for gpt2_train_step.json")
  args = p.parse_args()
  quick = args.quick
  shape = Shape(batch=args.batch or (1 if quick else 8),
                seq_len=args.seq_len or (256 if quick else 1024), layers=args.layers)
  steps = args.steps or (3 if quick else 20)
  warmup = args.warmup or (2 if quick else 5)

  row, peer = measure(shape, args.dtype, steps=steps, warmup=warmup, attention=args.attention,
                      scan_layers=args.scan_layers, remat=args.remat, peer=not args.skip_torch,
                      torch_compile=not args.no_compile)
  tokens = shape.batch * shape.seq_len
  t_jax, t_torch = row["jax_step_s"], row.get("torch_step_s")
  print(json.dumps({"device": device_name(), "dtype": args.dtype, "batch": shape.batch,
                    "seq_len": shape.seq_len, "layers": shape.layers, **row}))
  print(f"\n{device_name()}, {args.dtype}, batch {shape.batch} x {shape.seq_len}, "
        f"{shape.layers} layers, N={row['params_N'] / 1e6:.1f}M; measured matmul peak "
        f"{row['matmul_peak_tflops']:.3f} TFLOP/s (n={row['peak_matmul_n']})")
  print(f"  JAX   : {tokens / t_jax:10.1f} tokens/s  MFU {row['jax_mfu']:.1%}  "
        f"({t_jax * 1e3:.1f} ms/step)")
  if t_torch is not None:
    print(f"  torch : {tokens / t_torch:10.1f} tokens/s  MFU {row['torch_mfu']:.1%}  "
          f"({t_torch * 1e3:.1f} ms/step, {row['torch_note']})")
    print(f"  JAX / torch throughput: {row['jax_vs_torch']:.2f}x")
  assert math.isfinite(t_jax)
  path = common.out_path(args.out, "gpt2_train_step")
  if path:
    common.write_json(path, record(row, peer, shape, args.dtype, attention=args.attention,
                                   steps=steps, warmup=warmup))
    print(f"wrote {path}")


if __name__ == "__main__":
  main()
