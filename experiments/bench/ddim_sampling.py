"""DDIM-50 sampling throughput (images/s): this codebase's compiled sampler vs diffusers, same
network, same weights, same device, same run.

Both sides draw a batch of images from pure noise with 50 deterministic DDIM steps (eta = 0,
"leading" spacing, Ho et al.'s linear schedule, eps prediction) through Ho et al.'s CIFAR-10
DDPM U-Net (35.7M parameters; ``--model=unet``) or a DiT on 32x32x4 latents (``--model=dit``,
DiT-B/2 by default, class-conditional). The JAX side is ``seqgen_jax.diffusion.samplers.
ddim_sample``: the whole 50-step walk is one ``lax.scan`` under one ``jax.jit``. The peer is
diffusers' ``DDIMScheduler`` driving the ``UNet2DModel`` / ``DiTTransformer2DModel`` (optionally
``torch.compile``d) in the usual Python loop, in ``torch.inference_mode``. Our network gets the
peer's weights through seqgen_jax.convert. Compilation and warm-up are excluded; each of
``--rounds`` rounds times one batch on each side in turn (so machine load hits both alike), and
the medians are reported with the ratio of medians.

  python -m experiments.bench.ddim_sampling                     # CPU-sized: batch 4, float32
  python -m experiments.bench.ddim_sampling --batch 256 --dtype bfloat16   # a GPU
  python -m experiments.bench.ddim_sampling --model dit --batch 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from experiments.bench.denoiser_train import build
from seqgen_jax.diffusion import samplers, schedules

NUM_STEPS = 50


def jax_sampler(ours, params, shape, classes: int, batch: int):
  """A jitted ``rng -> images`` running DDIM-50 with our network."""
  schedule = schedules.linear(1000)
  labels = jnp.arange(batch, dtype=jnp.int32) % max(classes, 1)

  def model_fn(x, t, cond):
    return ours.apply({"params": params}, x, t, cond=cond, train=False)

  @jax.jit
  def run(rng, x_start=None):
    cond = {"label": labels} if classes else None
    return samplers.ddim_sample(model_fn, schedule, (batch, *shape), rng, cond=cond,
                                num_steps=NUM_STEPS, eta=0.0, spacing="leading",
                                x_start=x_start)

  return run


def torch_sampler(peer, shape, classes: int, batch: int, dtype: str, compile_model: bool):
  """A ``seed -> images`` closure running diffusers' DDIMScheduler over the peer network."""
  from diffusers import DDIMScheduler

  sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                        beta_end=0.02, clip_sample=False, set_alpha_to_one=True,
                        timestep_spacing="leading", prediction_type="epsilon")
  sched.set_timesteps(NUM_STEPS)
  model = torch.compile(peer) if compile_model else peer
  peer.eval()
  labels = torch.arange(batch) % max(classes, 1)
  h, w, c = shape

  def run(seed, x_start=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, c, h, w), generator=g) if x_start is None else x_start
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16,
                                                 enabled=dtype == "bfloat16"):
      for t in sched.timesteps:
        tb = t.expand(batch)
        out = (model(x, tb, class_labels=labels) if classes else model(x, tb)).sample
        x = sched.step(out.float()[:, :c], t, x).prev_sample
    return x

  return run


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", choices=("unet", "dit"), default="unet")
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--no-compile", action="store_true", help="skip torch.compile on the peer")
  ap.add_argument("--no-peer", action="store_true")
  ap.add_argument("--out", default="", help="also write the result as JSON here")
  args = ap.parse_args()
  dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
  peer, ours, params, shape, classes = build(args.model, dtype)
  params = jax.tree.map(jnp.asarray, params)
  sides = {"jax": (jax_sampler(ours, params, shape, classes, args.batch),
                   lambda r: jax.block_until_ready(r(jax.random.PRNGKey(0))))}
  if not args.no_peer:
    run_t = torch_sampler(peer, shape, classes, args.batch, args.dtype, not args.no_compile)
    sides["diffusers"] = (run_t, lambda r: r(0))
  for name, (run, once) in sides.items():  # compilation / warm-up, not timed
    t0 = time.perf_counter()
    out = once(run)
    print(f"{name}: warm-up (compilation) {time.perf_counter() - t0:.1f}s, "
          f"output {tuple(out.shape)}", flush=True)
  if "diffusers" in sides:
    # Same start noise on both sides: the two samplers must land on the same images.
    x_T = np.random.default_rng(0).standard_normal((args.batch, *shape)).astype(np.float32)
    ours_x0 = np.asarray(sides["jax"][0](jax.random.PRNGKey(0), jnp.asarray(x_T)), np.float32)
    peer_x0 = sides["diffusers"][0](0, torch.from_numpy(x_T).permute(0, 3, 1, 2).contiguous())
    peer_x0 = peer_x0.permute(0, 2, 3, 1).float().numpy()
    print(f"same x_T: max |ours - diffusers| = {np.max(np.abs(ours_x0 - peer_x0)):.2e} "
          f"(images in about [-1, 1])", flush=True)
  rates = {name: [] for name in sides}
  for r in range(args.rounds):
    for name, (run, once) in sides.items():
      t0 = time.perf_counter()
      once(run)
      rates[name].append(args.batch / (time.perf_counter() - t0))
    print(f"round {r}: " + ", ".join(f"{n} {v[-1]:.3f} images/s" for n, v in rates.items()),
          flush=True)
  result = {"model": args.model, "batch": args.batch, "dtype": args.dtype, "steps": NUM_STEPS,
            "device": jax.devices()[0].device_kind, "torch_threads": torch.get_num_threads(),
            "torch_compile": not args.no_compile,
            **{f"{n}_images_per_s": statistics.median(v) for n, v in rates.items()}}
  if "diffusers" in rates:
    result["ratio_jax_over_diffusers"] = (result["jax_images_per_s"]
                                          / result["diffusers_images_per_s"])
  print(json.dumps(result, indent=2))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
