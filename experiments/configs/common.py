"""What every experiment config shares: the ``:arg`` parser and each task's config fields.

A config file is ``experiments/configs/<name>.py`` with a module constant ``ARGS`` (the arguments
it takes after the colon) and ``get_config(arg)``. An argument is a comma-separated list of at
most one size flag (``runlocal``: a CPU smoke run of a minute or so; ``cpu``: the small recipe
behind the CPU numbers of docs/results.md, where a config has one) and ``key=value`` choices
(``dataset=mnist``, ``model=lstm``), in any order: ``--config=.../ddpm_unet.py:cpu,dataset=mnist``.

``base_config(task)`` is ``default_config()`` (the fields the training loop reads) plus the
fields that ``task`` reads beyond them, with the task's defaults. A config sets values on it and
adds fields only under ``data`` and ``model`` (which depend on the dataset and the model);
tests/test_configs.py checks that, so a misspelt field in a config file fails a test instead of
being ignored.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping, Sequence

import ml_collections

from seqgen_jax.errors import ConfigError
from seqgen_jax.train.defaults import default_config


def parse_args(arg: str | None, *, flags: Sequence[str] = ("runlocal",),
               choices: Mapping[str, Sequence[str]] | None = None) -> types.SimpleNamespace:
  """Parses a config's ``:arg`` into one bool per flag and one value per choice.

  ``flags`` are size presets, so at most one is given; each choice defaults to its first value.
  An unknown or malformed item raises ConfigError naming the allowed arguments.
  """
  choices = {k: tuple(v) for k, v in (choices or {}).items()}
  out = types.SimpleNamespace(**{f: False for f in flags}, **{k: v[0] for k, v in choices.items()})
  given_flags, given_keys = [], set()
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    key, eq, value = item.partition("=")
    if not eq and key in flags:
      given_flags.append(key)
      setattr(out, key, True)
    elif eq and key in choices:
      if value not in choices[key]:
        raise ConfigError(f"config argument {key}={value}: choose one of "
                          f"{key}={'|'.join(choices[key])}")
      if key in given_keys:
        raise ConfigError(f"config argument {key}= is given twice")
      given_keys.add(key)
      setattr(out, key, value)
    else:
      raise ConfigError(f"unknown config argument '{item}'; allowed: "
                        f"{describe_args(flags, choices)}")
  if len(given_flags) > 1:
    raise ConfigError(f"config arguments {' and '.join(given_flags)}: give at most one of "
                      f"{', '.join(flags)}")
  return out


def describe_args(flags: Sequence[str], choices: Mapping[str, Sequence[str]]) -> str:
  """``runlocal, cpu, dataset=mnist|cifar10`` (or ``none``), for messages and docs."""
  parts = list(flags) + [f"{k}={'|'.join(v)}" for k, v in choices.items()]
  return ", ".join(parts) if parts else "none"


@dataclasses.dataclass(frozen=True)
class Args:
  """The arguments a config file takes (its module constant ``ARGS``)."""

  flags: tuple[str, ...] = ("runlocal",)
  choices: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

  def parse(self, arg: str | None) -> types.SimpleNamespace:
    """``parse_args`` with this file's flags and choices."""
    return parse_args(arg, flags=self.flags, choices=self.choices)

  def documented(self) -> list[str]:
    """Every documented argument: no flag or one flag, times every combination of choices."""
    combos = [[]]
    for key, values in self.choices.items():
      combos = [c + [f"{key}={v}"] for c in combos for v in values]
    return [",".join(([f] if f else []) + c) for f in ("", *self.flags) for c in combos]

  def __str__(self) -> str:
    return describe_args(self.flags, self.choices)


# ------------------------------------------------------------------------------ task fields


def diffusion_defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Fields of the "diffusion" task, shared by the diffusion configs."""
  c.task = "diffusion"
  c.data.image_size = 0  # 0: the dataset's own size
  c.diffusion = dict(schedule="linear", num_timesteps=1000, prediction="eps",
                     weighting="simple", min_snr_gamma=5.0)
  c.cond = dict(kind="label", p_uncond=0.1, guidance=1.0)
  c.latent = dict(autoencoder_workdir="")
  c.sr = dict(low_res_size=0, aug_max_t=0, sample_aug_t=0)
  c.cascade = dict(base_workdir="")
  c.sample.per_class = 8
  c.sample.num_steps = 50
  c.sample.prompts = ()
  c.eval.num_batches = 0  # 0: the whole test split
  c.eval.t_buckets = 4
  c.eval.bpd_num_examples = 256
  c.eval.bpd_batch_size = 64
  c.eval.bpd_ode_steps = 100
  c.eval.bpd_method = "rk4"
  c.eval.bpd_eps = 1e-3  # the noise level of the first training step (see continuous_to_index)
  c.eval.bpd_num_probes = 1
  c.eval.fid_classifier_workdir = ""
  c.eval.fid_num_samples = 10000
  c.eval.fid_batch_size = 500
  c.eval.fid_samplers = ("ddim-50", "ddpm-1000")
  c.eval.fid_guidance = None  # None: cond.guidance; 0.0: unguided conditional samples
  return c


def translate_defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Fields of the "translate" task (seqgen_jax/tasks/translate.py), with its defaults."""
  c.task = "translate"
  c.train.label_smoothing = 0.0
  c.eval.final_split = "test_2016"  # or "valid"
  c.eval.beam_size = 4
  c.eval.length_penalty = 0.6  # GNMT alpha
  c.eval.max_decode_len = 0  # 0: data.tgt_len
  c.eval.decode_batch_size = 128
  c.sample.num_sentences = 4
  return c


def classify_defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Fields of the "classify" task: where a pre-trained encoder comes from (none by default)."""
  c.task = "classify"
  c.init.from_workdir = ""  # an mlm run's workdir
  c.init.hf_checkpoint = ""  # a local Hugging Face BERT directory (as init.from_pretrained)
  return c


def mdlm_defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Fields of the "mdlm" task (masked diffusion LM), with its defaults."""
  c.task = "mdlm"
  c.mdlm = dict(eval_t_samples=4, sample_steps=64)
  return c


def autoencoder_defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Fields of the "autoencoder" task, with its defaults."""
  c.task = "autoencoder"
  c.autoencoder = dict(kl_weight=1e-6, rec_loss="l1")
  return c


TASK_DEFAULTS = {"diffusion": diffusion_defaults, "translate": translate_defaults,
                 "classify": classify_defaults, "mdlm": mdlm_defaults,
                 "autoencoder": autoencoder_defaults}


def base_config(task: str) -> ml_collections.ConfigDict:
  """``default_config()`` for ``task``, with the fields that task reads beyond the loop's."""
  c = default_config()
  c.task = task
  if task in TASK_DEFAULTS:
    TASK_DEFAULTS[task](c)
  return c


# ------------------------------------------------------------------------------ the showdown


def showdown_defaults(task: str, mode: str) -> ml_collections.ConfigDict:
  """Every field a showdown run (experiments/showdown.py) reads; a preset sets the values."""
  c = ml_collections.ConfigDict()
  c.task = task
  c.mode = mode  # the preset's name, shown in the report
  c.budget_flops = ml_collections.config_dict.placeholder(float)  # per model and seed
  c.budget_seconds = ml_collections.config_dict.placeholder(float)  # if set: replaces FLOPs
  c.seeds = 3  # per model, for the confidence intervals
  c.models = ml_collections.config_dict.placeholder(tuple)  # None: every model that fits
  c.data_dir = ""  # empty: $SEQGEN_DATA_DIR
  c.batch_size = 32
  c.evals_per_run = 4
  c.model = ml_collections.ConfigDict()  # config.model fields common to every model
  c.data = ml_collections.ConfigDict()  # config.data fields of the task
  c.lr = 3e-3
  c.sweep_models = ()  # the dependency-length sweep's models; (): every causal_lm model
  c.sweep_steps = 200
  c.copy_delays = ()
  c.recall_pairs = ()
  c.scaling_models = ()
  c.scaling_lengths = ()
  c.scaling_tokens = 4096
  c.latency_lengths = ()
  c.denoiser = ml_collections.ConfigDict()  # U-Net and DiT fields of the image-latency bench
  c.image_shape = (16, 16, 3)
  c.denoise_steps = ()
  c.repeats = 5
  return c
