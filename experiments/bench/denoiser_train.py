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

Run (CPU here; on a GPU use --batch 128 --dtype bfloat16):
  python -m experiments.bench.denoiser_train --model unet --batch 8 --dtype float32
  python -m experiments.bench.denoiser_train --model dit --batch 8 --dtype float32
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from seqgen_jax.convert.diffusers_dit import convert_dit_state_dict, dit_kwargs_from_diffusers
from seqgen_jax.convert.diffusers_unet import convert_unet_state_dict, unet_kwargs_from_diffusers
from seqgen_jax.diffusion import process, schedules
from seqgen_jax.nn.dit import DiT
from seqgen_jax.nn.unet import UNet
from seqgen_jax.train import sharding
from seqgen_jax.train.state import TrainState
from seqgen_jax.train.step import make_train_step

T = 1000
SCHEDULE = schedules.linear(T)  # Ho et al.: beta 1e-4 .. 0.02
ALPHA_BAR = np.asarray(SCHEDULE.alphas_cumprod_T, np.float32)

DDPM_CIFAR10 = dict(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2, attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False,
    freq_shift=1, norm_eps=1e-6, norm_num_groups=32, dropout=0.1)
DIT_B2 = dict(num_attention_heads=12, attention_head_dim=64, in_channels=4, out_channels=4,
              num_layers=12, sample_size=32, patch_size=2, num_embeds_ada_norm=1000,
              norm_eps=1e-6)


def build(model_name: str, dtype):
  """(torch peer, our flax module, our params from the peer's weights, image shape, classes)."""
  torch.manual_seed(0)
  if model_name == "unet":
    from diffusers import UNet2DModel

    peer = UNet2DModel(**DDPM_CIFAR10)
    kwargs = unet_kwargs_from_diffusers(dict(peer.config))
    kwargs["dropout"] = 0.1
    ours = UNet(dtype=dtype, **kwargs)
    params = convert_unet_state_dict({k: v.numpy() for k, v in peer.state_dict().items()},
                                     len(kwargs["ch_mult"]))
    return peer, ours, params, (32, 32, 3), 0
  from diffusers import DiTTransformer2DModel

  peer = DiTTransformer2DModel(**DIT_B2)
  with torch.no_grad():  # one shared embedder, as the paper's DiT (see convert.diffusers_dit)
    for block in peer.transformer_blocks[1:]:
      block.norm1.emb.load_state_dict(peer.transformer_blocks[0].norm1.emb.state_dict())
  ours = DiT(dtype=dtype, **dit_kwargs_from_diffusers(dict(peer.config)))
  params = convert_dit_state_dict({k: v.numpy() for k, v in peer.state_dict().items()}, 12)
  return peer, ours, params, (32, 32, 4), 1000


def make_batch(rng: np.random.Generator, batch: int, shape, classes: int) -> dict:
  out = {"x0": rng.uniform(-1, 1, (batch, *shape)).astype(np.float32)}
  if classes:
    y = rng.integers(0, classes, batch)
    out["label"] = np.where(rng.random(batch) < 0.1, classes, y).astype(np.int32)
  return out


def jax_stepper(ours, params, classes: int, lr: float, dtype_name: str):
  def loss_fn(p, batch, rng):
    k_t, k_eps, k_drop = jax.random.split(rng, 3)
    x0 = batch["x0"]
    t = jax.random.randint(k_t, (x0.shape[0],), 0, T)
    eps = jax.random.normal(k_eps, x0.shape)
    cond = {"label": batch["label"]} if classes else None
    x_t = process.q_sample_discrete(SCHEDULE, x0, t, eps)
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


def torch_stepper(peer, classes: int, lr: float, dtype_name: str, compile_model: bool):
  model = torch.compile(peer) if compile_model else peer
  model.train()
  opt = torch.optim.Adam(peer.parameters(), lr=lr, foreach=True)
  params = [p for p in peer.parameters()]
  ema = [p.detach().clone() for p in params]
  alpha_bar = torch.tensor(ALPHA_BAR)
  autocast = dtype_name == "bfloat16"

  def run(batch):
    x0 = torch.from_numpy(batch["x0"]).permute(0, 3, 1, 2)
    t = torch.randint(0, T, (x0.shape[0],))
    eps = torch.randn_like(x0)
    ab = alpha_bar[t][:, None, None, None]
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
      if classes:
        pred = model(xt, t, class_labels=torch.from_numpy(batch["label"]).long()).sample
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


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", choices=("unet", "dit"), default="unet")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  ap.add_argument("--steps", type=int, default=3, help="timed steps per round and side")
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--no-compile", action="store_true", help="skip torch.compile on the peer")
  ap.add_argument("--no-peer", action="store_true")
  args = ap.parse_args()
  dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
  lr = 2e-4 if args.model == "unet" else 1e-4
  peer, ours, params, shape, classes = build(args.model, dtype)
  rng = np.random.default_rng(0)
  batches = [make_batch(rng, args.batch, shape, classes) for _ in range(args.steps)]
  sides = {"jax": (jax_stepper(ours, params, classes, lr, args.dtype),
                   lambda x: jax.block_until_ready(x))}
  if not args.no_peer:
    sides["torch"] = (torch_stepper(peer, classes, lr, args.dtype, not args.no_compile),
                      lambda x: float(x.detach()))
  for name, (run, sync) in sides.items():  # compile / warm up, not timed
    t0 = time.perf_counter()
    for b in batches[:2]:
      sync(run(b))
    print(f"{name}: warm-up (compilation) {time.perf_counter() - t0:.1f}s", flush=True)
  rates = {name: [] for name in sides}
  for r in range(args.rounds):
    for name, (run, sync) in sides.items():
      rates[name].append(time_steps(run, batches, sync))
    print(f"round {r}: " + ", ".join(f"{n} {v[-1]:.3f} steps/s" for n, v in rates.items()),
          flush=True)
  result = {"model": args.model, "batch": args.batch, "dtype": args.dtype,
            "device": jax.devices()[0].device_kind, "torch_threads": torch.get_num_threads(),
            "torch_compile": not args.no_compile,
            **{f"{n}_steps_per_s": statistics.median(v) for n, v in rates.items()}}
  if "torch" in rates:
    result["ratio_jax_over_torch"] = result["jax_steps_per_s"] / result["torch_steps_per_s"]
    # Robust to load that changes between rounds: each round's JAX and torch runs are adjacent.
    result["ratio_median_of_rounds"] = statistics.median(
        j / t for j, t in zip(rates["jax"], rates["torch"]))
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
