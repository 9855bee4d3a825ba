"""Evaluates a finished (or stopped) "diffusion" run from its workdir: final_eval + sample grid.

Reads ``<workdir>/config.json`` and the latest checkpoint (EMA params when kept, unless
``--noema``), applies
``--set`` overrides (dotted config paths, values parsed as Python literals), runs the task's
``final_eval`` (bits/dim, FID, guided accuracy) and the sample hook, and writes
``<workdir>/eval_<tag>.json`` and ``<workdir>/samples/<name>_eval_<tag>.png``.

FID samples are kept batch by batch under ``<workdir>/fid_samples/`` (``--resume``, the default:
``eval.fid_sample_dir``), so the same command run again after a stop or preemption samples only
the batches that are missing. The files are named by a fingerprint of the params, seed and
sampler settings: a different checkpoint or setting never reuses them. ``--shard=i/k`` splits
the sampling between k processes (each makes every k-th batch and stops), and a last run without
``--shard`` gathers them:

  for i in 0 1; do python -m experiments.diffusion_eval --workdir=... --shard=$i/2 ... & done; wait
  python -m experiments.diffusion_eval --workdir=... ...      # loads all batches, computes FID

  python -m experiments.diffusion_eval --workdir=/tmp/seqgen/mnist_ddpm --tag=fid10k \
      --set=eval.fid_classifier_workdir=/path/to/fidnet/mnist --set=eval.fid_num_samples=10000
"""

from __future__ import annotations

import ast
import json
import os
import sys
import time

from absl import flags, logging

from experiments import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a finished diffusion run.")
_TAG = flags.DEFINE_string("tag", "eval", "Suffix of the output files.")
_SET = flags.DEFINE_multi_string("set", [],
                                 "Config override KEY=VALUE, e.g. eval.fid_num_samples=500.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the samples.")
_GRID = flags.DEFINE_bool("grid", True, "Also write the sample hook's grids.")
_EMA = flags.DEFINE_bool("ema", True, "Evaluate the EMA params when the run kept them (else the "
                         "raw params; for short runs, where the EMA still carries the init).")
_RESUME = flags.DEFINE_bool("resume", True, "Keep every batch of FID samples under "
                            "<workdir>/fid_samples/ and reuse the ones an earlier, stopped run of "
                            "the same evaluation wrote (unless --set=eval.fid_sample_dir=... "
                            "names another folder).")
_SHARD = flags.DEFINE_string("shard", "", "'i/k': make only every k-th batch of FID samples "
                             "(from the i-th) into the --resume folder and compute no FID; run k "
                             "such processes side by side, then once without --shard to gather.")
flags.mark_flags_as_required(["workdir"])


def _apply(config, item: str) -> None:
  """Sets one ``--set=KEY=VALUE`` override; an unknown KEY is a one-line ConfigError."""
  from seqgen_jax.errors import ConfigError

  key, _, raw = item.partition("=")
  missing = cli.describe_missing_field(config, key)
  if missing:
    raise ConfigError(f"--set={item}: {missing}")
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw
  node = config
  *path, leaf = key.split(".")
  for p in path:
    node = node[p]
  node[leaf] = value


def main(argv):
  del argv
  import jax
  import numpy as np

  from seqgen_jax.errors import SeqgenError
  from seqgen_jax.eval.fid_samples import parse_shard
  from seqgen_jax.tasks import build_task, pretrained
  from seqgen_jax.train import sharding
  from seqgen_jax.train.evaluate import Evaluator
  from seqgen_jax.train.metrics import encode_png

  try:
    config = pretrained.load_config(_WORKDIR.value)
    if _RESUME.value:
      with config.unlocked():
        config.eval.fid_sample_dir = os.path.join(_WORKDIR.value, "fid_samples")
    shard = parse_shard(_SHARD.value)
    with config.unlocked():
      config.eval.fid_sample_shard = _SHARD.value
      if shard:  # a shard only samples: no bits/dim, no grid
        config.eval.bpd_num_examples = 0
    for item in _SET.value:
      _apply(config, item)
    task = build_task(config)
    params, step = pretrained.load_params(_WORKDIR.value, prefer_ema=_EMA.value)
    rng = jax.random.PRNGKey(_SEED.value)
    t0 = time.perf_counter()
    evaluator = Evaluator(sharding.make_mesh(config.get("mesh", {}).get("fsdp", 1)))
    metrics = task.final_eval(params, rng, evaluator)
  except SeqgenError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  result = {"step": step, "seconds": time.perf_counter() - t0, "overrides": _SET.value,
            "ema": _EMA.value, **metrics}
  suffix = f"_shard{shard[0]}of{shard[1]}" if shard else ""
  path = os.path.join(_WORKDIR.value, f"eval_{_TAG.value}{suffix}.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  logging.info("%s: %s", path, result)
  if _GRID.value and not shard:
    os.makedirs(os.path.join(_WORKDIR.value, "samples"), exist_ok=True)
    for name, value in task.sample(params, jax.random.fold_in(rng, 1)).items():
      if isinstance(value, str):
        logging.info("%s:\n%s", name, value)
        continue
      out = os.path.join(_WORKDIR.value, "samples", f"{name}_eval_{_TAG.value}.png")
      with open(out, "wb") as f:
        f.write(encode_png(np.asarray(value)))
      logging.info("grid: %s", out)


if __name__ == "__main__":
  cli.run(main)
