"""GPT on copy-with-delay (synthetic, no data files): the quick start.

Copy 8 random symbols after a delay of 32 blanks (dependency length 41).

  python -m experiments.main --config=experiments/configs/copy_gpt.py:runlocal \
      --workdir=/tmp/seqgen/copy_gpt_local     # CPU smoke run, about a minute
  python -m experiments.main --config=experiments/configs/copy_gpt.py \
      --workdir=/tmp/seqgen/copy_gpt           # full run
"""

from seqgen_jax.train.defaults import default_config


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "lm"
  c.data.name = "copy"
  c.data.length = 8
  c.data.delay = 32
  c.data.alphabet = 8

  c.model.name = "gpt"
  c.model.num_layers = 2
  c.model.num_heads = 4
  c.model.d_model = 128
  c.model.d_ff = 512
  c.model.dropout = 0.0

  c.optimizer.lr = 1e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.min_lr = 1e-4
  c.optimizer.weight_decay = 0.0

  c.train.num_steps = 2000
  c.train.batch_size = 64
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.eval.num_batches = 8

  if arg == "runlocal":
    c.data.delay = 16
    c.model.d_model = 64
    c.model.d_ff = 256
    c.train.num_steps = 300
    c.train.batch_size = 32
    c.train.log_every = 50
    c.train.eval_every = 150
    c.train.checkpoint_every = 150
    c.optimizer.warmup_steps = 30
    c.eval.num_batches = 4
  elif arg:
    raise ValueError(f"unknown config argument '{arg}'; choose one of: runlocal")
  return c
