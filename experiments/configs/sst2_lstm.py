"""Bidirectional LSTM sentence classifier on SST-2, trained from scratch (no pre-trained vectors).

Lower-cased words (vocabulary of the SST-2 training split), embedding 128, one bidirectional
LSTM layer of 128 units per direction, final states of both directions -> linear head, dropout
0.3, AdamW lr 2e-3 (warm-up 100, cosine to 1e-4), batch 64, 1,000 steps (0.95 epochs of the
67,349 training phrases; training batches cut at 32 words, eval at 50). Eval: accuracy over
the whole dev split (872); final_metrics.json also has test accuracy (1,821) and the
majority-class baseline. Any classifier runs with the same flags:
--config.model.name=gru|rnn|mingru|minlstm|lru (recurrent fields below).

  python -m experiments.main --config=experiments/configs/sst2_lstm.py \
      --workdir=/tmp/seqgen/sst2_lstm --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/sst2_lstm.py:runlocal \
      --workdir=/tmp/seqgen/sst2_lstm_local --config.data.data_dir=../shared/data
"""

from seqgen_jax.train.defaults import default_config


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "classify"
  c.data.name = "sst2"
  c.data.seq_len = 50  # dev / test: every sentence whole (longest 47 words)
  c.data.train_seq_len = 32  # training phrases: 98.5% whole, less padding
  c.data.min_count = 1
  c.data.max_vocab = 0  # 0: every training word

  c.model.name = "lstm"
  c.model.d_model = 128  # embedding width
  c.model.hidden_size = 128
  c.model.num_layers = 1
  c.model.bidirectional = True
  c.model.pooling = "final"
  c.model.dropout = 0.3

  c.optimizer.lr = 2e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.min_lr = 1e-4
  c.optimizer.weight_decay = 0.01
  c.optimizer.clip_grad_norm = 1.0

  c.train.num_steps = 1000
  c.train.batch_size = 64
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 1000
  c.eval.batch_size = 128

  if arg == "runlocal":
    c.data.max_examples = 2000
    c.data.seq_len = 32
    c.model.d_model = 32
    c.model.hidden_size = 32
    c.train.num_steps = 100
    c.train.batch_size = 32
    c.train.log_every = 25
    c.train.eval_every = 50
    c.train.checkpoint_every = 50
    c.optimizer.warmup_steps = 10
    c.eval.batch_size = 64
  elif arg:
    raise ValueError(f"unknown config argument '{arg}'; choose one of: runlocal")
  return c
