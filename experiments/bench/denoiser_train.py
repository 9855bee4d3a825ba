"""Train steps/s of the denoisers, side by side with the same architecture in diffusers (PyTorch).

  unet: Ho et al.'s CIFAR-10 DDPM U-Net (35.7M params, 32x32x3) vs diffusers.UNet2DModel in the
        google/ddpm-cifar10-32 layout (the same network, torch.compile).
  dit:  DiT-B/2 on 32x32x4 latents, 1000 classes, 10% null labels (CFG training) vs
        diffusers.DiTTransformer2DModel (the same blocks; diffusers keeps a copy of the time/label
        embedder per block, 12 x 1.6M extra parameters the optimizer also updates).

A train step is the same on both sides: eps-prediction MSE at a uniformly drawn t under the
linear beta schedule of Ho et al. (1e-4 -> 0.02, T=1000), backward, global-norm clipping at 1,
Adam(W), and an EMA update (decay 0.9999). The JAX side is the project's own jitted step
(seqgen_jax.train.step.make_train_step); both start from the same weights (the peer's, imported).
Compilation is excluded (two warm-up steps each); then ``--rounds`` rounds each time ``--steps``
steps of JAX and then of PyTorch, so that load on the machine hits both alike; the reported
rates are medians over rounds, and the ratio is given both as the ratio of those medians and as
the median of the per-round ratios.

The peer runs on CUDA when the installed torch has it. Where diffusers is missing, the JAX side
still runs (from its own initial weights) and the peer is reported as unavailable with the
reason. ``--out`` writes the JSON record (experiments/bench/common.py).

Run (CPU here; on a GPU use --batch 128 --dtype bfloat16):
  python -m experiments.bench.denoiser_train --model unet --batch 8 --dtype float32
  python -m experiments.bench.denoiser_train --model dit --batch 8 --dtype float32
  python -m experiments.bench.denoiser_train --model unet --tiny --batch 2 --no-compile  # smoke
  python -m experiments.bench.denoiser_train --model unet --batch 128 --dtype bfloat16 \
      --out=/tmp/bench                                   # a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.bench import common
from seqgen_jax.convert.diffusers_dit import convert_dit_state_dict, dit_kwargs_from_diffusers
from seqgen_jax.convert.diffusers_unet import convert_unet_state_dict, unet_kwargs_from_diffusers
from seqgen_jax.diffusion import process, schedules
from seqgen_jax.nn.dit import DiT
from seqgen_jax.nn.unet import UNet
from seqgen_jax.train import sharding
from seqgen_jax.train.state import TrainState
from seqgen_jax.train.step import make_train_step

T = 1000  # Ho et al.'s linear beta schedule, 1e-4 -> 0.02 (schedules.linear)

DDPM_CIFAR10 = dict(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2, attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False,
    freq_shift=1, norm_eps=1e-6, norm_num_groups=32, dropout=0.1)
DIT_B2 = dict(num_attention_heads=12, attention_head_dim=64, in_channels=4, out_channels=4,
              num_layers=12, sample_size=32, patch_size=2, num_embeds_ada_norm=1000,
              norm_eps=1e-6)
# CPU-sized stand-ins of the same layouts, quick to compile (the accelerator report's --quick).
TINY_UNET = dict(DDPM_CIFAR10, sample_size=8, block_out_channels=(16,),
                 down_block_types=("AttnDownBlock2D",), up_block_types=("AttnUpBlock2D",),
                 layers_per_block=1, norm_num_groups=8)
TINY_DIT = dict(DIT_B2, num_attention_heads=2, attention_head_dim=16, num_layers=1,
                sample_size=8, num_embeds_ada_norm=10)
ARCHS = {"unet": DDPM_CIFAR10, "dit": DIT_B2}


@dataclasses.dataclass
class Built:
  """Our network, its params, and the diffusers peer holding the same weights (if any)."""

  ours: Any
  params: Any
  image_shape: tuple[int, int, int]
  classes: int
  peer: Any = None  # the torch module, None where diffusers is missing
  peer_reason: str | None = None  # why there is no peer


def _init_params(ours, image_shape, classes: int):
  x = jnp.zeros((1, *image_shape))
  cond = {"label": jnp.zeros((1,), jnp.int32)} if classes else None
  return jax.jit(lambda r: ours.init(r, x, jnp.zeros((1,), jnp.int32), cond=cond,
                                     train=False)["params"])(jax.random.PRNGKey(0))


def build_model(model_name: str, dtype, arch: dict | None = None) -> Built:
  """Our U-Net / DiT in the diffusers layout ``arch`` (default: Ho et al.'s CIFAR-10 U-Net,
  DiT-B/2), with the peer's weights where diffusers is installed, else our own init."""
  arch = dict(arch or ARCHS[model_name])
  shape = (arch["sample_size"], arch["sample_size"], arch["in_channels"])
  classes = arch.get("num_embeds_ada_norm", 0) if model_name == "dit" else 0
  try:
    import torch
    from diffusers import DiTTransformer2DModel, UNet2DModel
  except ImportError as e:
    peer, reason = None, f"unavailable: {e}"
  else:
    torch.manual_seed(0)
    peer, reason = (UNet2DModel if model_name == "unet" else DiTTransformer2DModel)(**arch), None
  if model_name == "unet":
    kwargs = unet_kwargs_from_diffusers(dict(peer.config) if peer is not None else arch)
    kwargs["dropout"] = arch.get("dropout", 0.0)
    ours = UNet(dtype=dtype, **kwargs)
    if peer is None:
      return Built(ours, _init_params(ours, shape, 0), shape, 0, None, reason)
    sd = {k: v.numpy() for k, v in peer.state_dict().items()}
    return Built(ours, convert_unet_state_dict(sd, len(kwargs["ch_mult"])), shape, 0, peer)
  ours = DiT(dtype=dtype, **dit_kwargs_from_diffusers(dict(peer.config) if peer is not None
                                                      else arch))
  if peer is None:
    return Built(ours, _init_params(ours, shape, classes), shape, classes, None, reason)
  import torch

  with torch.no_grad():  # one shared embedder, as the paper's DiT (see convert.diffusers_dit)
    for block in peer.transformer_blocks[1:]:
      block.norm1.emb.load_state_dict(peer.transformer_blocks[0].norm1.emb.state_dict())
  sd = {k: v.numpy() for k, v in peer.state_dict().items()}
  return Built(ours, convert_dit_state_dict(sd, arch["num_layers"]), shape, classes, peer)


def make_batch(rng: np.random.Generator, batch: int, shape, classes: int) -> dict:
  out = {"x0": rng.uniform(-1, 1, (batch, *shape)).astype(np.float32)}
  if classes:
    y = rng.integers(0, classes, batch)
    out["label"] = np.where(rng.random(batch) < 0.1, classes, y).astype(np.int32)
  return out


def jax_stepper(ours, params, classes: int, lr: float, dtype_name: str):
  schedule = schedules.linear(T)

  def loss_fn(p, batch, rng):
    k_t, k_eps, k_drop = jax.random.split(rng, 3)
    x0 = batch["x0"]
    t = jax.random.randint(k_t, (x0.shape[0],), 0, T)
    eps = jax.random.normal(k_eps, x0.shape)
    cond = {"label": batch["label"]} if classes else None
    x_t = process.q_sample_discrete(schedule, x0, t, eps)
    pred = ours.apply({"params": p}, x_t, t, cond=cond, train=True, rngs={"dropout": k_drop})
    return jnp.mean(jnp.square(pred - eps)), {}

  tx = optax.adam(lr)
  params = jax.tree.map(jnp.asarray, params)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     ema_params=jax.tree.map(jnp.copy, params), rng=jax.random.key(0))
  mesh = sharding.make_mesh(1, jax.devices()[:1])
  shard = sharding.state_shardings(state, mesh)
  state = jax.device_put(state, shard)
  step = make_train_step(loss_fn, tx, mesh=mesh, state_sharding=shard, clip_grad_norm=1.0,
                         compute_dtype=dtype_name, ema_decay=0.9999)

  def run(batch):
    nonlocal state
    state, metrics = step(state, batch)
    return metrics["loss"]

  return run


def torch_stepper(peer, classes: int, lr: float, dtype_name: str, compile_model: bool,
                  device: str = "cpu"):
  import torch

  peer.to(device)
  model = torch.compile(peer) if compile_model else peer
  model.train()
  opt = torch.optim.Adam(peer.parameters(), lr=lr, foreach=True)
  params = [p for p in peer.parameters()]
  ema = [p.detach().clone() for p in params]
  alpha_bar = torch.tensor(np.asarray(schedules.linear(T).alphas_cumprod_T, np.float32),
                           device=device)
  autocast = dtype_name == "bfloat16"

  def run(batch):
    x0 = torch.from_numpy(batch["x0"]).to(device).permute(0, 3, 1, 2)
    t = torch.randint(0, T, (x0.shape[0],), device=device)
    eps = torch.randn_like(x0)
    ab = alpha_bar[t][:, None, None, None]
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
      if classes:
        labels = torch.from_numpy(batch["label"]).long().to(device)
        pred = model(xt, t, class_labels=labels).sample
      else:
        pred = model(xt, t).sample
    loss = torch.mean((pred.float() - eps) ** 2)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    with torch.no_grad():
      torch._foreach_lerp_(ema, params, 1.0 - 0.9999)
    return loss

  return run


def time_steps(run, batches, sync) -> float:
  t0 = time.perf_counter()
  for b in batches:
    out = run(b)
  sync(out)
  return len(batches) / (time.perf_counter() - t0)


def measure(model_name: str, *, batch: int, dtype_name: str, steps: int, rounds: int,
            compile_peer: bool = True, with_peer: bool = True, arch: dict | None = None,
            deadline: common.Deadline | None = None, log=print) -> tuple[dict, str | None]:
  """Train steps/s of both sides over alternating rounds (at least one; no new round once
  ``deadline`` has expired); (results, peer description, or None without a peer)."""
  dtype = jnp.bfloat16 if dtype_name == "bfloat16" else jnp.float32
  lr = 2e-4 if model_name == "unet" else 1e-4
  b = build_model(model_name, dtype, arch)
  rng = np.random.default_rng(0)
  batches = [make_batch(rng, batch, b.image_shape, b.classes) for _ in range(steps)]
  sides = {"jax": (jax_stepper(b.ours, b.params, b.classes, lr, dtype_name),
                   lambda x: jax.block_until_ready(x))}
  peer_desc, results = None, {}
  if with_peer and b.peer is None:
    peer_desc = results["peer_reason"] = b.peer_reason
  elif with_peer:
    import torch

    dev = common.torch_device()
    peer_desc = (f"diffusers {type(b.peer).__name__} (same weights), "
                 f"{'torch.compile' if compile_peer else 'eager'} on {dev}")
    sides["torch"] = (torch_stepper(b.peer, b.classes, lr, dtype_name, compile_peer, dev),
                      lambda x: float(x.detach()))
    results.update(torch_threads=torch.get_num_threads(), torch_compile=compile_peer)
  for name, (run, sync) in sides.items():  # compile / warm up, not timed
    t0 = time.perf_counter()
    for x in batches[:2]:
      sync(run(x))
    results[f"{name}_warmup_s"] = time.perf_counter() - t0
    log(f"{name}: warm-up (compilation) {results[f'{name}_warmup_s']:.1f}s")
  rates = {name: [] for name in sides}
  for r in range(rounds):
    if r and deadline is not None and deadline.expired():
      break
    for name, (run, sync) in sides.items():
      rates[name].append(time_steps(run, batches, sync))
    log(f"round {r}: " + ", ".join(f"{n} {v[-1]:.3f} steps/s" for n, v in rates.items()))
  del sides
  common.release_torch_memory()
  results.update(rounds=len(rates["jax"]),
                 **{f"{n}_steps_per_s": statistics.median(v) for n, v in rates.items()})
  results["jax_images_per_s"] = results["jax_steps_per_s"] * batch
  if "torch" in rates:
    results["torch_images_per_s"] = results["torch_steps_per_s"] * batch
    results["ratio_jax_over_torch"] = results["jax_steps_per_s"] / results["torch_steps_per_s"]
    # Robust to load that changes between rounds: each round's JAX and torch runs are adjacent.
    results["ratio_median_of_rounds"] = statistics.median(
        j / t for j, t in zip(rates["jax"], rates["torch"]))
  return results, peer_desc


def record(model_name: str, results: dict, peer: str | None, *, batch: int, dtype_name: str,
           steps: int, arch: dict | None = None, command: str | None = None) -> dict:
  """The benchmark's JSON record (experiments/bench/common.py's schema)."""
  arch = dict(arch or ARCHS[model_name])
  return common.bench_record(
      f"denoiser_train_{model_name}",
      shapes={"model": model_name, "batch": batch, "dtype": dtype_name,
              "steps_per_round": steps, "arch": arch},
      results=results, peer=peer,
      notes="eps-prediction MSE, clip 1, Adam, EMA 0.9999; medians over alternating rounds",
      command=command)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", choices=("unet", "dit"), default="unet")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  ap.add_argument("--steps", type=int, default=3, help="timed steps per round and side")
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--no-compile", action="store_true", help="skip torch.compile on the peer")
  ap.add_argument("--no-peer", action="store_true")
  ap.add_argument("--tiny", action="store_true",
                  help="a tiny layout of the same network (a CPU smoke run, not a measurement)")
  ap.add_argument("--out", default="", help="FILE.json, or a folder for denoiser_train_MODEL.json")
  args = ap.parse_args()
  arch = {"unet": TINY_UNET, "dit": TINY_DIT}[args.model] if args.tiny else None
  results, peer = measure(args.model, batch=args.batch, dtype_name=args.dtype, steps=args.steps,
                          rounds=args.rounds, compile_peer=not args.no_compile,
                          with_peer=not args.no_peer, arch=arch,
                          log=lambda m: print(m, flush=True))
  print(json.dumps({"model": args.model, "batch": args.batch, "dtype": args.dtype,
                    "device": jax.devices()[0].device_kind, **results}, indent=1))
  path = common.out_path(args.out, f"denoiser_train_{args.model}")
  if path:
    common.write_json(path, record(args.model, results, peer, batch=args.batch,
                                   dtype_name=args.dtype, steps=args.steps, arch=arch))
    print(f"wrote {path}")


if __name__ == "__main__":
  main()
