"""The showdown: every model family on the same task, data and training budget, side by side.

  python -m experiments.showdown --config=experiments/configs/showdown/quick.py \
      --out=/tmp/showdown                                     # CPU: ~2 min on 2 cores
  python -m experiments.showdown \
      --config=experiments/configs/showdown/full.py:task=tinyshakespeare \
      --config.seeds=3 --out=/tmp/showdown_full                # GPU / TPU

The settings are a preset config file, experiments/configs/showdown/<preset>.py with the argument
``:task=copy|assoc_recall|tinyshakespeare``; any of its fields can be overridden
(``--config.budget_flops=1e11``). ``--mode=<preset> --task=<task>`` is a shorthand for that
``--config``, and ``--seeds``, ``--models``, ``--data_dir``, ``--budget_flops`` and
``--budget_seconds`` for the fields of those names (``--budget_seconds`` replaces the preset's
FLOP budget), so ``python -m experiments.showdown --mode=quick --out=/tmp/showdown`` runs the
first command above. The console gets one line per model and seed, then the table;
``--verbosity=1`` adds the training runs' own logs.

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

import importlib
import json
import math
import os
import shutil
import time
from typing import Any

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli

# Tasks: which model kinds (and training task) fit each, and the quality metric. The presets
# (experiments/configs/showdown/*.py) hold the config.data fields and budgets per task.
TASK_KINDS = {"copy": [("lm", "causal_lm")], "assoc_recall": [("lm", "causal_lm")],
              "tinyshakespeare": [("lm", "causal_lm"), ("mdlm", "masked_lm")]}
METRICS = {"copy": "accuracy", "assoc_recall": "accuracy", "tinyshakespeare": "bits_per_char"}
# A run's settings: a ConfigDict from a preset file (its fields: showdown_defaults in
# experiments/configs/common.py). A new preset is a new file there; --mode finds it by name.
Settings = ml_collections.ConfigDict
PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "showdown")
PRESETS = sorted(f[:-3] for f in os.listdir(PRESET_DIR) if f.endswith(".py") and f[0] != "_")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A preset, experiments/configs/showdown/<preset>.py[:task=...]; its fields "
    "can be overridden (--config.seeds=1).", lock_config=True)
_MODE = flags.DEFINE_enum("mode", "quick", PRESETS,
                          "Shorthand for --config=experiments/configs/showdown/<mode>.py.")
_TASK = flags.DEFINE_enum("task", "copy", list(TASK_KINDS),
                          "With --mode: the preset's task (--config=...:task=<task>).")
_OUT = flags.DEFINE_string("out", None, "Report directory.")
# Shorthands for --config.<field>=...: each one set replaces the preset's value.
_BUDGET_FLOPS = flags.DEFINE_float("budget_flops", None, "Training FLOPs per model and seed.")
_BUDGET_SECONDS = flags.DEFINE_float("budget_seconds", None,
                                     "Training seconds per model and seed (instead of FLOPs).")
_SEEDS = flags.DEFINE_integer("seeds", None, "Seeds per model (the presets: 3).")
_MODELS = flags.DEFINE_list("models", None, "Only these models (default: every registered one).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data directory (default $SEQGEN_DATA_DIR).")


def preset(mode: str, task: str = "copy") -> Settings:
  """The settings of experiments/configs/showdown/<mode>.py for ``task`` (what --mode loads)."""
  from seqgen_jax.errors import ConfigError

  if mode not in PRESETS:
    raise ConfigError(f"unknown showdown preset '{mode}'; choose one of: {', '.join(PRESETS)}")
  module = importlib.import_module(f"experiments.configs.showdown.{mode}")
  return module.get_config(f"task={task}")


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
      print(f"showdown {s.task}: {label} seed {seed}: {rec['steps']} steps, {rec['metric']} "
            f"{rec['quality']:.4f}, {rec['wall_s']:.1f} s", flush=True)
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
  results = {"settings": s.to_dict(), "device": device, "runs": runs,
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
        f"Batch {s.batch_size}; model fields {s.model.to_dict()}; AdamW lr {s.lr:g}, "
        "warm-up + cosine.",
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
  """--config (or the --mode preset for --task), then the shorthand flags that were given."""
  from seqgen_jax.errors import ConfigError

  if _CONFIG.value is not None:
    given = [f"--{f.name}" for f in (_MODE, _TASK) if not flags.FLAGS[f.name].using_default_value]
    if given:
      raise ConfigError(f"{' and '.join(given)} with --config: --mode / --task are a shorthand "
                        f"for --config=experiments/configs/showdown/<mode>.py:task=<task>; give "
                        f"one of the two")
    s = _CONFIG.value
  else:
    s = preset(_MODE.value, _TASK.value)
  if _BUDGET_SECONDS.value is not None and _BUDGET_FLOPS.value is not None:
    raise ConfigError("give one budget: --budget_flops or --budget_seconds, not both")
  for flag in (_BUDGET_SECONDS, _BUDGET_FLOPS, _SEEDS):
    if flag.value is not None and not flag.value > 0:
      raise ConfigError(f"--{flag.name} must be > 0, got {flag.value}")
  if _SEEDS.value is not None:
    s.seeds = _SEEDS.value
  if _MODELS.value is not None:
    s.models = tuple(_MODELS.value)
  if _DATA_DIR.value is not None:
    s.data_dir = _DATA_DIR.value
  if _BUDGET_SECONDS.value is not None:
    s.budget_seconds, s.budget_flops = _BUDGET_SECONDS.value, None
  elif _BUDGET_FLOPS.value is not None:
    s.budget_flops, s.budget_seconds = _BUDGET_FLOPS.value, None
  for name in ("budget_flops", "budget_seconds", "seeds"):
    if s[name] is not None and not s[name] > 0:
      raise ConfigError(f"config.{name} must be > 0, got {s[name]}")
  if not (s.budget_flops or s.budget_seconds):
    raise ConfigError("no budget: set budget_flops or budget_seconds")
  return s


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _OUT.value:
    raise app.UsageError("--out (the report directory) is required")
  import jax

  if not cli.verbose():  # one line per run; the training loop's own log at --verbosity=1
    logging.set_verbosity(logging.WARNING)
  # Seeds of one model compile the same step: the persistent cache compiles it once.
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.join(_OUT.value, ".jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  results = run_showdown(settings_from_flags(), _OUT.value)
  print(results["table"])
  print(f"report: {os.path.join(_OUT.value, 'report.md')}")


if __name__ == "__main__":
  cli.run(main)
