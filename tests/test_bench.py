"""The benchmarks' shared JSON record, the accelerator report's --quick run and the speed-table
generator.

The report runs at CPU-sized tiny shapes (half its sections in the default suite, all of them
under ``-m slow``) and is checked for its schema and for what each section must have measured;
nothing here is timed. The table generator renders a hand-written record into hand-written markdown.
"""

import json
import math
import os

import pytest

from experiments.bench import accelerator_report, common, tables

RECORD_KEYS = {"schema", "name", "date", "command", "git_commit", "device", "host", "versions",
               "shapes", "peer", "results", "notes"}
COMMAND = "python -m experiments.bench.accelerator_report --quick --out=DIR"


# The cheaper half of the sections (no transformers import, no U-Net or showdown compilation):
# the default suite runs these; the slow test runs the whole report.
FAST_SECTIONS = ["attention_tflops", "rnn_bench", "denoiser_train_dit", "ddim_sampling_dit"]


def _run_quick(out, sections=None):
  accelerator_report.run_report(str(out), quick=True, sections=sections, command=COMMAND)
  with open(out / "results.json") as f:
    results = json.load(f)
  assert list(results["sections"]) == (sections or list(accelerator_report.SECTIONS))
  _check_schema(results)
  for name, rec in results["sections"].items():
    CHECKS[name](rec["results"], rec["shapes"])
  _check_markdown(results, (out / "report.md").read_text())


def test_quick_report_sections_end_to_end(tmp_path):
  """Half the sections of ``--quick`` (~15 s): schema, what each measured, report.md."""
  _run_quick(tmp_path, FAST_SECTIONS)


@pytest.mark.slow
def test_quick_report_runs_every_section_end_to_end(tmp_path):
  """The whole ``--quick`` run, every section and every peer (~35-70 s on two busy cores)."""
  _run_quick(tmp_path)


def _leaves(x, path=""):
  if isinstance(x, dict):
    for k, v in x.items():
      yield from _leaves(v, f"{path}/{k}")
  elif isinstance(x, list):
    for i, v in enumerate(x):
      yield from _leaves(v, f"{path}[{i}]")
  else:
    yield path, x


def _check_schema(results):
  assert results["schema"] == accelerator_report.REPORT_SCHEMA
  assert results["mode"] == "quick" and results["command"] == COMMAND
  for name, rec in results["sections"].items():
    assert rec["status"] == "ok", (name, rec.get("error"), rec.get("traceback"))
    assert RECORD_KEYS <= rec.keys(), (name, RECORD_KEYS - rec.keys())
    assert rec["schema"] == common.SCHEMA and rec["name"] == name
    assert rec["device"]["platform"] == "cpu" and rec["device"]["count"] >= 1
    assert {"python", "jax", "jaxlib", "flax", "optax", "torch"} <= rec["versions"].keys()
    assert rec["shapes"] and rec["host"]["cores"] >= 1
    assert rec["command"] == COMMAND
    assert (rec["peer"] is None) == (name == "showdown_scaling"), (name, rec["peer"])
    assert 0 <= rec["section"]["elapsed_s"] and rec["section"]["budget_s"] > 0
    # Every result is a finite number, a flag, or a string (a reason or a note): no NaN / null.
    for path, v in _leaves(rec["results"]):
      assert isinstance(v, (bool, str)) or (isinstance(v, (int, float)) and math.isfinite(v)), \
          (name, path, v)


def _check_gpt2(r, shapes):
  assert r["jax_tokens_per_s"] > 0 and r["torch_tokens_per_s"] > 0 and r["jax_mfu"] > 0
  assert r["jax_vs_torch"] == pytest.approx(r["torch_step_s"] / r["jax_step_s"])
  assert r["jax_tokens_per_s"] == pytest.approx(shapes["batch"] * shapes["seq_len"]
                                                / r["jax_step_s"])


def _check_attention(r, shapes):
  rows = r["rows"]
  assert sorted((x["head_dim"], x["seq_len"]) for x in rows) == sorted(
      (h, t) for h in shapes["head_dims"] for t in shapes["seq_lens"])
  for x in rows:
    assert x["heads"] * x["head_dim"] == shapes["model_dim"]
    assert x["batch"] * x["seq_len"] == shapes["tokens_per_call"]
    for impl in ("xla", "blockwise"):
      assert x[f"{impl}_tflops"] > 0
      assert x[f"{impl}_vs_sdpa"] == pytest.approx(x[f"{impl}_tflops"] / x["sdpa_tflops"])
    assert "cudnn_tflops" not in x and "'cpu'" in x["reasons"]["cudnn"]


def _check_lstm(r, shapes):
  lstm = r["lstm_fwd_bwd"]["results"]
  assert lstm["scan"]["tokens_per_s"] > 0 and lstm["torch"]["tokens_per_s"] > 0
  assert lstm["fused"].startswith("unavailable")


def _check_train(r, shapes):
  assert r["jax_steps_per_s"] > 0 and r["torch_steps_per_s"] > 0
  assert r["jax_images_per_s"] == pytest.approx(r["jax_steps_per_s"] * shapes["batch"])


def _check_ddim(r, shapes):
  assert r["jax_images_per_s"] > 0 and r["diffusers_images_per_s"] > 0
  # Same weights, same x_T, float32: our compiled sampler lands on diffusers' images.
  assert r["max_abs_diff_same_x_T"] < 1e-3


def _check_sweep(r, shapes):
  got = {(x["model"], x["seq_len"]) for x in r["rows"]}
  assert got == {(m, t) for m in shapes["models"] for t in shapes["seq_lens"]}
  assert all(x["tokens_per_s"] > 0 and x["memory_mib"] > 0 for x in r["rows"])


CHECKS = {"gpt2_train_step": _check_gpt2, "attention_tflops": _check_attention,
          "rnn_bench": _check_lstm, "denoiser_train_unet": _check_train,
          "denoiser_train_dit": _check_train, "ddim_sampling_dit": _check_ddim,
          "showdown_scaling": _check_sweep}


def _check_markdown(results, md):
  assert md.startswith("# Accelerator report\n")
  assert f"`{COMMAND}`" in md and results["git_commit"][:7] in md
  for name in results["sections"]:
    assert f"\n## {tables.title(name)}\n" in md, name
  assert "| head | heads | T | batch | XLA | blockwise | cuDNN | SDPA |" in md


def test_a_failing_section_is_recorded_and_the_report_still_written(tmp_path, monkeypatch):
  def boom(*args):
    raise RuntimeError("no accelerator here")

  monkeypatch.setitem(accelerator_report.SECTIONS, "rnn_bench", boom)
  accelerator_report.run_report(str(tmp_path), quick=True, sections=["rnn_bench"],
                                command=COMMAND)
  rec = json.loads((tmp_path / "results.json").read_text())["sections"]["rnn_bench"]
  assert rec["status"] == "failed" and rec["error"] == "RuntimeError: no accelerator here"
  assert RECORD_KEYS <= rec.keys() and rec["shapes"]["hidden"] == 32
  assert rec["peer"] == accelerator_report.PEERS["rnn_bench"]
  assert "**Failed**: RuntimeError: no accelerator here" in (tmp_path / "report.md").read_text()


def test_denoiser_benches_run_without_diffusers(monkeypatch):
  """The GPU image may lack diffusers: the JAX side runs from its own init, the peer is
  reported as unavailable with the reason, and nothing crashes."""
  import sys

  import jax.numpy as jnp

  from experiments.bench import ddim_sampling, denoiser_train

  monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
  unet = denoiser_train.build_model("unet", jnp.float32, denoiser_train.TINY_UNET)
  assert unet.peer is None and unet.peer_reason.startswith("unavailable: ")
  assert unet.params["conv_in"]["kernel"].shape[-1] == 16  # block_out_channels[0]
  results, peer = ddim_sampling.measure("dit", batch=2, dtype_name="float32", rounds=1,
                                        compile_peer=False, arch=denoiser_train.TINY_DIT,
                                        num_steps=2, log=lambda m: None)
  assert peer == results["peer_reason"] and peer.startswith("unavailable: ")
  assert results["jax_images_per_s"] > 0 and "diffusers_images_per_s" not in results
  assert "max_abs_diff_same_x_T" not in results


def test_unknown_section_is_a_usage_error(tmp_path, capsys):
  assert accelerator_report.main(["--out", str(tmp_path), "--sections", "nope"]) == 2
  assert capsys.readouterr().err.startswith("error: unknown section(s) nope;")


def test_write_json_is_atomic_and_strict(tmp_path):
  path = tmp_path / "sub" / "x.json"
  rec = common.bench_record("x", shapes={"n": 2}, results={"a": float("nan"), "b": (1, 2.5)},
                            peer=None, command="cmd")
  common.write_json(path, rec)
  assert os.listdir(path.parent) == ["x.json"]  # no temporary left behind
  back = json.loads(path.read_text())
  assert back["results"] == {"a": None, "b": [1, 2.5]} and back["command"] == "cmd"
  assert back["date"].endswith("+00:00") and back["device"]["platform"] == "cpu"
  assert common.out_path("", "x") is None
  assert common.out_path("/r/a.json", "x") == "/r/a.json"
  assert common.out_path("/r", "x") == "/r/x.json"


# ------------------------------------------------------------------------------ tables

FIXTURE = {
    "schema": "seqgen_jax.bench/1", "name": "attention_tflops",
    "date": "2026-01-02T03:04:05+00:00", "command": "python -m experiments.bench.attention_tflops",
    "git_commit": "0123456789abcdef+dirty",
    "device": {"platform": "gpu", "kind": "NVIDIA H100 80GB HBM3", "count": 1},
    "host": {"cpu": "x", "cores": 2}, "versions": {"jax": "0.11.0", "torch": "2.13.0"},
    "shapes": {"seq_lens": [1024, 8192], "head_dims": [128], "tokens_per_call": 16384,
               "model_dim": 2048, "dtype": "bfloat16", "causal": True, "iters": 10},
    "peer": "torch SDPA on cuda",
    "results": {"rows": [
        {"head_dim": 128, "heads": 16, "seq_len": 1024, "batch": 16, "xla_tflops": 101.234,
         "blockwise_tflops": 250.0, "cudnn_tflops": 500.0, "sdpa_tflops": 400.0,
         "xla_vs_sdpa": 0.253085, "blockwise_vs_sdpa": 0.625, "cudnn_vs_sdpa": 1.25},
        {"head_dim": 128, "heads": 16, "seq_len": 8192, "batch": 2, "blockwise_tflops": 300.0,
         "cudnn_tflops": 550.5, "sdpa_tflops": 450.0, "blockwise_vs_sdpa": 0.666667,
         "cudnn_vs_sdpa": 1.223333, "reasons": {"xla": "out of memory"}},
    ]},
    "notes": "causal",
}

EXPECTED = """\
# Speed tables

Generated by `python -m experiments.bench.tables DIR` from 1 benchmark record(s); edit the \
measurements, not this file.

### Causal attention forward + backward: TFLOP/s

NVIDIA H100 80GB HBM3 x1 (gpu) · bfloat16 · peer: torch SDPA on cuda · jax 0.11.0, torch 2.13.0 \
· 2026-01-02 · commit 0123456+dirty

16384 tokens per call, width 2048, causal; TFLOP/s credit the causal half only.

| head | heads | T | batch | XLA | blockwise | cuDNN | SDPA | XLA / SDPA | blockwise / SDPA \
| cuDNN / SDPA |
|---|---|---|---|---|---|---|---|---|---|---|
| 128 | 16 | 1024 | 16 | 101 | 250 | 500 | 400 | 0.25x | 0.62x | 1.25x |
| 128 | 16 | 8192 | 2 | n/a | 300 | 550 | 450 | n/a | 0.67x | 1.22x |

- n/a xla (128/8192): out of memory

Notes: causal.

Command: `python -m experiments.bench.attention_tflops`
"""


def test_tables_render_a_folder_into_the_expected_markdown(tmp_path):
  folder = tmp_path / "DIR"
  folder.mkdir()
  (folder / "attention.json").write_text(json.dumps(FIXTURE))
  (folder / "unrelated.json").write_text(json.dumps({"not": "a record"}))
  got = tables.render_folders([str(folder)]).replace(str(folder), "DIR")
  assert got == EXPECTED


def test_tables_read_report_sections_and_refuse_missing_folders(tmp_path, capsys):
  (tmp_path / "results.json").write_text(json.dumps(
      {"schema": accelerator_report.REPORT_SCHEMA, "sections": {"attention_tflops": FIXTURE}}))
  assert tables.load_records([str(tmp_path)]) == [FIXTURE]
  assert tables.main([str(tmp_path / "missing")]) == 2
  assert capsys.readouterr().err.startswith("error: no such file or folder")
