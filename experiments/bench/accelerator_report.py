"""One-command accelerator report: every GPU goal of the benchmarks, each against its peer.

  python -m experiments.bench.accelerator_report --out=/tmp/accel            # one H100 / H200
  python -m experiments.bench.accelerator_report --quick --out=/tmp/accel    # CPU smoke run
  python -m experiments.bench.accelerator_report --out=/tmp/accel --sections=attention_tflops

writes ``DIR/results.json`` (the run's device, versions, date, commit and command, and one
benchmark record per section in experiments/bench/common.py's schema) and ``DIR/report.md``
(the same as tables, by experiments/bench/tables.py). Sections, each the function of its
benchmark file, in this order:

  gpt2_train_step      GPT-2-124M, batch 8 x 1024, bf16: tokens/s and MFU (against the measured
                       matmul peak and the datasheet) vs Hugging Face GPT-2 + torch.compile
  attention_tflops     causal forward + backward TFLOP/s of the xla, blockwise and cudnn
                       backends vs torch SDPA, T = 1k, 2k, 4k, 8k, head 64 and 128, bf16
  rnn_bench            one LSTM layer forward + backward (64 x 512, 1024 wide, float32):
                       lax.scan and the fused cuDNN LSTM vs torch.nn.LSTM (cuDNN)
  denoiser_train_unet  Ho et al.'s CIFAR-10 DDPM U-Net, batch 128, bf16: train steps/s vs
                       diffusers UNet2DModel + torch.compile (same weights)
  denoiser_train_dit   DiT-B/2 on 32x32x4 latents, batch 128, bf16, vs diffusers' DiT
  ddim_sampling_dit    DDIM-50 sampling with DiT-B/2, batch 64, bf16, vs diffusers'
                       DDIMScheduler loop (and the largest image difference from the same x_T)
  showdown_scaling     the showdown's sweep: its full-preset models (experiments/configs/showdown/
                       full.py: 6 layers, width 384) trained at T = 512, 2048, 8192 with 64k
                       tokens a batch: tokens/s and memory

Every section runs in a try/except: a failure is recorded (error and traceback tail) and the
other sections still run; a peer that cannot run (diffusers missing, say) is reported as
unavailable with the reason. Every section has a soft time budget: its loops (attention points,
sweep points, timing rounds) start no new point once it is spent (a started compilation cannot
be interrupted), and a section that overran shrinks the budgets of those after it in proportion
(the run aims at ``--budget_s``). The budgets were sized from FLOPs on an H100 SXM (989 dense
bf16 TFLOP/s; steps assumed at ~40% of it, compilation from typical XLA / inductor times):

  section              timed work                                          compile      budget
  gpt2_train_step      7.0 TFLOP a step (8192 tokens x 855 MFLOP): ~18 ms,  JAX ~40 s,    100 s
                       25 steps a side; matmul peak 8192^3: ~5 s            inductor ~50 s
  attention_tflops     0.24 .. 1.9 TFLOP a call (7.2 TFLOP a sweep of the    24 x ~2 s     75 s
                       4 lengths and 2 heads), 12 calls each of 4 backends
  rnn_bench            1.6 TFLOP a call; the scan is latency-bound (~50 ms)  ~10 s         20 s
  denoiser_train_unet  128 x ~36 GFLOP = 4.6 TFLOP a step: ~25 ms, 27 a side ~40 + ~40 s    85 s
  denoiser_train_dit   128 x ~138 GFLOP = 18 TFLOP a step: ~50 ms, 27 a side ~30 + ~40 s    75 s
  ddim_sampling_dit    50 x 64 x 46 GFLOP = 147 TFLOP a run: ~0.4 s, 4 a side ~30 + ~30 s    55 s
  showdown_scaling     9 points, 5 steps each (a GPT step at T=2k: 8 TFLOP)  9 x ~4 s      40 s

450 s of sections plus start-up and writing: within 8 minutes on one H100 / H200. JAX gets at
most 60% of the GPU's memory, allocated on demand (XLA_PYTHON_CLIENT_MEM_FRACTION=0.6,
XLA_PYTHON_CLIENT_PREALLOCATE=false unless set), so that the PyTorch peers in the same process
find room; PyTorch's cached blocks are released after each peer.

``--quick``: CPU-sized tiny shapes (one- or two-layer models, T <= 128, DDIM-10), float32, eager
PyTorch peers (no torch.compile), one or two timing rounds, budgets that never bind: every
section and every peer runs end to end in well under a minute. Its numbers check the plumbing;
they are not measurements.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
import time
import traceback
from collections.abc import Callable

from experiments.bench import common, tables
from seqgen_jax.fileio import atomic_path

REPORT_SCHEMA = "seqgen_jax.accelerator_report/1"


@dataclasses.dataclass(frozen=True)
class Preset:
  """Shapes, dtype and budgets of one kind of run (``FULL`` for a GPU, ``QUICK`` for a CPU)."""

  name: str
  dtype: str
  torch_compile: bool
  budget_s: float
  sections: dict  # section name -> its arguments, with its nominal "budget_s"


def _tiny_archs() -> tuple[dict, dict]:
  from experiments.bench.denoiser_train import TINY_DIT, TINY_UNET

  return TINY_UNET, TINY_DIT


FULL = Preset("full", "bfloat16", True, 450.0, {
    "gpt2_train_step": dict(budget_s=100, batch=8, seq_len=1024, layers=12, heads=12,
                            width=768, vocab=50257, max_len=1024, steps=20, warmup=5,
                            peak_sizes=(4096, 8192)),
    "attention_tflops": dict(budget_s=75, seq_lens=(1024, 2048, 4096, 8192), head_dims=(64, 128),
                             tokens=16384, model_dim=2048, iters=10),
    "rnn_bench": dict(budget_s=20, batch=64, seq_len=512, hidden=1024, reps=5),
    "denoiser_train_unet": dict(budget_s=85, arch=None, batch=128, steps=5, rounds=5),
    "denoiser_train_dit": dict(budget_s=75, arch=None, batch=128, steps=5, rounds=5),
    "ddim_sampling_dit": dict(budget_s=55, arch=None, batch=64, rounds=3, num_steps=50),
    "showdown_scaling": dict(budget_s=40, mode="full", models=("gpt", "mingru", "lstm"),
                             seq_lens=(512, 2048, 8192), tokens=65536, repeats=3, model={}),
})


def quick_preset() -> Preset:
  """CPU-sized: every section end to end in seconds (tiny models, float32, eager peers)."""
  tiny_unet, tiny_dit = _tiny_archs()
  # Budgets that never bind here: --quick checks that every section and peer runs.
  return Preset("quick", "float32", False, 600.0, {
      "gpt2_train_step": dict(budget_s=60, batch=2, seq_len=32, layers=2, heads=2, width=32,
                              vocab=256, max_len=32, steps=2, warmup=1, peak_sizes=(256,)),
      "attention_tflops": dict(budget_s=60, seq_lens=(64, 128), head_dims=(16, 32), tokens=256,
                               model_dim=64, iters=2),
      "rnn_bench": dict(budget_s=60, batch=4, seq_len=16, hidden=32, reps=2),
      "denoiser_train_unet": dict(budget_s=60, arch=tiny_unet, batch=2, steps=2, rounds=1),
      "denoiser_train_dit": dict(budget_s=60, arch=tiny_dit, batch=2, steps=2, rounds=1),
      "ddim_sampling_dit": dict(budget_s=60, arch=tiny_dit, batch=2, rounds=1, num_steps=10),
      "showdown_scaling": dict(budget_s=60, mode="quick", models=("gpt", "lstm"),
                               seq_lens=(16, 32), tokens=64, repeats=2,
                               model=dict(d_model=32, hidden_size=32, num_layers=1, num_heads=2,
                                          d_ff=64)),
  })


# What each section is compared against, for the record of a section that failed before its
# benchmark could say.
PEERS = {
    "gpt2_train_step": "Hugging Face GPT2LMHeadModel + torch.compile",
    "attention_tflops": "torch scaled_dot_product_attention",
    "rnn_bench": "torch.nn.LSTM (cuDNN on a GPU)",
    "denoiser_train_unet": "diffusers UNet2DModel + torch.compile",
    "denoiser_train_dit": "diffusers DiTTransformer2DModel + torch.compile",
    "ddim_sampling_dit": "diffusers DDIMScheduler loop over DiTTransformer2DModel",
    "showdown_scaling": None,
}


def _log(msg: str) -> None:
  print(f"[accelerator_report] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ sections


def _gpt2(p: Preset, c: dict, deadline: common.Deadline, command: str) -> dict:
  from experiments.bench import gpt2_train_step as g

  shape = g.Shape(**{f.name: c[f.name] for f in dataclasses.fields(g.Shape)})
  row, peer = g.measure(shape, p.dtype, steps=c["steps"], warmup=c["warmup"],
                        torch_compile=p.torch_compile, peak_sizes=tuple(c["peak_sizes"]))
  return g.record(row, peer, shape, p.dtype, attention="auto", steps=c["steps"],
                  warmup=c["warmup"], command=command)


def _attention(p: Preset, c: dict, deadline: common.Deadline, command: str) -> dict:
  from experiments.bench import attention_tflops as a

  kw = dict(tokens=c["tokens"], model_dim=c["model_dim"], dtype_name=p.dtype, iters=c["iters"])
  rows, peer = a.measure(list(c["seq_lens"]), list(c["head_dims"]), deadline=deadline, **kw)
  return a.record(rows, peer, seq_lens=c["seq_lens"], head_dims=c["head_dims"], command=command,
                  **kw)


def _lstm(p: Preset, c: dict, deadline: common.Deadline, command: str) -> dict:
  from experiments.bench import rnn_bench

  lstm = rnn_bench.part1(c["batch"], c["seq_len"], c["hidden"], c["reps"], True)
  return rnn_bench.record(lstm, None, c["reps"], command=command)


def _denoiser(model: str) -> Callable[..., dict]:
  def run(p: Preset, c: dict, deadline: common.Deadline, command: str) -> dict:
    from experiments.bench import denoiser_train as d

    results, peer = d.measure(model, batch=c["batch"], dtype_name=p.dtype, steps=c["steps"],
                              rounds=c["rounds"], compile_peer=p.torch_compile, arch=c["arch"],
                              deadline=deadline, log=_log)
    return d.record(model, results, peer, batch=c["batch"], dtype_name=p.dtype,
                    steps=c["steps"], arch=c["arch"], command=command)

  return run


def _ddim(p: Preset, c: dict, deadline: common.Deadline, command: str) -> dict:
  from experiments.bench import ddim_sampling

  results, peer = ddim_sampling.measure("dit", batch=c["batch"], dtype_name=p.dtype,
                                        rounds=c["rounds"], compile_peer=p.torch_compile,
                                        arch=c["arch"], num_steps=c["num_steps"],
                                        deadline=deadline, log=_log)
  return ddim_sampling.record("dit", results, peer, batch=c["batch"], dtype_name=p.dtype,
                              arch=c["arch"], num_steps=c["num_steps"], command=command)


def _showdown(p: Preset, c: dict, deadline: common.Deadline, command: str) -> dict:
  """The showdown's throughput-vs-length sweep (experiments/showdown_bench.py), point by point
  in length-major order so that a spent budget drops the longest sequences."""
  from experiments import showdown, showdown_bench
  from seqgen_jax.registry import MODELS

  s = showdown.preset(c["mode"])  # experiments/configs/showdown/<mode>.py
  for k, v in c["model"].items():
    s.model[k] = v
  available = set(MODELS.names(kind="causal_lm"))
  models = [m for m in c["models"] if m in available]

  def config(name: str, t: int, b: int):
    # The showdown's own scaling config (copy task padded to length t), in the report's dtype.
    cfg = showdown.make_config(s, "lm", name, dict(name="copy", length=4, delay=t - 8,
                                                   alphabet=8), num_steps=100, batch_size=b)
    cfg.train.compute_dtype = p.dtype
    return cfg

  rows, skipped = [], []
  for t in c["seq_lens"]:
    for name in models:
      if (rows or skipped) and deadline.expired():  # the first point runs whatever the budget
        skipped.append({"model": name, "seq_len": t, "reason": "time budget spent"})
        continue
      try:
        got = showdown_bench.seq_len_scaling(config, [name], [t], c["tokens"], c["repeats"])
      except Exception as e:  # noqa: BLE001  (one point's failure is a result, not a crash)
        skipped.append({"model": name, "seq_len": t, "reason": f"{type(e).__name__}: {e}"[:300]})
        continue
      rows += got
      if not got:
        skipped.append({"model": name, "seq_len": t, "reason": "out of memory"})
  for name in c["models"]:
    if name not in available:
      skipped.append({"model": name, "seq_len": None, "reason": "not a registered causal_lm"})
  return common.bench_record(
      "showdown_scaling",
      shapes={"models": models, "seq_lens": list(c["seq_lens"]), "tokens_per_batch": c["tokens"],
              "dtype": p.dtype, "model": {k: v for k, v in s.model.items()},
              "repeats": c["repeats"]},
      results={"rows": rows, "skipped": skipped}, peer=None,
      notes="one train step (forward, backward, AdamW) at batch = tokens / T; memory: XLA's "
            "compile-time estimate of the step", command=command)


SECTIONS: dict[str, Callable[..., dict]] = {
    "gpt2_train_step": _gpt2, "attention_tflops": _attention, "rnn_bench": _lstm,
    "denoiser_train_unet": _denoiser("unet"), "denoiser_train_dit": _denoiser("dit"),
    "ddim_sampling_dit": _ddim, "showdown_scaling": _showdown,
}


# ------------------------------------------------------------------------------ the run


def _failed_record(name: str, p: Preset, c: dict, e: BaseException, command: str) -> dict:
  shapes = {k: v for k, v in c.items() if k != "budget_s"}
  rec = common.bench_record(name, shapes={**shapes, "dtype": p.dtype}, results={},
                            peer=PEERS[name], notes="the section failed; see error",
                            command=command)
  rec["status"] = "failed"
  rec["error"] = f"{type(e).__name__}: {e}".strip()[:1000]
  rec["traceback"] = traceback.format_exc()[-4000:]
  return rec


def _free_memory() -> None:
  import jax

  gc.collect()
  jax.clear_caches()
  common.release_torch_memory()


def run_section(name: str, p: Preset, budget_s: float, command: str) -> dict:
  """One section's record, with ``status`` ("ok" / "failed") and its time against budget."""
  c = p.sections[name]
  deadline = common.Deadline(budget_s)
  _log(f"{name}: start (budget {budget_s:.0f} s)")
  try:
    rec = SECTIONS[name](p, c, deadline, command)
    rec["status"] = "ok"
  except Exception as e:  # noqa: BLE001  (a failed section is reported; the others still run)
    rec = _failed_record(name, p, c, e, command)
    _log(f"{name}: FAILED: {rec['error']}")
  finally:
    _free_memory()
  rec["section"] = {"budget_s": budget_s, "elapsed_s": deadline.elapsed()}
  _log(f"{name}: {rec['status']} in {deadline.elapsed():.1f} s")
  return rec


def run_report(out: str, *, quick: bool = False, sections: list[str] | None = None,
               budget_s: float | None = None, command: str | None = None) -> dict:
  """Runs the sections, writing ``out/results.json`` and ``out/report.md`` after each one (a
  crash keeps what was measured); returns the results."""
  p = quick_preset() if quick else FULL
  names = sections or list(SECTIONS)
  command = command if command is not None else common.command_line()
  total = common.Deadline(budget_s or p.budget_s)
  results = {"schema": REPORT_SCHEMA, "mode": p.name, "dtype": p.dtype,
             "torch_compile": p.torch_compile, "budget_s": total.seconds,
             "sections": {}}
  os.makedirs(out, exist_ok=True)
  for i, name in enumerate(names):
    # Nominal budgets, scaled down when earlier sections overran the total.
    nominal = [p.sections[n]["budget_s"] for n in names[i:]]
    left = max(0.0, total.seconds - total.elapsed())
    budget = p.sections[name]["budget_s"] * min(1.0, left / sum(nominal))
    rec = run_section(name, p, budget, command)
    results["sections"][name] = rec
    if i == 0:  # the run's device, versions, date, commit and command: those of its records
      results.update({k: rec[k] for k in ("date", "command", "git_commit", "device", "host",
                                          "versions")})
    results["total_s"] = total.elapsed()
    _write(out, results)
  _log(f"wrote {out}/results.json and {out}/report.md in {results['total_s']:.0f} s")
  return results


def _write(out: str, results: dict) -> None:
  common.write_json(os.path.join(out, "results.json"), results)
  with atomic_path(os.path.join(out, "report.md")) as tmp, open(tmp, "w") as f:
    f.write(render_report(results))


def render_report(results: dict) -> str:
  """report.md: the run's device, versions, date, commit and command, a summary of the
  sections, then each section's tables."""
  dev, host, vers = results["device"], results["host"], results["versions"]
  secs = results["sections"]
  ok = sum(r["status"] == "ok" for r in secs.values())
  cc = f", compute capability {dev['compute_capability']}" if "compute_capability" in dev else ""
  lines = [
      "# Accelerator report", "",
      f"- Device: {dev['kind']} x{dev['count']} ({dev['platform']}{cc}); host: {host['cpu']}, "
      f"{host['cores']} cores",
      "- Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
      f"- Date: {results['date']}; commit: {results['git_commit'] or 'unknown'}",
      f"- Command: `{results['command']}`",
      f"- Mode: {results['mode']} ({results['dtype']}; peers "
      f"{'with' if results['torch_compile'] else 'without'} torch.compile)"
      + ("; CPU-sized tiny shapes: a check of the plumbing, not a measurement"
         if results["mode"] == "quick" else ""),
      f"- Time: {results['total_s']:.0f} s (budget {results['budget_s']:.0f} s); "
      f"{ok} of {len(secs)} sections ran", "",
      tables.table(["section", "status", "time s", "budget s"],
                   [[tables.title(n), r["status"] + (f": {r['error'][:120]}"
                                                     if r["status"] != "ok" else ""),
                     f"{r['section']['elapsed_s']:.0f}", f"{r['section']['budget_s']:.0f}"]
                    for n, r in secs.items()]), ""]
  lines += [tables.render_record(r, level=2, with_command=False) for r in secs.values()]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True, help="report folder (results.json, report.md)")
  ap.add_argument("--quick", action="store_true", help="CPU-sized tiny shapes, float32")
  ap.add_argument("--sections", default="", help=f"comma-separated subset of: "
                                                 f"{', '.join(SECTIONS)}")
  ap.add_argument("--budget_s", type=float, default=None,
                  help="total seconds the run aims at (default 450; --quick 120)")
  args = ap.parse_args(argv)
  names = [n for n in args.sections.split(",") if n]
  unknown = [n for n in names if n not in SECTIONS]
  if unknown:
    print(f"error: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}",
          file=sys.stderr)
    return 2
  # Room for the PyTorch peers beside JAX on one GPU (see the module docstring).
  os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.6")
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  if args.quick and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    # --quick checks plumbing, not speed: XLA:CPU compiles about twice as fast unoptimised
    # (set before JAX starts its backend, which nothing above has done).
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()
  t0 = time.perf_counter()
  results = run_report(args.out, quick=args.quick, sections=names or None,
                       budget_s=args.budget_s)
  failed = [n for n, r in results["sections"].items() if r["status"] != "ok"]
  print(f"{len(results['sections']) - len(failed)} sections ok"
        + (f", failed: {', '.join(failed)}" if failed else "")
        + f"; {time.perf_counter() - t0:.0f} s; {args.out}/report.md")
  return 0


if __name__ == "__main__":
  sys.exit(main())
