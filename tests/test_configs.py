"""Every config file under experiments/configs: its documented arguments load, it sets only
fields that exist, its docstring's commands are valid, the data overrides of docs/data.md reach
it, and (training configs) its task's model and train step build under ``jax.eval_shape``.

Config files and their arguments are discovered (each file's ``ARGS``), never listed here.
"""

import functools
import importlib
import re

import jax
import numpy as np
import pytest
from absl import flags
from conftest import REPO
from ml_collections import config_flags

from experiments.configs import common
from seqgen_jax.errors import ConfigError

CONFIG_DIR = REPO / "experiments" / "configs"
FILES = sorted(str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("*.py")
               if p.name not in ("__init__.py", "common.py"))
SYNTHETIC = ("copy", "assoc_recall")  # datasets without files
# Each real dataset is prepared once, as a subset: a model and its step do not depend on how many
# examples there are (SST-2: the vocabulary size does, its structure does not).
SUBSET = {"mnist": 512, "fashion_mnist": 512, "cifar10": 512, "sst2": 2000}


def module(rel: str):
  return importlib.import_module("experiments.configs." + rel[:-3].replace("/", "."))


def is_showdown(rel: str) -> bool:
  return rel.startswith("showdown/")


CASES = [(rel, arg) for rel in FILES for arg in module(rel).ARGS.documented()]


def flat_keys(c, prefix: str = "") -> set[str]:
  out = set()
  for k in c.keys():
    v = c[k]
    if hasattr(v, "keys") and hasattr(v, "lock"):  # a ConfigDict section
      out |= flat_keys(v, f"{prefix}{k}.")
    else:
      out.add(f"{prefix}{k}")
  return out


# ------------------------------------------------------------------------------ loading


def test_every_config_file_is_found():
  assert "copy.py" in FILES and "showdown/quick.py" in FILES and len(FILES) >= 20, FILES
  assert len(CASES) > len(FILES)


@pytest.mark.parametrize("rel", FILES)
def test_docstring_lists_the_arguments_and_the_run_command(rel):
  mod = module(rel)
  assert isinstance(mod.ARGS, common.Args), rel
  doc = mod.__doc__
  for name in (*mod.ARGS.flags, *mod.ARGS.choices):
    assert re.search(rf"``{name}\b", doc), (rel, name)
  for key, values in mod.ARGS.choices.items():
    assert f"``{key}={'|'.join(values)}``" in doc, (rel, key)
  assert f"--config=experiments/configs/{rel}" in doc, rel
  with pytest.raises(ConfigError, match=re.escape(f"allowed: {mod.ARGS}")):
    mod.get_config("bogus")


@pytest.mark.parametrize("rel, arg", CASES)
def test_documented_argument_loads_and_sets_only_known_fields(rel, arg):
  c = module(rel).get_config(arg)
  if is_showdown(rel):
    allowed = flat_keys(common.showdown_defaults(c.task, c.mode))
    free = ("model.", "data.", "denoiser.")
  else:
    allowed = flat_keys(common.base_config(c.task))
    free = ("model.", "data.")
  unknown = sorted(k for k in flat_keys(c) - allowed if not k.startswith(free))
  assert not unknown, f"{rel}:{arg} sets fields that do not exist: {unknown}"


def test_field_check_catches_a_misspelt_field():
  c = module("copy.py").get_config("runlocal")
  c.train.num_stpes = 5
  assert "train.num_stpes" in flat_keys(c) - flat_keys(common.base_config(c.task))


def test_arguments_in_any_order_and_bad_ones_name_the_allowed():
  ddpm = module("ddpm_unet.py")
  assert ddpm.get_config("cpu,dataset=cifar10") == ddpm.get_config("dataset=cifar10,cpu")
  for bad, message in [("runlocal,cpu", "give at most one of runlocal, cpu"),
                       ("dataset=svhn", "choose one of dataset=mnist|fashion_mnist|cifar10"),
                       ("dataset=mnist,dataset=cifar10", "dataset= is given twice"),
                       ("fast", "allowed: runlocal, cpu, dataset=mnist|fashion_mnist|cifar10")]:
    with pytest.raises(ConfigError, match=re.escape(message)):
      ddpm.get_config(bad)


def test_commands_in_docstrings_and_launch_scripts_name_existing_configs():
  """Every ``--config=experiments/configs/...`` outside the docs (tests/test_docs.py checks
  those) names a file and arguments that load."""
  sources = [*CONFIG_DIR.rglob("*.py"), *(REPO / "experiments").glob("*.py"),
             *(REPO / "launch").glob("*.sh"), *(REPO / "seqgen_jax").rglob("*.py")]
  seen = 0
  for path in sources:
    for rel, arg in re.findall(r"--config=experiments/configs/([\w/]+\.py)(?::([\w=,|]+))?",
                               path.read_text()):
      assert rel in FILES, (path, rel)
      module(rel).get_config(arg or None)
      seen += 1
  assert seen > 40


@pytest.mark.parametrize("rel", [f for f in FILES if not is_showdown(f)])
def test_readme_data_overrides_reach_every_config(rel, tmp_path):
  """``--config.data.prepared_dir=...`` (and data_dir, download) through absl's config flag."""
  argv = ["prog", f"--config={CONFIG_DIR / rel}", f"--config.data.prepared_dir={tmp_path}",
          "--config.data.data_dir=/data/raw", "--config.data.download=true"]
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
  values(argv)
  data = holder.value.data
  assert (data.prepared_dir, data.data_dir, data.download) == (str(tmp_path), "/data/raw", True)


# ------------------------------------------------------------------------------ model and step


@pytest.fixture(scope="module")
def autoencoder_workdir(tmp_path_factory, data_dir):
  """An initialised (untrained) run of mnist_autoencoder.py:runlocal, as latent configs need."""
  import json

  import optax

  from seqgen_jax.tasks import build_task
  from seqgen_jax.train.checkpoint import Checkpointer
  from seqgen_jax.train.state import create_train_state

  cfg = module("mnist_autoencoder.py").get_config("runlocal")
  cfg.data.data_dir = str(data_dir)
  task = build_task(cfg)
  state = create_train_state(task.init_params, optax.sgd(0.1), jax.random.PRNGKey(0),
                             use_ema=False)
  path = tmp_path_factory.mktemp("mnist_ae")
  (path / "config.json").write_text(cfg.to_json_best_effort())
  ckpt = Checkpointer(str(path / "checkpoints"), save_every=1, async_save=False)
  ckpt.save(0, state, {"next_index": 0}, json.loads(cfg.to_json_best_effort()), force=True)
  ckpt.close()
  return str(path)


def abstract_train_step(config):
  """The loop's task, state and train step for ``config``, under jax.eval_shape."""
  from seqgen_jax.tasks import build_task
  from seqgen_jax.train import sharding
  from seqgen_jax.train.optim import build_optimizer
  from seqgen_jax.train.state import create_train_state
  from seqgen_jax.train.step import make_train_step

  tc = config.train
  task = build_task(config)
  mesh = sharding.make_mesh(config.mesh.fsdp)
  tx, schedule = build_optimizer(config.optimizer, tc.num_steps)
  init_fn = functools.partial(create_train_state, task.init_params, tx,
                              use_ema=tc.ema_decay is not None)
  state = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  rows = task.train_source().batch(0, slice(0, 8))
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct((tc.batch_size, *np.shape(x)[1:]),
                                                      np.asarray(x).dtype), rows)
  step = make_train_step(
      task.loss_fn, tx, mesh=mesh, state_sharding=sharding.state_shardings(state, mesh),
      lr_schedule=schedule, grad_accum_steps=tc.grad_accum_steps,
      clip_grad_norm=config.optimizer.clip_grad_norm, compute_dtype=tc.compute_dtype,
      ema_decay=tc.ema_decay, ema_warmup=tc.ema_warmup, mode=tc.step_mode)
  new_state, metrics = jax.eval_shape(step, state, batch)
  return state, new_state, metrics


def check_model_and_step(rel: str, arg: str, request) -> None:
  config = module(rel).get_config(arg)
  if config.data.name not in SYNTHETIC:
    config.data.data_dir = str(request.getfixturevalue("data_dir"))
    if config.data.name in SUBSET:
      config.data.max_examples = SUBSET[config.data.name]
  if config.get("latent", {}).get("autoencoder_workdir"):
    config.latent.autoencoder_workdir = request.getfixturevalue("autoencoder_workdir")
  if config.get("init", {}).get("from_workdir"):
    config.init.from_workdir = ""  # the documented from-scratch comparison: no mlm run needed
  state, new_state, metrics = abstract_train_step(config)
  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
  assert shapes(new_state.params) == shapes(state.params)
  assert sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)) > 0
  assert metrics["loss"].shape == () and metrics["loss"].dtype == np.float32


def _smallest(rel: str) -> list[str]:
  """Per model / dataset choice: the runlocal argument (every training config has one)."""
  return [a for a in module(rel).ARGS.documented() if a.split(",")[0] == "runlocal"]


TRAINING = [f for f in FILES if not is_showdown(f)]
SMALL = [(rel, arg) for rel in TRAINING for arg in _smallest(rel)]
OTHERS = [(rel, arg) for rel, arg in CASES if not is_showdown(rel) and (rel, arg) not in SMALL]


@pytest.mark.parametrize("rel, arg", SMALL)
def test_model_and_train_step_build(rel, arg, request):
  check_model_and_step(rel, arg, request)


@pytest.mark.slow  # every other documented size: about two minutes on 2 CPU cores
@pytest.mark.parametrize("rel, arg", OTHERS)
def test_model_and_train_step_build_at_every_documented_size(rel, arg, request):
  check_model_and_step(rel, arg, request)
