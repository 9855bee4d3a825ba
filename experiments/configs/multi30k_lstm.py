"""Multi30k de->en with a Bahdanau-attention LSTM seq2seq (task "translate").

Encoder: 2-layer bidirectional LSTM; decoder: 2-layer LSTM fed [embedding ; attention context],
additive (Bahdanau) attention over the encoder outputs (seqgen_jax/nn/rnn_seq2seq.py).
Embedding 256, hidden 256 per direction, attention 256, dropout 0.2; one joint 8,000-piece BPE
vocabulary; sentences cut at 48 pieces; batch 64; AdamW lr 2e-3, warm-up 200 then cosine to
1e-4, grad clip 1.0, label smoothing 0.1. Final eval: test_2016 BLEU (sacrebleu) with greedy
decoding and beam search (beam 4, GNMT length penalty 0.6); translations in the workdir.
``--config.data.direction=en-de`` reverses the direction, ``--config.model.name=gru`` swaps the
cell. Needs <data_dir>/multi30k/*.gz.

  python -m experiments.main --config=experiments/configs/multi30k_lstm.py \
      --workdir=/tmp/seqgen/multi30k_lstm --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/multi30k_lstm.py:runlocal \
      --workdir=/tmp/seqgen/multi30k_lstm_local --config.data.data_dir=../shared/data
"""

from seqgen_jax.train.defaults import default_config


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "translate"
  c.data.name = "multi30k"
  c.data.direction = "de-en"
  c.data.vocab_size = 8000
  c.data.src_len = 48
  c.data.tgt_len = 48

  c.model.name = "lstm"
  c.model.d_model = 256  # embedding width
  c.model.hidden_size = 256  # per direction in the encoder
  c.model.attention_size = 256
  c.model.num_layers = 2
  c.model.dropout = 0.2
  c.model.unroll = 1

  c.optimizer.name = "adamw"
  c.optimizer.lr = 2e-3
  c.optimizer.schedule = "warmup_cosine"
  c.optimizer.warmup_steps = 200
  c.optimizer.min_lr = 1e-4
  c.optimizer.weight_decay = 0.0
  c.optimizer.clip_grad_norm = 1.0

  c.train.num_steps = 8000
  c.train.batch_size = 64
  c.train.label_smoothing = 0.1
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.eval.batch_size = 128
  c.eval.final_split = "test_2016"  # or "valid"
  c.eval.beam_size = 4
  c.eval.length_penalty = 0.6  # GNMT alpha
  c.eval.max_decode_len = 0  # 0: data.tgt_len
  c.eval.decode_batch_size = 128
  c.sample.num_sentences = 4

  if arg == "runlocal":
    c.data.vocab_size = 2000
    c.data.src_len = 32
    c.data.tgt_len = 32
    c.model.d_model = 32
    c.model.hidden_size = 32
    c.model.attention_size = 32
    c.model.num_layers = 1
    c.model.dropout = 0.0
    c.optimizer.warmup_steps = 10
    c.train.num_steps = 30
    c.train.batch_size = 16
    c.train.log_every = 10
    c.train.eval_every = 30
    c.train.checkpoint_every = 30
    c.eval.batch_size = 256
    c.eval.max_decode_len = 24
    c.eval.decode_batch_size = 256
    c.sample.num_sentences = 2
  elif arg == "cpu":
    # A ~15-minute run on a shared 2-core CPU (the README's numbers): smaller vocabulary,
    # widths and batch, 32-piece sentences, a short schedule.
    c.data.vocab_size = 2000
    c.data.src_len = 32
    c.data.tgt_len = 32
    c.model.d_model = 128
    c.model.hidden_size = 128
    c.model.attention_size = 128
    c.model.dropout = 0.1
    c.optimizer.lr = 3e-3
    c.optimizer.warmup_steps = 30
    c.train.num_steps = 300
    c.train.batch_size = 32
    c.train.log_every = 20
    c.train.eval_every = 0
    c.train.checkpoint_every = 100
    c.eval.max_decode_len = 40
  elif arg:
    raise ValueError(f"unknown config argument '{arg}'; choose one of: runlocal, cpu")
  return c
