"""SST-2 sentence classification trained from scratch (no pre-trained vectors) with a
bidirectional LSTM or a Transformer encoder (the baseline for sst2_bert_finetune.py).

Arguments: ``runlocal`` (a CPU smoke run) and ``model=lstm|transformer`` (default lstm), e.g.
``:model=transformer,runlocal``.

Lower-cased words (vocabulary of the SST-2 training split); AdamW (warm-up 100, cosine decay),
weight decay 0.01, batch 64; training batches cut at 32 words, eval at 50. Eval: accuracy over
the whole dev split (872); final_metrics.json also has test accuracy (1,821) and the
majority-class baseline.

* ``lstm``: embedding 128, one bidirectional LSTM layer of 128 units per direction, final states
  of both directions -> linear head, dropout 0.3; lr 2e-3 to 1e-4, 1,000 steps (0.95 epochs of
  the 67,349 training phrases). Any classifier runs with the same flags:
  --config.model.name=gru|rnn|mingru|minlstm|lru (recurrent fields below).
* ``transformer``: pre-LN encoder, 2 layers, width 128, 4 heads, MLP 256, learned positions,
  mean pooling over the real tokens, dropout 0.1; lr 5e-4 to 1e-5, 600 steps (0.57 epochs).
  ``--config.model.name=bert`` trains the post-LN BERT classifier ([CLS] pooling) from scratch
  with the same fields.

  python -m experiments.main --config=experiments/configs/sst2.py:model=lstm \
      --workdir=/tmp/seqgen/sst2_lstm --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/sst2.py:model=lstm,runlocal \
      --workdir=/tmp/seqgen/sst2_lstm_local --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/sst2.py:model=transformer \
      --workdir=/tmp/seqgen/sst2_transformer --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/sst2.py:model=transformer,runlocal \
      --workdir=/tmp/seqgen/sst2_transformer_local --config.data.data_dir=../shared/data
"""

from experiments.configs import common

ARGS = common.Args(flags=("runlocal",), choices={"model": ("lstm", "transformer")})


def get_config(arg: str | None = None):
  a = ARGS.parse(arg)
  c = common.base_config("classify")
  c.data.name = "sst2"
  c.data.seq_len = 50  # dev / test: every sentence whole (longest 47 words)
  c.data.train_seq_len = 32  # training phrases: 98.5% whole, less padding
  c.data.min_count = 1
  c.data.max_vocab = 0  # 0: every training word

  c.model.name = a.model
  if a.model == "lstm":
    c.model.d_model = 128  # embedding width
    c.model.hidden_size = 128
    c.model.num_layers = 1
    c.model.bidirectional = True
    c.model.pooling = "final"
    c.model.dropout = 0.3
    c.optimizer.lr = 2e-3
    c.optimizer.min_lr = 1e-4
    c.train.num_steps = 1000
  else:
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.d_model = 128
    c.model.d_ff = 256
    c.model.dropout = 0.1
    c.model.pooling = "mean"
    c.optimizer.lr = 5e-4
    c.optimizer.min_lr = 1e-5
    c.train.num_steps = 600

  c.optimizer.warmup_steps = 100
  c.optimizer.weight_decay = 0.01
  c.optimizer.clip_grad_norm = 1.0

  c.train.batch_size = 64
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 1000
  c.eval.batch_size = 128

  if a.runlocal:
    c.data.max_examples = 2000
    c.data.seq_len = 32
    if a.model == "lstm":
      c.model.d_model = 32
      c.model.hidden_size = 32
    else:
      c.model.num_layers = 1
      c.model.d_model = 32
      c.model.d_ff = 64
    c.train.num_steps = 100
    c.train.batch_size = 32
    c.train.log_every = 25
    c.train.eval_every = 50
    c.train.checkpoint_every = 50
    c.optimizer.warmup_steps = 10
    c.eval.batch_size = 64
  return c
