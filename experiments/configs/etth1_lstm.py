"""LSTM forecaster on ETTh1, multivariate 96 -> 96 (the Informer / Autoformer protocol).

All 7 variables in and out, standardised with the training rows' statistics; the standard
12 / 4 / 4-month split. Instance normalisation of each look-back window (RevIN without the
affine part), input projection to 64, one LSTM layer of 128 units, its final state -> a linear
map to the 96 x 7 forecast. MSE loss, AdamW lr 1e-3 (warm-up 100, cosine to 1e-5), batch 32,
1,200 steps (about 4.5 epochs of the 8,449 training windows); no early stopping (the last step
is reported). final_metrics.json: MSE / MAE over every test window (2,785, stride 1) on the
normalised data, the same on validation, and the repeat-last-value and zero forecasts.
Any forecaster runs with the same flags: --config.model.name=gru|rnn|mingru|minlstm|lru.
``--config.data.name=etth2`` runs ETTh2.

  python -m experiments.main --config=experiments/configs/etth1_lstm.py \
      --workdir=/tmp/seqgen/etth1_lstm --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/etth1_lstm.py:runlocal \
      --workdir=/tmp/seqgen/etth1_lstm_local --config.data.data_dir=../shared/data
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

  c.model.name = "lstm"
  c.model.d_model = 64  # input projection width
  c.model.hidden_size = 128
  c.model.num_layers = 1
  c.model.dropout = 0.0
  c.model.instance_norm = True

  c.optimizer.lr = 1e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.min_lr = 1e-5
  c.optimizer.weight_decay = 0.01
  c.optimizer.clip_grad_norm = 1.0

  c.train.num_steps = 1200
  c.train.batch_size = 32
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 1000
  c.eval.batch_size = 256

  if arg == "runlocal":
    c.model.d_model = 16
    c.model.hidden_size = 32
    c.train.num_steps = 60
    c.train.log_every = 20
    c.train.eval_every = 30
    c.train.checkpoint_every = 30
    c.optimizer.warmup_steps = 10
  elif arg:
    raise ValueError(f"unknown config argument '{arg}'; choose one of: runlocal")
  return c
