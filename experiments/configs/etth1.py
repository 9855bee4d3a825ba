"""Forecasting ETTh1, multivariate 96 -> 96 (the Informer / Autoformer protocol), with an LSTM or
a Transformer encoder.

Arguments: ``runlocal`` (a CPU smoke run) and ``model=lstm|transformer`` (default lstm), e.g.
``:model=transformer,runlocal``.

All 7 variables in and out, standardised with the training rows' statistics; the standard
12 / 4 / 4-month split. Instance normalisation of each look-back window (RevIN without the
affine part). MSE loss, AdamW (warm-up 100, cosine to 1e-5), batch 32; no early stopping (the
last step is reported). final_metrics.json: MSE / MAE over every test window (2,785, stride 1)
on the normalised data, the same on validation, and the repeat-last-value and zero forecasts.

* ``lstm``: input projection to 64, one LSTM layer of 128 units, its final state -> a linear map
  to the 96 x 7 forecast; lr 1e-3, 1,200 steps (about 4.5 epochs of the 8,449 training windows).
  Any forecaster runs with the same flags: --config.model.name=gru|rnn|mingru|minlstm|lru.
* ``transformer``: each hour's 7 values projected to width 64, learned positions, a pre-LN
  encoder of 2 layers (4 heads, MLP 128, dropout 0.1), then one linear map from the flattened
  96 x 64 states to the 96 x 7 forecast; lr 5e-4, 600 steps (2.3 epochs).

``--config.data.name=etth2`` runs ETTh2.

  python -m experiments.main --config=experiments/configs/etth1.py:model=lstm \
      --workdir=/tmp/seqgen/etth1_lstm --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/etth1.py:model=lstm,runlocal \
      --workdir=/tmp/seqgen/etth1_lstm_local --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/etth1.py:model=transformer \
      --workdir=/tmp/seqgen/etth1_transformer --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/etth1.py:model=transformer,runlocal \
      --workdir=/tmp/seqgen/etth1_transformer_local --config.data.data_dir=../shared/data
"""

from experiments.configs import common

ARGS = common.Args(flags=("runlocal",), choices={"model": ("lstm", "transformer")})


def get_config(arg: str | None = None):
  a = ARGS.parse(arg)
  c = common.base_config("forecast")
  c.data.name = "etth1"
  c.data.lookback = 96
  c.data.horizon = 96
  c.data.target_only = False
  c.data.eval_split = "validation"

  c.model.name = a.model
  if a.model == "lstm":
    c.model.d_model = 64  # input projection width
    c.model.hidden_size = 128
    c.model.num_layers = 1
    c.model.dropout = 0.0
    c.optimizer.lr = 1e-3
    c.train.num_steps = 1200
  else:
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.d_model = 64
    c.model.d_ff = 128
    c.model.dropout = 0.1
    c.model.positions = "learned"
    c.optimizer.lr = 5e-4
    c.train.num_steps = 600
  c.model.instance_norm = True

  c.optimizer.warmup_steps = 100
  c.optimizer.min_lr = 1e-5
  c.optimizer.weight_decay = 0.01
  c.optimizer.clip_grad_norm = 1.0

  c.train.batch_size = 32
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 1000
  c.eval.batch_size = 256

  if a.runlocal:
    if a.model == "lstm":
      c.model.d_model = 16
      c.model.hidden_size = 32
    else:
      c.model.num_layers = 1
      c.model.d_model = 16
      c.model.d_ff = 32
    c.train.num_steps = 60
    c.train.log_every = 20
    c.train.eval_every = 30
    c.train.checkpoint_every = 30
    c.optimizer.warmup_steps = 10
  return c
