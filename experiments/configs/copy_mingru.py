"""minGRU (parallel scan) on copy-with-delay: the recurrent counterpart of copy_gpt.py.

Copy 8 random symbols after a delay of 32 blanks (dependency length 41). Two residual minGRU
blocks (width 128, 256 hidden units, GELU MLP), trained with ``jax.lax.associative_scan``;
``--config.model.scan_impl=sequential`` trains the same model with a lax.scan, and
``--config.model.name=minlstm`` / ``lru`` swaps the recurrence.

  python -m experiments.main --config=experiments/configs/copy_mingru.py:runlocal \
      --workdir=/tmp/seqgen/copy_mingru_local   # CPU smoke run, ~1.5 min
  python -m experiments.main --config=experiments/configs/copy_mingru.py \
      --workdir=/tmp/seqgen/copy_mingru         # full run
"""

from seqgen_jax.train.defaults import default_config


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "lm"
  c.data.name = "copy"
  c.data.length = 8
  c.data.delay = 32
  c.data.alphabet = 8

  c.model.name = "mingru"
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

  if arg == "runlocal":
    c.data.delay = 16
    c.model.d_model = 64
    c.model.hidden_size = 128
    c.train.num_steps = 600
    c.train.batch_size = 32
    c.train.log_every = 100
    c.train.eval_every = 300
    c.train.checkpoint_every = 300
    c.optimizer.warmup_steps = 30
    c.eval.num_batches = 4
  elif arg:
    raise ValueError(f"unknown config argument '{arg}'; choose one of: runlocal")
  return c
