"""Transformer forecaster on ETTh1, multivariate 96 -> 96 (the Informer / Autoformer protocol).

Same data, split, normalisation and metrics as etth1_lstm.py. The "transformer" forecaster:
instance normalisation, each hour's 7 values projected to width 64, learned positions, a pre-LN
encoder of 2 layers (4 heads, MLP 128, dropout 0.1), then one linear map from the flattened
96 x 64 states to the 96 x 7 forecast. MSE loss, AdamW lr 5e-4 (warm-up 100, cosine to 1e-5),
batch 32, 600 steps (2.3 epochs); no early stopping (the last step is reported).

  python -m experiments.main --config=experiments/configs/etth1_transformer.py \
      --workdir=/tmp/seqgen/etth1_transformer --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/etth1_transformer.py:runlocal \
      --workdir=/tmp/seqgen/etth1_transformer_local --config.data.data_dir=../shared/data
"""

from seqgen_jax.train.defaults import default_config


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "forecast"
  c.data.name = "etth1"
  c.data.lookback = 96
  c.data.horizon = 96
  c.data.target_only = False
  c.data.eval_split = "validation"

  c.model.name = "transformer"
  c.model.num_layers = 2
  c.model.num_heads = 4
  c.model.d_model = 64
  c.model.d_ff = 128
  c.model.dropout = 0.1
  c.model.positions = "learned"
  c.model.instance_norm = True

  c.optimizer.lr = 5e-4
  c.optimizer.warmup_steps = 100
  c.optimizer.min_lr = 1e-5
  c.optimizer.weight_decay = 0.01
  c.optimizer.clip_grad_norm = 1.0

  c.train.num_steps = 600
  c.train.batch_size = 32
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 1000
  c.eval.batch_size = 256

  if arg == "runlocal":
    c.model.num_layers = 1
    c.model.d_model = 16
    c.model.d_ff = 32
    c.train.num_steps = 60
    c.train.log_every = 20
    c.train.eval_every = 30
    c.train.checkpoint_every = 30
    c.optimizer.warmup_steps = 10
  elif arg:
    raise ValueError(f"unknown config argument '{arg}'; choose one of: runlocal")
  return c
