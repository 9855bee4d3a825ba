"""DDIM-50 sampling throughput (images/s): this codebase's compiled sampler vs diffusers, same
network, same weights, same device, same run.

Both sides denoise the same batch of pure noise x_T (one fixed draw, so that the first outputs
double as an equality check of the two samplers) with 50 deterministic DDIM steps (``--steps``;
eta = 0, "leading" spacing, Ho et al.'s linear schedule, eps prediction) through Ho et al.'s
CIFAR-10 DDPM U-Net (35.7M parameters; ``--model=unet``) or a DiT on 32x32x4 latents
(``--model=dit``, DiT-B/2 by default, class-conditional). The JAX side is
``seqgen_jax.diffusion.samplers.ddim_sample``: the whole 50-step walk is one ``lax.scan`` under
one ``jax.jit``. The peer is diffusers' ``DDIMScheduler`` driving the ``UNet2DModel`` /
``DiTTransformer2DModel`` (optionally ``torch.compile``d) in the usual Python loop, in
``torch.inference_mode``. Our network gets the
peer's weights through seqgen_jax.convert. Compilation and warm-up are excluded; each of
``--rounds`` rounds times one batch on each side in turn (so machine load hits both alike), and
the medians are reported with the ratio of medians. The peer runs on CUDA when the installed
torch has it; where diffusers is missing the JAX side still runs (its own initial weights) and
the peer is reported as unavailable with the reason. ``--out`` writes the JSON record.

  python -m experiments.bench.ddim_sampling                     # CPU-sized: batch 4, float32
  python -m experiments.bench.ddim_sampling --batch 256 --dtype bfloat16   # a GPU
  python -m experiments.bench.ddim_sampling --model dit --batch 4
  python -m experiments.bench.ddim_sampling --model unet --tiny --steps 5 --no-compile  # smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench import common
from experiments.bench.denoiser_train import ARCHS, TINY_DIT, TINY_UNET, build_model
from seqgen_jax.diffusion import samplers, schedules

NUM_STEPS = 50


def jax_sampler(ours, params, shape, classes: int, batch: int, num_steps: int = NUM_STEPS):
  """A jitted ``rng -> images`` running DDIM (50 steps by default) with our network."""
  schedule = schedules.linear(1000)
  labels = jnp.arange(batch, dtype=jnp.int32) % max(classes, 1)

  def model_fn(x, t, cond):
    return ours.apply({"params": params}, x, t, cond=cond, train=False)

  @jax.jit
  def run(rng, x_start=None):
    cond = {"label": labels} if classes else None
    return samplers.ddim_sample(model_fn, schedule, (batch, *shape), rng, cond=cond,
                                num_steps=num_steps, eta=0.0, spacing="leading",
                                x_start=x_start)

  return run


def torch_sampler(peer, shape, classes: int, batch: int, dtype: str, compile_model: bool,
                  device: str = "cpu", num_steps: int = NUM_STEPS):
  """A ``seed -> images`` closure running diffusers' DDIMScheduler over the peer network (on
  ``device``; images come back on that device)."""
  import torch
  from diffusers import DDIMScheduler

  sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                        beta_end=0.02, clip_sample=False, set_alpha_to_one=True,
                        timestep_spacing="leading", prediction_type="epsilon")
  sched.set_timesteps(num_steps, device=device)
  peer.to(device)
  model = torch.compile(peer) if compile_model else peer
  peer.eval()
  labels = (torch.arange(batch) % max(classes, 1)).to(device)
  h, w, c = shape

  def run(seed, x_start=None):
    g = torch.Generator(device=device).manual_seed(seed)
    x = (torch.randn((batch, c, h, w), generator=g, device=device) if x_start is None
         else x_start.to(device))
    with torch.inference_mode(), torch.autocast(device, torch.bfloat16,
                                                 enabled=dtype == "bfloat16"):
      for t in sched.timesteps:
        tb = t.expand(batch)
        out = (model(x, tb, class_labels=labels) if classes else model(x, tb)).sample
        x = sched.step(out.float()[:, :c], t, x).prev_sample
    common.torch_sync(device)
    return x

  return run


def measure(model_name: str, *, batch: int, dtype_name: str, rounds: int,
            compile_peer: bool = True, with_peer: bool = True, arch: dict | None = None,
            num_steps: int = NUM_STEPS, deadline: common.Deadline | None = None, log=print
            ) -> tuple[dict, str | None]:
  """DDIM images/s of both sides over alternating rounds (at least one; no new round once
  ``deadline`` has expired) and the largest difference of their images from the same x_T;
  (results, peer description, or None without a peer)."""
  dtype = jnp.bfloat16 if dtype_name == "bfloat16" else jnp.float32
  b = build_model(model_name, dtype, arch)
  params = jax.tree.map(jnp.asarray, b.params)
  shape, classes = b.image_shape, b.classes
  # Every run on both sides starts from the same x_T, so that the warm-up outputs double as the
  # equality check and the timed runs reuse the one compiled sampler.
  x_T = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
  run_j, x_T_jax = jax_sampler(b.ours, params, shape, classes, batch, num_steps), jnp.asarray(x_T)
  sides = {"jax": lambda: jax.block_until_ready(run_j(jax.random.PRNGKey(0), x_T_jax))}
  peer_desc, results = None, {"steps": num_steps}
  if with_peer and b.peer is None:
    peer_desc = results["peer_reason"] = b.peer_reason
  elif with_peer:
    import torch

    dev = common.torch_device()
    peer_desc = (f"diffusers DDIMScheduler loop over {type(b.peer).__name__} (same weights), "
                 f"{'torch.compile' if compile_peer else 'eager'} on {dev}")
    run_t = torch_sampler(b.peer, shape, classes, batch, dtype_name, compile_peer, dev,
                          num_steps)
    x_T_torch = torch.from_numpy(x_T).permute(0, 3, 1, 2).contiguous().to(dev)
    sides["diffusers"] = lambda: run_t(0, x_T_torch)
    results.update(torch_threads=torch.get_num_threads(), torch_compile=compile_peer)
  first = {}
  for name, once in sides.items():  # compilation / warm-up, not timed
    t0 = time.perf_counter()
    first[name] = once()
    results[f"{name}_warmup_s"] = time.perf_counter() - t0
    log(f"{name}: warm-up (compilation) {results[f'{name}_warmup_s']:.1f}s, "
        f"output {tuple(first[name].shape)}")
  if "diffusers" in first:
    # The same start noise on both sides: the two samplers must land on the same images.
    ours_x0 = np.asarray(first["jax"], np.float32)
    peer_x0 = first["diffusers"].permute(0, 2, 3, 1).float().cpu().numpy()
    results["max_abs_diff_same_x_T"] = float(np.max(np.abs(ours_x0 - peer_x0)))
    log(f"same x_T: max |ours - diffusers| = {results['max_abs_diff_same_x_T']:.2e} "
        f"(images in about [-1, 1])")
  del first
  rates = {name: [] for name in sides}
  for r in range(rounds):
    if r and deadline is not None and deadline.expired():
      break
    for name, once in sides.items():
      t0 = time.perf_counter()
      once()
      rates[name].append(batch / (time.perf_counter() - t0))
    log(f"round {r}: " + ", ".join(f"{n} {v[-1]:.3f} images/s" for n, v in rates.items()))
  del sides
  common.release_torch_memory()
  results.update(rounds=len(rates["jax"]),
                 **{f"{n}_images_per_s": statistics.median(v) for n, v in rates.items()})
  if "diffusers" in rates:
    results["ratio_jax_over_diffusers"] = (results["jax_images_per_s"]
                                           / results["diffusers_images_per_s"])
  return results, peer_desc


def record(model_name: str, results: dict, peer: str | None, *, batch: int, dtype_name: str,
           arch: dict | None = None, num_steps: int = NUM_STEPS,
           command: str | None = None) -> dict:
  """The benchmark's JSON record (experiments/bench/common.py's schema)."""
  return common.bench_record(
      f"ddim_sampling_{model_name}",
      shapes={"model": model_name, "batch": batch, "dtype": dtype_name, "steps": num_steps,
              "arch": dict(arch or ARCHS[model_name])},
      results=results, peer=peer,
      notes=f"DDIM-{num_steps}, eta 0, leading spacing, linear schedule; medians over "
            "alternating rounds",
      command=command)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", choices=("unet", "dit"), default="unet")
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--steps", type=int, default=NUM_STEPS, help="DDIM steps")
  ap.add_argument("--no-compile", action="store_true", help="skip torch.compile on the peer")
  ap.add_argument("--no-peer", action="store_true")
  ap.add_argument("--tiny", action="store_true",
                  help="a tiny layout of the same network (a CPU smoke run, not a measurement)")
  ap.add_argument("--out", default="", help="FILE.json, or a folder for ddim_sampling_MODEL.json")
  args = ap.parse_args()
  arch = {"unet": TINY_UNET, "dit": TINY_DIT}[args.model] if args.tiny else None
  results, peer = measure(args.model, batch=args.batch, dtype_name=args.dtype,
                          rounds=args.rounds, compile_peer=not args.no_compile,
                          with_peer=not args.no_peer, num_steps=args.steps, arch=arch,
                          log=lambda m: print(m, flush=True))
  print(json.dumps({"model": args.model, "batch": args.batch, "dtype": args.dtype,
                    "device": jax.devices()[0].device_kind, **results}, indent=2))
  path = common.out_path(args.out, f"ddim_sampling_{args.model}")
  if path:
    common.write_json(path, record(args.model, results, peer, batch=args.batch,
                                   dtype_name=args.dtype, num_steps=args.steps, arch=arch))
    print(f"wrote {path}")


if __name__ == "__main__":
  main()
