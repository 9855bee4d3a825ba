"""Speed tables (markdown) from benchmark JSON records: the documents' tables are generated from
the measurements, never typed in.

  python -m experiments.bench.tables results/accelerator > docs/speed.md
  python -m experiments.bench.tables /tmp/bench /tmp/report      # several folders, one document

Every ``*.json`` under the folders is read (recursively): a benchmark record
(experiments/bench/common.py's ``bench_record``, written by each bench's ``--out``) gives one
table, and an accelerator report's ``results.json`` gives one table per section. Tables come
out in a fixed order of benchmarks, then by date. Each table carries the device, dtype, peer,
versions, date, commit and the command that made it; a benchmark that failed shows its error.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable

from experiments.bench.common import SCHEMA

TITLES = {
    "gpt2_train_step": "GPT-2 train step: tokens/s and MFU",
    "attention_tflops": "Causal attention forward + backward: TFLOP/s",
    "rnn_bench": "LSTM forward + backward: tokens/s",
    "denoiser_train_unet": "U-Net (DDPM) train steps/s",
    "denoiser_train_dit": "DiT train steps/s",
    "ddim_sampling_unet": "DDIM sampling with the U-Net: images/s",
    "ddim_sampling_dit": "DDIM sampling with the DiT: images/s",
    "showdown_scaling": "Training throughput vs sequence length (the showdown's models)",
    "data_throughput": "Data pipelines: examples/s",
}
ORDER = list(TITLES)


# ------------------------------------------------------------------------------ formatting


def num(x) -> str:
  """A measurement with about three significant figures; "n/a" for a missing one."""
  if x is None or isinstance(x, str):
    return "n/a"
  if isinstance(x, int) and not isinstance(x, bool):
    return f"{x:,}"
  x = float(x)
  if not math.isfinite(x):
    return "n/a"
  if abs(x) >= 1000:
    return f"{x:,.0f}"
  if abs(x) >= 100:
    return f"{x:.0f}"
  if abs(x) >= 10:
    return f"{x:.1f}"
  if abs(x) >= 1:
    return f"{x:.2f}"
  return f"{x:.3g}"


def ratio(x) -> str:
  return "n/a" if x is None or isinstance(x, str) else f"{float(x):.2f}x"


def pct(x) -> str:
  return "n/a" if x is None or isinstance(x, str) else f"{100 * float(x):.1f}%"


def table(header: list[str], rows: list[list[str]]) -> str:
  """A markdown table."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def meta_line(rec: dict) -> str:
  """Device, dtype, peer, versions, date and commit of one record, on one line."""
  dev = rec.get("device", {})
  shapes = rec.get("shapes", {})
  vers = rec.get("versions", {})
  parts = [f"{dev.get('kind', '?')} x{dev.get('count', '?')} ({dev.get('platform', '?')})"]
  dtype = shapes.get("dtype") or shapes.get("compute_dtype")
  if dtype:
    parts.append(dtype)
  parts.append(f"peer: {rec['peer']}" if rec.get("peer") else "no peer")
  parts.append(", ".join(f"{k} {vers[k]}" for k in ("jax", "torch") if k in vers))
  parts.append((rec.get("date") or "?")[:10])
  commit = rec.get("git_commit")
  parts.append(f"commit {commit[:7]}{'+dirty' if commit.endswith('+dirty') else ''}"
               if commit else "commit unknown")
  return " · ".join(p for p in parts if p)


# ------------------------------------------------------------------------------ one per bench


def _gpt2(rec: dict) -> list[str]:
  s, r = rec["shapes"], rec["results"]
  out = [f"Batch {s['batch']} x {s['seq_len']}, {s['layers']} layers, width {s['width']}, "
         f"vocab {s['vocab']}, N = {num(r['params_N'] / 1e6)}M, attention {s['attention']}; "
         f"measured matmul peak {num(r['matmul_peak_tflops'])} TFLOP/s "
         f"(n = {r['peak_matmul_n']})."]
  rows = [["JAX (this repo)", num(r["jax_tokens_per_s"]), num(1e3 * r["jax_step_s"]),
           pct(r["jax_mfu"]), pct(r.get("jax_mfu_datasheet"))]]
  if "torch_tokens_per_s" in r:
    rows.append([f"Hugging Face GPT-2, {r['torch_note']}", num(r["torch_tokens_per_s"]),
                 num(1e3 * r["torch_step_s"]), pct(r["torch_mfu"]),
                 pct(r.get("torch_mfu_datasheet"))])
  out.append(table(["", "tokens/s", "ms/step", "MFU (measured peak)", "MFU (datasheet)"], rows))
  if "jax_vs_torch" in r:
    out.append(f"JAX / PyTorch throughput: {ratio(r['jax_vs_torch'])}.")
  else:
    out.append(f"PyTorch peer: {r.get('torch_note', 'n/a')}.")
  return out


def _attention(rec: dict) -> list[str]:
  s, rows_in = rec["shapes"], rec["results"]["rows"]
  impls = [("xla", "XLA"), ("blockwise", "blockwise"), ("cudnn", "cuDNN")]
  rows, reasons, skipped = [], {}, []
  for r in sorted(rows_in, key=lambda r: (r["head_dim"], r["seq_len"])):
    if "skipped" in r:
      skipped.append(f"head {r['head_dim']} T={r['seq_len']} ({r['skipped']})")
      continue
    for impl, why in r.get("reasons", {}).items():
      reasons.setdefault((impl, why), []).append(f"{r['head_dim']}/{r['seq_len']}")
    rows.append([str(r["head_dim"]), str(r["heads"]), str(r["seq_len"]), str(r["batch"])]
                + [num(r.get(f"{i}_tflops")) for i, _ in impls] + [num(r.get("sdpa_tflops"))]
                + [ratio(r.get(f"{i}_vs_sdpa")) for i, _ in impls])
  out = [f"{s['tokens_per_call']} tokens per call, width {s['model_dim']}, causal; TFLOP/s "
         "credit the causal half only."]
  out.append(table(["head", "heads", "T", "batch"] + [n for _, n in impls] + ["SDPA"]
                   + [f"{n} / SDPA" for _, n in impls], rows))
  for (impl, why), where in reasons.items():
    out.append(f"- n/a {impl} ({'all rows' if len(where) == len(rows) else ', '.join(where)}): "
               f"{why}")
  if skipped:
    out.append("- skipped: " + "; ".join(skipped))
  return out


def _rnn(rec: dict) -> list[str]:
  s, r = rec["shapes"], rec["results"]
  lstm = r["lstm_fwd_bwd"]
  sh = s["lstm_fwd_bwd"]
  names = {"scan": "JAX lax.scan LSTM", "fused": "JAX fused cuDNN LSTM",
           "torch": "torch.nn.LSTM"}
  res, torch_row = lstm["results"], lstm["results"].get("torch")
  rows, notes = [], []
  for key, label in names.items():
    v = res.get(key)
    if isinstance(v, dict):
      vs = (ratio(torch_row["seconds"] / v["seconds"]) if isinstance(torch_row, dict)
            else "n/a")
      rows.append([label, num(v["tokens_per_s"]), num(1e3 * v["seconds"]), vs])
    elif v is not None:
      rows.append([label, "n/a", "n/a", "n/a"])
      notes.append(f"- {label}: {v}")
  out = [f"Batch {sh['batch']} x {sh['seq_len']}, hidden = input = {sh['hidden']}, one layer."]
  out.append(table(["", "tokens/s", "ms", "throughput vs torch"], rows))
  out += notes
  if "mingru_vs_lstm" in r:
    rows = [[t, num(v["lstm_tokens_per_s"]), num(v["mingru_tokens_per_s"]),
             ratio(v["mingru / lstm throughput"])] for t, v in r["mingru_vs_lstm"].items()]
    out.append(table(["T", "LSTM (scan) tokens/s", "minGRU (parallel scan) tokens/s",
                      "minGRU / LSTM"], rows))
  return out


def _denoiser_train(rec: dict) -> list[str]:
  s, r = rec["shapes"], rec["results"]
  rows = [["JAX (this repo)", num(r["jax_steps_per_s"]), num(r["jax_images_per_s"])]]
  if "torch_steps_per_s" in r:
    rows.append([f"diffusers ({'torch.compile' if r.get('torch_compile') else 'eager'})",
                 num(r["torch_steps_per_s"]), num(r["torch_images_per_s"])])
  out = [f"Batch {s['batch']}; {s['steps_per_round']} steps per side in each of "
         f"{r['rounds']} round(s).",
         table(["", "steps/s", "images/s"], rows)]
  if "ratio_jax_over_torch" in r:
    out.append(f"JAX / diffusers: {ratio(r['ratio_jax_over_torch'])} (median of per-round "
               f"ratios {ratio(r['ratio_median_of_rounds'])}).")
  elif r.get("peer_reason"):
    out.append(f"diffusers: {r['peer_reason']}")
  return out


def _ddim(rec: dict) -> list[str]:
  s, r = rec["shapes"], rec["results"]
  rows = [["JAX (this repo, one jitted scan)", num(r["jax_images_per_s"])]]
  if "diffusers_images_per_s" in r:
    rows.append([f"diffusers DDIMScheduler loop "
                 f"({'torch.compile' if r.get('torch_compile') else 'eager'})",
                 num(r["diffusers_images_per_s"])])
  out = [f"Batch {s['batch']}, {s['steps']} DDIM steps, {r['rounds']} round(s).",
         table(["", "images/s"], rows)]
  if "ratio_jax_over_diffusers" in r:
    out.append(f"JAX / diffusers: {ratio(r['ratio_jax_over_diffusers'])}; from the same x_T "
               f"the images differ by at most {r['max_abs_diff_same_x_T']:.2g}.")
  elif r.get("peer_reason"):
    out.append(f"diffusers: {r['peer_reason']}")
  return out


def _showdown(rec: dict) -> list[str]:
  s, r = rec["shapes"], rec["results"]
  models = list(s["models"])
  by = {(x["model"], x["seq_len"]): x for x in r["rows"]}
  rows = []
  for t in s["seq_lens"]:
    cells = []
    for m in models:
      x = by.get((m, t))
      cells.append(f"{num(x['tokens_per_s'])} ({num(x['memory_mib'])} MiB)" if x else "n/a")
    rows.append([str(t)] + cells)
  out = [f"{s['tokens_per_batch']} tokens per batch; training tokens/s (per-device memory of "
         "the step).", table(["T"] + models, rows)]
  for x in r.get("skipped", []):
    out.append(f"- n/a {x['model']} at T={x['seq_len']}: {x['reason']}")
  return out


def _data(rec: dict) -> list[str]:
  rows = [[x["name"], f"{x['examples']:,}", num(x["prep"]), num(x["ours"]), num(x["tfds"]),
           ratio(x["ours"] / x["tfds"]) if x.get("tfds") else "n/a", num(x["pipe"])]
          for x in rec["results"]["rows"]]
  return [table(["dataset", "examples", "prep s", "reader ex/s", "tfds decode ex/s", "x tfds",
                 f"batch ex/s (B={rec['shapes']['batch']})"], rows)]


def _mfu(rec: dict) -> list[str]:
  s, r = rec["shapes"], rec["results"]
  mem = r.get("peak_memory_gib")
  rows = [[s["preset"], f"{s['batch']} x {s['seq_len']}", str(r["devices"]),
           num(1e3 * r["step_s_median"]), num(r["tflops_per_s"]), pct(r.get("mfu")),
           f"{num(mem)} GiB" if mem is not None else "n/a"]]
  return [table(["preset", "batch", "devices", "ms/step", "TFLOP/s", "MFU", "peak memory"],
                rows), f"XLA's FLOP count / the closed form: {num(r['xla_over_analytic'])}."]


def _generic(rec: dict) -> list[str]:
  rows = [[k, num(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)]
          for k, v in rec.get("results", {}).items() if not isinstance(v, (dict, list))]
  return [table(["result", "value"], rows)] if rows else []


RENDERERS: dict[str, Callable[[dict], list[str]]] = {
    "gpt2_train_step": _gpt2, "attention_tflops": _attention, "rnn_bench": _rnn,
    "denoiser_train_unet": _denoiser_train, "denoiser_train_dit": _denoiser_train,
    "ddim_sampling_unet": _ddim, "ddim_sampling_dit": _ddim, "showdown_scaling": _showdown,
    "data_throughput": _data,
}


def _renderer(name: str) -> Callable[[dict], list[str]]:
  return _mfu if name.startswith("mfu_") else RENDERERS.get(name, _generic)


def title(name: str) -> str:
  """The heading of a benchmark's table."""
  if name.startswith("mfu_"):
    return f"MFU of the training library's train step ({name[4:]})"
  return TITLES.get(name, name)


def render_record(rec: dict, level: int = 3, with_command: bool = True) -> str:
  """One benchmark record as a markdown block: heading, meta line, table(s), notes and (with
  ``with_command``) the command that made it."""
  name = rec.get("name", "?")
  out = ["#" * level + " " + title(name), "", meta_line(rec), ""]
  if rec.get("status") == "failed":
    out.append(f"**Failed**: {rec.get('error', 'unknown error')}\n")
  else:
    out += [block + "\n" for block in _renderer(name)(rec)]
    if rec.get("notes"):
      out.append(f"Notes: {rec['notes']}.\n")
  section = rec.get("section")
  if section:
    out.append(f"Section time {section['elapsed_s']:.0f} s of a {section['budget_s']:.0f} s "
               "budget.\n")
  if with_command:
    out.append(f"Command: `{rec.get('command', '?')}`")
  return "\n".join(out).rstrip() + "\n"


# ------------------------------------------------------------------------------ folders


def load_records(folders: list[str]) -> list[dict]:
  """Every benchmark record in the JSON files under ``folders`` (report sections included),
  in ``ORDER``, then by date."""
  recs = []
  for folder in folders:
    paths = [folder] if folder.endswith(".json") else sorted(
        os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.endswith(".json"))
    for path in paths:
      with open(path) as f:
        data = json.load(f)
      if isinstance(data, dict) and data.get("schema") == SCHEMA:
        recs.append(data)
      elif isinstance(data, dict) and isinstance(data.get("sections"), dict):
        recs += [r for r in data["sections"].values() if r.get("schema") == SCHEMA]
  rank = {n: i for i, n in enumerate(ORDER)}
  return sorted(recs, key=lambda r: (rank.get(r.get("name"), len(ORDER)), r.get("name", ""),
                                     r.get("date", "")))


def render_folders(folders: list[str]) -> str:
  """The whole document: a header saying how it was made, then one block per record."""
  recs = load_records(folders)
  head = ["# Speed tables", "",
          f"Generated by `python -m experiments.bench.tables {' '.join(folders)}` from "
          f"{len(recs)} benchmark record(s); edit the measurements, not this file.", ""]
  return "\n".join(head) + "\n" + "\n".join(render_record(r) for r in recs)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or any(a.startswith("-") for a in argv):
    print(f"usage: python -m experiments.bench.tables FOLDER_OR_JSON [...]\n{__doc__}",
          file=sys.stderr)
    return 2
  missing = [a for a in argv if not os.path.exists(a)]
  if missing:
    print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
    return 2
  sys.stdout.write(render_folders(argv))
  return 0


if __name__ == "__main__":
  sys.exit(main())
