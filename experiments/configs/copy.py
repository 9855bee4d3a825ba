"""Copy-with-delay (synthetic, no data files) with a GPT or a minGRU: the quick start.

Arguments: ``runlocal`` (a CPU smoke run: about a minute for the GPT, ~1.5 min for the minGRU)
and ``model=gpt|mingru`` (default gpt), e.g. ``:model=mingru,runlocal``.

Copy 8 random symbols after a delay of 32 blanks (dependency length 41).

* ``gpt``: 2 layers, 4 heads, width 128, MLP 512; AdamW lr 1e-3.
* ``mingru``: the recurrent counterpart; two residual minGRU blocks (width 128, 256 hidden units,
  GELU MLP), trained with ``jax.lax.associative_scan``; AdamW lr 3e-3.
  ``--config.model.scan_impl=sequential`` trains the same model with a lax.scan, and
  ``--config.model.name=minlstm`` / ``lru`` swaps the recurrence.

  python -m experiments.main --config=experiments/configs/copy.py:runlocal \
      --workdir=/tmp/seqgen/copy_gpt_local      # CPU smoke run, about a minute
  python -m experiments.main --config=experiments/configs/copy.py \
      --workdir=/tmp/seqgen/copy_gpt            # full run
  python -m experiments.main --config=experiments/configs/copy.py:model=mingru,runlocal \
      --workdir=/tmp/seqgen/copy_mingru_local   # CPU smoke run, ~1.5 min
  python -m experiments.main --config=experiments/configs/copy.py:model=mingru \
      --workdir=/tmp/seqgen/copy_mingru         # full run
"""

from experiments.configs import common

ARGS = common.Args(flags=("runlocal",), choices={"model": ("gpt", "mingru")})


def get_config(arg: str | None = None):
  a = ARGS.parse(arg)
  c = common.base_config("lm")
  c.data.name = "copy"
  c.data.length = 8
  c.data.delay = 32
  c.data.alphabet = 8

  c.model.name = a.model
  if a.model == "gpt":
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.d_model = 128
    c.model.d_ff = 512
    c.model.dropout = 0.0
    c.optimizer.lr = 1e-3
  else:
    c.model.d_model = 128
    c.model.hidden_size = 256
    c.model.num_layers = 2
    c.model.mlp_ratio = 4
    c.model.dropout = 0.0
    c.model.scan_impl = "associative"
    c.model.log_space = False
    c.optimizer.lr = 3e-3

  c.optimizer.warmup_steps = 100
  c.optimizer.min_lr = 1e-4
  c.optimizer.weight_decay = 0.0

  c.train.num_steps = 2000
  c.train.batch_size = 64
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.eval.num_batches = 8

  if a.runlocal:
    c.data.delay = 16
    c.model.d_model = 64
    c.train.batch_size = 32
    c.optimizer.warmup_steps = 30
    c.eval.num_batches = 4
    if a.model == "gpt":
      c.model.d_ff = 256
      c.train.num_steps = 300
      c.train.log_every = 50
      c.train.eval_every = 150
      c.train.checkpoint_every = 150
    else:
      c.model.hidden_size = 128
      c.train.num_steps = 600
      c.train.log_every = 100
      c.train.eval_every = 300
      c.train.checkpoint_every = 300
  return c
