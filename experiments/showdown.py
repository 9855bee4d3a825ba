"""The showdown: every model family on the same task, data and training budget, side by side.

  python -m experiments.showdown --mode=quick --out=/tmp/showdown     # CPU: ~2 min on 2 cores
  python -m experiments.showdown --mode=full --task=tinyshakespeare \
      --seeds=3 --out=/tmp/showdown_full                                  # GPU / TPU

For ``--task`` the showdown trains every registered model of the kinds that fit it (MODELS in
seqgen_jax/registry.py: ``causal_lm`` for the language-modelling tasks and, on Tiny Shakespeare,
``masked_lm`` for the masked diffusion LM of seqgen_jax/tasks/mdlm.py), so a newly registered
model appears without editing this file (``--models`` narrows the list). Each model trains with
``train.loop.train_and_evaluate`` on the same batches for ``--seeds`` seeds under one budget:

* ``--budget_flops``: the train step's FLOPs come from XLA's cost analysis of the lowered step
  (seqgen_jax/train/perf.py) with recurrent scans unrolled (XLA counts a loop body once;
  experiments/showdown_steps.py) and ``num_steps = floor(budget / FLOPs per step)``;
* ``--budget_seconds``: the compiled step's median time (compilation excluded) is measured and
  ``num_steps = floor(budget / seconds per step)``.

The report directory gets ``report.md`` (the table: parameters, training FLOPs, wall time,
training tokens/s, per-device memory, final quality with its 95% Student-t confidence interval
over seeds), ``results.json`` and the plots of experiments/showdown_report.py: quality vs FLOPs
and vs wall time; training throughput and memory vs sequence length; accuracy vs dependency
length on copy-with-delay and associative recall; the gradient reaching each input token vs its
distance from the answer (at the longest copy delay: vanishing gradients, measured); generation
latency per token (KV cache vs carried RNN state) and per image vs DDIM steps (U-Net, DiT).
Memory: the measured peak where the device reports one (GPU, TPU), otherwise (CPU) XLA's
compile-time estimate of the step (state + batch + temporaries); the report says which.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from typing import Any

from absl import app, flags, logging

_TASK = flags.DEFINE_string("task", "copy", "copy | assoc_recall | tinyshakespeare")
_BUDGET_FLOPS = flags.DEFINE_float("budget_flops", None, "Training FLOPs per model and seed.")
_BUDGET_SECONDS = flags.DEFINE_float("budget_seconds", None,
                                     "Training seconds per model and seed (instead of FLOPs).")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per model (for the confidence intervals).")
_MODE = flags.DEFINE_enum("mode", "quick", ["quick", "full"],
                          "quick: small models and lengths for a CPU; full: for a GPU / TPU.")
_OUT = flags.DEFINE_string("out", None, "Report directory.")
_MODELS = flags.DEFINE_list("models", None, "Only these models (default: every registered one).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Data directory (default $SEQGEN_DATA_DIR).")


@dataclasses.dataclass
class Settings:
  """Everything a showdown run needs; ``settings_for(mode)`` gives the two presets."""

  task: str = "copy"
  mode: str = "quick"
  budget_flops: float | None = None
  budget_seconds: float | None = None
  seeds: int = 3
  models: list[str] | None = None
  data_dir: str = ""
  batch_size: int = 32
  evals_per_run: int = 4
  model: dict = dataclasses.field(default_factory=dict)  # common config.model fields
  data: dict = dataclasses.field(default_factory=dict)  # per-task config.data fields
  lr: float = 3e-3
  sweep_models: list[str] = dataclasses.field(default_factory=list)
  sweep_steps: int = 200
  copy_delays: list[int] = dataclasses.field(default_factory=list)
  recall_pairs: list[int] = dataclasses.field(default_factory=list)
  scaling_models: list[str] = dataclasses.field(default_factory=list)
  scaling_lengths: list[int] = dataclasses.field(default_factory=list)
  scaling_tokens: int = 4096
  latency_lengths: list[int] = dataclasses.field(default_factory=list)
  denoiser: dict = dataclasses.field(default_factory=dict)
  image_shape: tuple[int, int, int] = (16, 16, 3)
  denoise_steps: list[int] = dataclasses.field(default_factory=list)
  repeats: int = 5


# Tasks: the config.data fields, which model kinds (and training task) fit, the quality metric.
TASK_KINDS = {"copy": [("lm", "causal_lm")], "assoc_recall": [("lm", "causal_lm")],
              "tinyshakespeare": [("lm", "causal_lm"), ("mdlm", "masked_lm")]}
METRICS = {"copy": "accuracy", "assoc_recall": "accuracy", "tinyshakespeare": "bits_per_char"}


def settings_for(mode: str, task: str = "copy") -> Settings:
  """The quick (CPU, minutes) or full (GPU / TPU) preset."""
  if mode == "quick":
    s = Settings(
        task=task, mode=mode, batch_size=32,
        model=dict(d_model=64, hidden_size=128, num_layers=2, num_heads=4, d_ff=256,
                   mlp_ratio=4, dropout=0.0),
        sweep_models=["rnn", "lstm", "gpt"], sweep_steps=150,
        copy_delays=[4, 16, 48], recall_pairs=[2, 6],
        scaling_models=["gpt", "lstm", "mingru"],
        scaling_lengths=[64, 256, 1024], scaling_tokens=2048,
        latency_lengths=[32, 256],
        denoiser=dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(1,), norm_groups=8,
                      dropout=0.0, hidden_size=64, depth=2, num_heads=4, patch_size=2),
        image_shape=(16, 16, 3), denoise_steps=[1, 10, 50], repeats=3)
    s.data = {"copy": dict(length=4, delay=8, alphabet=6),
              "assoc_recall": dict(num_pairs=8, num_keys=16, num_values=16),
              "tinyshakespeare": dict(seq_len=64)}[task]
    s.budget_flops = {"copy": 5e10, "assoc_recall": 5e10, "tinyshakespeare": 2e11}[task]
    return s
  if mode == "full":
    s = Settings(
        task=task, mode=mode, batch_size=64,
        model=dict(d_model=384, hidden_size=768, num_layers=6, num_heads=6, d_ff=1536,
                   mlp_ratio=4, dropout=0.0, attention="auto"),  # auto: cuDNN flash on GPU
        sweep_models=[], sweep_steps=2000,  # [] -> every causal_lm model
        copy_delays=[8, 32, 128, 512], recall_pairs=[4, 16, 64, 256],
        scaling_models=["gpt", "lstm", "mingru", "lru"],
        scaling_lengths=[128, 256, 512, 1024, 2048, 4096, 8192], scaling_tokens=65536,
        latency_lengths=[128, 512, 2048, 8192],
        denoiser=dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_levels=(1,),
                      norm_groups=32, dropout=0.0, hidden_size=384, depth=12, num_heads=6,
                      patch_size=2),
        image_shape=(32, 32, 3), denoise_steps=[1, 5, 10, 25, 50, 100, 250], repeats=5)
    s.data = {"copy": dict(length=16, delay=256, alphabet=8),
              "assoc_recall": dict(num_pairs=64, num_keys=128, num_values=64),
              "tinyshakespeare": dict(seq_len=256)}[task]
    # Budgets that train every model for thousands of steps: on Tiny Shakespeare ~5,500 GPT
    # steps of 64 x 256 tokens (the 10.7M-parameter GPT is nanoGPT's shakespeare-char model,
    # which trains 5,000), on the synthetic tasks >= 3,000 steps of the 27M-parameter LSTM.
    s.budget_flops = {"copy": 1e16, "assoc_recall": 1e16, "tinyshakespeare": 6e15}[task]
    s.lr = 1e-3
    return s
  raise ValueError(f"unknown mode '{mode}'; choose one of: quick, full")


# ------------------------------------------------------------------------------ configs


def make_config(s: Settings, train_task: str, model: str, data: dict, *, seed: int = 0,
                num_steps: int = 1, batch_size: int | None = None):
  """A training config: seqgen_jax's defaults + the showdown's model, data and optimizer."""
  from seqgen_jax.train.defaults import default_config

  c = default_config()
  c.task = train_task
  for k, v in data.items():
    c.data[k] = v
  c.data.data_dir = s.data_dir
  c.model.name = model
  for k, v in s.model.items():
    c.model[k] = v
  c.optimizer.lr = s.lr
  c.optimizer.weight_decay = 0.0
  c.optimizer.warmup_steps = max(1, min(100, num_steps // 10))
  c.optimizer.min_lr = s.lr / 10
  c.train.seed = seed
  c.train.num_steps = num_steps
  c.train.batch_size = batch_size or s.batch_size
  every = max(1, num_steps // s.evals_per_run)
  c.train.log_every = c.train.eval_every = every
  c.train.checkpoint_every = 0
  c.train.async_checkpoint = False
  c.train.sample_every = -1  # no sample text: the showdown keeps numbers only
  c.train.final_eval = False
  c.eval.num_batches = 4
  return c


def _data_config(task: str, s: Settings) -> dict:
  return {"name": task, **s.data}


def entries(s: Settings) -> list[tuple[str, str, str]]:
  """(training task, model kind, model name) for every registered model that fits the task."""
  import seqgen_jax.tasks  # noqa: F401  (registers the tasks and models)
  from seqgen_jax.errors import ConfigError
  from seqgen_jax.registry import MODELS

  if s.task not in TASK_KINDS:
    raise ConfigError(f"unknown showdown task '{s.task}'; choose one of: "
                      f"{', '.join(TASK_KINDS)}")
  out = [(t, kind, name) for t, kind in TASK_KINDS[s.task] for name in MODELS.names(kind=kind)]
  if s.models:
    known = sorted({n for _, _, n in out})
    unknown = [m for m in s.models if m not in known]
    if unknown:
      raise ConfigError(f"--models: {', '.join(unknown)} do(es) not fit task '{s.task}'; "
                        f"choose from: {', '.join(known)}")
    out = [e for e in out if e[2] in s.models]
  return out


# ------------------------------------------------------------------------------ training runs


def _read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f]


def _run_record(s: Settings, workdir: str, label: str, family: str, wall_s: float,
                params: int, tokens_per_step: int, flops: float) -> dict:
  """What one train_and_evaluate run left in metrics.jsonl, as one record."""
  rows = _read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  metric = METRICS[s.task]
  perf_row = next(r for r in rows if r["split"] == "perf")
  # FLOPs per step from count_flops (scans unrolled), not the loop's log (loop bodies once).
  train_rows = [r for r in rows if r["split"] == "train"]
  t, last, cum = 0.0, 0, {}
  for r in train_rows:  # steps/s over each log window (eval and saving excluded by the loop)
    t += (r["step"] - last) / max(r["steps_per_s"], 1e-12)
    last = r["step"]
    cum[r["step"]] = t
  curve = [{"step": r["step"], "flops": r["step"] * flops, "train_s": cum.get(r["step"], t),
            "quality": r[metric]} for r in rows if r["split"] == "eval"]
  peaks = [r["peak_memory_gib"] for r in train_rows if "peak_memory_gib" in r]
  steps = train_rows[-1]["step"]
  return {"task": s.task, "model": label, "family": family, "params": params, "steps": steps,
          "train_flops": steps * flops, "wall_s": wall_s, "train_s": t,
          "tokens_per_s": steps * tokens_per_step / max(t, 1e-12),
          "memory_mib": max(peaks) * 1024 if peaks else perf_row["step_mib_per_device"],
          "memory_kind": "measured peak" if peaks else "XLA estimate",
          "metric": metric, "quality": curve[-1]["quality"], "curve": curve}


def budget_steps(s: Settings, prep) -> int:
  """Training steps that fit the budget for this compiled step."""
  from experiments import showdown_steps
  from seqgen_jax.errors import ConfigError

  if s.budget_seconds:
    per_step, what = showdown_steps.time_steps(prep, repeats=s.repeats), "seconds"
    budget = s.budget_seconds
  else:
    per_step, what, budget = prep.flops, "FLOPs", s.budget_flops
    if per_step is None:
      raise ConfigError("this backend reports no FLOPs; use --budget_seconds")
  n = int(budget // per_step)
  if n < 1:
    raise ConfigError(f"budget {budget:g} {what} is less than one train step of "
                      f"{prep.config.model.name} ({per_step:.3g} {what}); raise the budget")
  return n


def train_all(s: Settings, out: str) -> list[dict]:
  """Trains every fitting model for every seed under the budget; one record per run."""
  from experiments import showdown_steps
  from seqgen_jax.registry import MODELS
  from seqgen_jax.tasks import build_task
  from seqgen_jax.train import loop

  records = []
  for train_task, kind, name in entries(s):
    data = _data_config(s.task, s)
    prep = showdown_steps.prepare(make_config(s, train_task, name, data, num_steps=1000),
                                  compile=bool(s.budget_seconds))
    n = budget_steps(s, prep)
    family = MODELS.tags(name, kind=kind).get("family", "?")
    label = name if train_task == "lm" else f"{train_task}:{name}"
    if train_task == "mdlm":
      family = f"diffusion (MDLM on {family}; bound)"
    for seed in range(s.seeds):
      workdir = os.path.join(out, "runs", f"{s.task}-{label.replace(':', '_')}-seed{seed}")
      shutil.rmtree(workdir, ignore_errors=True)
      config = make_config(s, train_task, name, data, seed=seed, num_steps=n)
      logging.info("showdown: %s on %s, seed %d, %d steps", label, s.task, seed, n)
      t0 = time.perf_counter()
      loop.train_and_evaluate(config, workdir, build_task)
      rec = _run_record(s, workdir, label, family, time.perf_counter() - t0, prep.num_params,
                        prep.tokens_per_step, prep.flops or float("nan"))
      rec["seed"] = seed
      records.append(rec)
  return records


# ------------------------------------------------------------------------------ sweeps, benches


def dependency_sweep(s: Settings) -> list[dict]:
  """Answer accuracy vs dependency length on copy-with-delay and associative recall."""
  from experiments import showdown_steps
  from seqgen_jax.registry import MODELS

  models = s.sweep_models or MODELS.names(kind="causal_lm")
  rows = []
  points = [("copy", dict(name="copy", length=4, delay=d, alphabet=8), 4 + d + 1, 1 / 8)
            for d in s.copy_delays]
  points += [("assoc_recall", dict(name="assoc_recall", num_pairs=p, num_keys=max(16, p),
                                   num_values=16), 2 * p + 1, 1 / 16) for p in s.recall_pairs]
  longest_copy = max(s.copy_delays, default=None)
  for task, data, dep, chance in points:
    for name in models:
      prep = showdown_steps.prepare(make_config(s, "lm", name, data, num_steps=s.sweep_steps),
                                    count=False)
      metrics, params = showdown_steps.train_briefly(prep)
      row = {"task": task, "model": name, "dependency": dep, "chance": chance,
             "accuracy": metrics["accuracy"], "steps": s.sweep_steps}
      if task == "copy" and data["delay"] == longest_copy:
        # How much gradient reaches each input token, by distance back from the first answer
        # position (index length + delay): where vanishing gradients show directly.
        batch = prep.task.train_source().batch(0, slice(0, s.batch_size))
        norms = showdown_steps.input_gradient_norms(prep.task, params, batch)
        first_answer = data["length"] + data["delay"]
        row["delay"] = data["delay"]
        row["grad_distance"] = [first_answer - t for t in range(first_answer + 1)]
        row["grad_norm"] = [float(norms[t]) for t in range(first_answer + 1)]
      rows.append(row)
      logging.info("sweep %s dependency %d %s: accuracy %.3f", task, dep, name,
                   metrics["accuracy"])
  return rows


def benchmarks(s: Settings) -> dict[str, list[dict]]:
  """Throughput / memory vs sequence length, token latency and image latency."""
  import ml_collections

  from experiments import showdown_bench
  from seqgen_jax.registry import MODELS

  available = MODELS.names(kind="causal_lm")
  models = [m for m in s.scaling_models if m in available]

  def scaling_config(name, t, b):
    data = dict(name="copy", length=4, delay=t - 8, alphabet=8)
    return make_config(s, "lm", name, data, num_steps=100, batch_size=b)

  scaling = showdown_bench.seq_len_scaling(scaling_config, models, s.scaling_lengths,
                                           s.scaling_tokens, s.repeats)
  model_cfg = ml_collections.ConfigDict(s.model)
  tokens = showdown_bench.token_latency(model_cfg, models, s.latency_lengths, 64, s.repeats)
  images = showdown_bench.image_latency(ml_collections.ConfigDict(s.denoiser),
                                        tuple(s.image_shape), s.denoise_steps, 1, s.repeats)
  return {"scaling": scaling, "token_latency": tokens, "image_latency": images}


def run_showdown(s: Settings, out: str) -> dict[str, Any]:
  """Trains, sweeps, benchmarks and writes the report into ``out``; returns the results."""
  import jax

  from experiments import showdown_report

  os.makedirs(out, exist_ok=True)
  t0 = time.perf_counter()
  runs = train_all(s, out)
  t_train = time.perf_counter() - t0
  dependency = dependency_sweep(s)
  t_sweep = time.perf_counter() - t0 - t_train
  bench = benchmarks(s)
  device = f"{jax.devices()[0].device_kind} x{jax.device_count()}"
  on_cpu = jax.devices()[0].platform == "cpu"
  results = {"settings": dataclasses.asdict(s), "device": device, "runs": runs,
             "dependency": dependency, **bench,
             "memory_note": ("XLA compile-time estimate: state + batch + temporaries"
                             if on_cpu else "XLA compile-time estimate per step"),
             "seconds": {"training": t_train, "sweep": t_sweep,
                         "benchmarks": time.perf_counter() - t0 - t_train - t_sweep}}
  summary = showdown_report.summarize(runs)
  table = showdown_report.markdown_table(summary)
  plots = showdown_report.write_plots(out, results)
  results["seconds"]["total"] = time.perf_counter() - t0
  budget = (f"{s.budget_seconds:g} s" if s.budget_seconds else f"{s.budget_flops:.3g} FLOPs")
  md = [f"# Showdown: {s.task} ({s.mode} mode)", "",
        f"Device: {device}. Budget per model and seed: {budget}. Seeds: {s.seeds}. "
        f"Batch {s.batch_size}; model fields {s.model}; AdamW lr {s.lr:g}, warm-up + cosine.",
        "", table, "",
        "Wall time: the whole `train_and_evaluate` call (compilation, evaluation and the "
        "final checkpoint included); `train`: the training steps alone. Memory: "
        + ("XLA's compile-time estimate of one train step (state + batch + temporaries); "
           "CPU devices report no measured peak." if on_cpu else
           "the device's measured peak (`memory_stats`)."),
        "", "Plots: " + ", ".join(f"[{os.path.basename(p)}]({os.path.basename(p)})"
                                  for p in plots), "",
        f"Time: training {t_train:.0f} s, dependency sweep {t_sweep:.0f} s, benchmarks "
        f"{results['seconds']['benchmarks']:.0f} s, total {results['seconds']['total']:.0f} s."]
  with open(os.path.join(out, "report.md"), "w") as f:
    f.write("\n".join(md) + "\n")
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(results, f, indent=1, default=_json_default)
  results["table"] = table
  return results


def _json_default(x):
  if isinstance(x, float) and math.isnan(x):
    return None
  return str(x)


def settings_from_flags() -> Settings:
  """The --mode preset for --task, with --seeds, --models, --data_dir and the budget flags."""
  from seqgen_jax.errors import ConfigError

  if _TASK.value not in TASK_KINDS:
    raise ConfigError(f"unknown showdown task '{_TASK.value}'; choose one of: "
                      f"{', '.join(TASK_KINDS)}")
  if _BUDGET_SECONDS.value is not None and _BUDGET_FLOPS.value is not None:
    raise ConfigError("give one budget: --budget_flops or --budget_seconds, not both")
  for flag in (_BUDGET_SECONDS, _BUDGET_FLOPS):
    if flag.value is not None and not flag.value > 0:
      raise ConfigError(f"--{flag.name} must be > 0, got {flag.value}")
  if _SEEDS.value < 1:
    raise ConfigError(f"--seeds must be >= 1, got {_SEEDS.value}")
  s = settings_for(_MODE.value, _TASK.value)
  s.seeds = _SEEDS.value
  s.models = _MODELS.value
  s.data_dir = _DATA_DIR.value
  if _BUDGET_SECONDS.value is not None:
    s.budget_seconds, s.budget_flops = _BUDGET_SECONDS.value, None
  elif _BUDGET_FLOPS.value is not None:
    s.budget_flops = _BUDGET_FLOPS.value
  return s


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _OUT.value:
    raise app.UsageError("--out (the report directory) is required")
  import jax

  from seqgen_jax.errors import SeqgenError

  # Seeds of one model compile the same step: the persistent cache compiles it once.
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.join(_OUT.value, ".jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  try:
    results = run_showdown(settings_from_flags(), _OUT.value)
  except SeqgenError as e:
    print(f"error: {e}")
    raise SystemExit(2) from None
  print(results["table"])
  print(f"report: {os.path.join(_OUT.value, 'report.md')}")


if __name__ == "__main__":
  app.run(main)
