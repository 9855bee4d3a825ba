"""Character-level 2-layer LSTM on Tiny Shakespeare (a char-rnn in the shared training library).

Embedding 128, two LSTM layers of 512 units (forget-gate bias 1), dropout 0.2 between layers and
before the head, context 256 (the state is reset per window), batch 64, AdamW lr 2e-3 with
warm-up 100 then cosine to 1e-4 over 5000 steps, grad clip 1.0. ``model.lstm_impl=cudnn`` runs
the fused cuDNN LSTM on a GPU (the scan elsewhere). Needs <data_dir>/tinyshakespeare/input.txt.gz.

  python -m experiments.main --config=experiments/configs/shakespeare_char_lstm.py \
      --workdir=/tmp/seqgen/shakespeare_lstm --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/shakespeare_char_lstm.py:runlocal \
      --workdir=/tmp/seqgen/shakespeare_lstm_local --config.data.data_dir=../shared/data
"""

from seqgen_jax.train.defaults import default_config


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "lm"
  c.data.name = "tinyshakespeare"
  c.data.seq_len = 256

  c.model.name = "lstm"
  c.model.d_model = 128  # embedding width
  c.model.hidden_size = 512
  c.model.num_layers = 2
  c.model.dropout = 0.2
  c.model.forget_bias = 1.0
  c.model.lstm_impl = "scan"  # "cudnn": fused kernel on a GPU
  c.model.unroll = 1

  c.optimizer.name = "adamw"
  c.optimizer.lr = 2e-3
  c.optimizer.schedule = "warmup_cosine"
  c.optimizer.warmup_steps = 100
  c.optimizer.min_lr = 1e-4
  c.optimizer.b2 = 0.99
  c.optimizer.weight_decay = 0.0
  c.optimizer.clip_grad_norm = 1.0

  c.train.num_steps = 5000
  c.train.batch_size = 64
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 1000
  c.eval.num_batches = 50
  c.sample.num_tokens = 500

  if arg == "runlocal":
    c.data.seq_len = 64
    c.model.d_model = 32
    c.model.hidden_size = 64
    c.model.dropout = 0.0
    c.train.num_steps = 200
    c.train.batch_size = 32
    c.train.log_every = 50
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
    c.optimizer.lr = 1e-2  # a tiny LSTM leaves the unigram plateau faster with a larger step
    c.optimizer.warmup_steps = 20
    c.eval.num_batches = 4
    c.sample.num_tokens = 100
  elif arg:
    raise ValueError(f"unknown config argument '{arg}'; choose one of: runlocal")
  return c
