"""The showdown report: Markdown table and PNG plots (matplotlib, Agg backend).

Every function takes the plain rows the showdown collected (lists of dicts) and writes one file,
so the report can be rebuilt from ``results.json`` without training again.
"""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

PLOTS = ("quality_vs_flops.png", "quality_vs_wall_time.png", "throughput_vs_seq_len.png",
         "memory_vs_seq_len.png", "accuracy_vs_dependency_length.png",
         "gradient_vs_distance.png", "token_latency.png", "image_latency.png")


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
  """Mean and the half-width of its Student-t confidence interval (nan for one value)."""
  x = np.asarray(values, np.float64)
  if x.size < 2:
    return float(x.mean()), float("nan")
  half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
  return float(x.mean()), float(half)


def _si(x: float | None, unit: str = "") -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "n/a"
  for div, p in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(x) >= div:
      return f"{x / div:.3g} {p}{unit}".strip()
  return f"{x:.3g} {unit}".strip()


def summarize(runs: list[dict]) -> list[dict]:
  """One row per (task, model): means over seeds, the quality metric's mean and 95% CI."""
  groups: dict[tuple[str, str], list[dict]] = {}
  for r in runs:
    groups.setdefault((r["task"], r["model"]), []).append(r)
  out = []
  for (task, model), rs in groups.items():
    q, ci = mean_ci([r["quality"] for r in rs])
    first = rs[0]
    out.append({"task": task, "model": model, "family": first["family"],
                "params": first["params"], "steps": first["steps"],
                "train_flops": first["train_flops"], "seeds": len(rs),
                "wall_s": float(np.mean([r["wall_s"] for r in rs])),
                "train_s": float(np.mean([r["train_s"] for r in rs])),
                "tokens_per_s": float(np.mean([r["tokens_per_s"] for r in rs])),
                "memory_mib": first["memory_mib"], "memory_kind": first["memory_kind"],
                "metric": first["metric"], "quality": q, "ci": ci})
  return out


def markdown_table(rows: list[dict]) -> str:
  """The headline table (Markdown)."""
  metric = rows[0]["metric"] if rows else "quality"
  kinds = sorted({r["memory_kind"] for r in rows})
  head = ("| task | model | family | params | steps | training FLOPs | wall time (s) | "
          f"train tokens/s | memory (MiB/device, {' / '.join(kinds)}) | {metric} (95% CI) |")
  lines = [head, "|" + "---|" * 10]
  for r in rows:
    ci = "" if math.isnan(r["ci"]) else f" ± {r['ci']:.3f}"
    lines.append(
        f"| {r['task']} | {r['model']} | {r['family']} | {r['params']:,} | {r['steps']} | "
        f"{_si(r['train_flops'])} | {r['wall_s']:.1f} (train {r['train_s']:.1f}) | "
        f"{_si(r['tokens_per_s'])} | {r['memory_mib']:.1f} | {r['quality']:.3f}{ci} "
        f"(n={r['seeds']}) |")
  return "\n".join(lines)


def _curve_plot(runs: list[dict], xkey: str, xlabel: str, path: str) -> None:
  """Quality curve over training (mean over seeds; bar: 95% CI at the final point)."""
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  by_model: dict[str, list[dict]] = {}
  for r in runs:
    by_model.setdefault(f"{r['model']} ({r['task']})", []).append(r)
  metric = runs[0]["metric"] if runs else "quality"
  for label, rs in sorted(by_model.items()):
    n = min(len(r["curve"]) for r in rs)
    if n == 0:
      continue
    x = np.mean([[p[xkey] for p in r["curve"][:n]] for r in rs], axis=0)
    y = np.mean([[p["quality"] for p in r["curve"][:n]] for r in rs], axis=0)
    line, = ax.plot(x, y, marker="o", ms=3, label=label)
    _, ci = mean_ci([r["curve"][n - 1]["quality"] for r in rs])
    if not math.isnan(ci):
      ax.errorbar([x[-1]], [y[-1]], yerr=[ci], color=line.get_color(), capsize=3)
  ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(metric)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _lines(rows: list[dict], x: str, y: str, xlabel: str, ylabel: str, title: str, path: str,
           *, logy: bool = True) -> None:
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  for model in sorted({r["model"] for r in rows}):
    rs = sorted((r for r in rows if r["model"] == model), key=lambda r: r[x])
    ax.plot([r[x] for r in rs], [r[y] for r in rs], marker="o", label=model)
  ax.set_xscale("log", base=2)
  if logy:
    ax.set_yscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  if rows:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _dependency_plot(rows: list[dict], path: str) -> None:
  tasks = sorted({r["task"] for r in rows}) or ["(none)"]
  fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.2), squeeze=False)
  for ax, task in zip(axes[0], tasks):
    rs_task = [r for r in rows if r["task"] == task]
    for model in sorted({r["model"] for r in rs_task}):
      rs = sorted((r for r in rs_task if r["model"] == model), key=lambda r: r["dependency"])
      ax.plot([r["dependency"] for r in rs], [r["accuracy"] for r in rs], marker="o",
              label=model)
    ax.axhline(rs_task[0]["chance"] if rs_task else 0, color="gray", ls=":", label="chance")
    ax.set_xlabel("dependency length (tokens)")
    ax.set_ylabel("answer-token accuracy")
    ax.set_title(task, fontsize=9)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _gradient_plot(rows: list[dict], path: str) -> None:
  """||dL/de_t|| (relative to its value at the answer) vs distance back from the answer."""
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  title = "gradient reaching each input token (copy task)"
  for r in sorted((r for r in rows if "grad_norm" in r), key=lambda r: r["model"]):
    g = np.asarray(r["grad_norm"], np.float64)
    ref = g[-1] if g[-1] > 0 else (g.max() or 1.0)
    ax.plot(r["grad_distance"], np.maximum(g / ref, 1e-12), marker=".", ms=3,
            label=f"{r['model']} (acc {r['accuracy']:.2f})")
    title = f"gradient reaching each input token (copy, delay {r['delay']})"
  ax.set_yscale("log")
  ax.set_xlabel("distance back from the first answer position (tokens)")
  ax.set_ylabel("||dL/de_t||, relative to distance 0")
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_plots(out: str, results: dict) -> list[str]:
  """Writes every file in PLOTS into ``out``; returns their paths."""
  runs = results["runs"]
  p = lambda name: os.path.join(out, name)
  _curve_plot(runs, "flops", "training FLOPs (XLA cost analysis)", p(PLOTS[0]))
  _curve_plot(runs, "train_s", "training wall time (s, compilation and eval excluded)",
              p(PLOTS[1]))
  mem_note = results["memory_note"]
  _lines(results["scaling"], "seq_len", "tokens_per_s", "sequence length",
         "training tokens/s", f"train step (fwd+bwd+AdamW), {results['device']}", p(PLOTS[2]))
  _lines(results["scaling"], "seq_len", "memory_mib", "sequence length", "MiB per device",
         f"train-step memory ({mem_note})", p(PLOTS[3]))
  _dependency_plot(results["dependency"], p(PLOTS[4]))
  _gradient_plot(results["dependency"], p(PLOTS[5]))
  _lines(results["token_latency"], "num_tokens", "seconds_per_token", "tokens generated",
         "seconds per token", "cached generation (batch 1): KV cache vs carried RNN state",
         p(PLOTS[6]))
  _lines(results["image_latency"], "num_steps", "seconds_per_image", "DDIM denoising steps",
         "seconds per image", "DDIM sampling latency per image", p(PLOTS[7]))
  return [p(n) for n in PLOTS]
