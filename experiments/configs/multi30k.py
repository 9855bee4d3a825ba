"""Multi30k de->en translation (task "translate") with an attention LSTM or a Transformer.

Arguments: ``runlocal`` (a CPU smoke run) or ``cpu`` (a ~15-minute run on a shared 2-core CPU:
the numbers in docs/results.md), and ``model=lstm|transformer`` (default lstm), e.g.
``:model=transformer,cpu``.

One joint 8,000-piece BPE vocabulary; sentences cut at 48 pieces; batch 64; AdamW with warm-up
then cosine decay, grad clip 1.0, label smoothing 0.1. Final eval: test_2016 BLEU (sacrebleu)
with greedy decoding and beam search (beam 4, GNMT length penalty 0.6); translations in the
workdir. ``--config.data.direction=en-de`` reverses the direction. Needs
<data_dir>/multi30k/*.gz.

* ``lstm``: Bahdanau-attention seq2seq (seqgen_jax/nn/rnn_seq2seq.py). Encoder: 2-layer
  bidirectional LSTM; decoder: 2-layer LSTM fed [embedding ; attention context], additive
  attention over the encoder outputs. Embedding 256, hidden 256 per direction, attention 256,
  dropout 0.2; lr 2e-3, warm-up 200, cosine to 1e-4. ``--config.model.name=gru`` swaps the cell.
* ``transformer``: the Transformer of Vaswani et al. (2017), shrunk: 3 encoder and 3 decoder
  layers, d_model 256, 4 heads, d_ff 1024, ReLU, sinusoidal positions, dropout 0.1, embeddings
  shared by source, target and output. Pre-LN blocks (with a final LayerNorm), not the paper's
  post-LN: with a short schedule and no long warm-up, pre-LN trains stably at a higher learning
  rate; ``--config.model.norm=post`` gives the original. lr 1e-3, warm-up 400, cosine to 1e-5.

  python -m experiments.main --config=experiments/configs/multi30k.py:model=lstm \
      --workdir=/tmp/seqgen/multi30k_lstm --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/multi30k.py:model=lstm,runlocal \
      --workdir=/tmp/seqgen/multi30k_lstm_local --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/multi30k.py:model=lstm,cpu \
      --workdir=/tmp/seqgen/multi30k_lstm_cpu --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/multi30k.py:model=transformer \
      --workdir=/tmp/seqgen/multi30k_transformer --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/multi30k.py:model=transformer,runlocal \
      --workdir=/tmp/seqgen/multi30k_transformer_local --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/multi30k.py:model=transformer,cpu \
      --workdir=/tmp/seqgen/multi30k_transformer_cpu --config.data.data_dir=../shared/data
"""

from experiments.configs import common

ARGS = common.Args(flags=("runlocal", "cpu"), choices={"model": ("lstm", "transformer")})


def get_config(arg: str | None = None):
  a = ARGS.parse(arg)
  c = common.base_config("translate")
  c.data.name = "multi30k"
  c.data.direction = "de-en"
  c.data.vocab_size = 8000
  c.data.src_len = 48
  c.data.tgt_len = 48

  c.model.name = a.model
  if a.model == "lstm":
    c.model.d_model = 256  # embedding width
    c.model.hidden_size = 256  # per direction in the encoder
    c.model.attention_size = 256
    c.model.num_layers = 2
    c.model.dropout = 0.2
    c.model.unroll = 1
    c.optimizer.lr = 2e-3
    c.optimizer.warmup_steps = 200
    c.optimizer.min_lr = 1e-4
    c.optimizer.weight_decay = 0.0
  else:
    c.model.num_layers = 3  # encoder; the decoder has as many unless num_decoder_layers is set
    c.model.num_heads = 4
    c.model.d_model = 256
    c.model.d_ff = 1024
    c.model.dropout = 0.1
    c.model.norm = "pre"
    c.model.positions = "sinusoidal"
    c.model.share_embeddings = True
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 400
    c.optimizer.min_lr = 1e-5
    c.optimizer.b2 = 0.98
    c.optimizer.weight_decay = 0.01

  c.optimizer.name = "adamw"
  c.optimizer.schedule = "warmup_cosine"
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

  if a.runlocal:
    c.data.vocab_size = 2000
    c.data.src_len = 32
    c.data.tgt_len = 32
    if a.model == "lstm":
      c.model.d_model = 32
      c.model.hidden_size = 32
      c.model.attention_size = 32
      c.model.num_layers = 1
    else:
      c.model.num_layers = 1
      c.model.num_heads = 2
      c.model.d_model = 32
      c.model.d_ff = 64
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
  elif a.cpu:
    # A ~15-minute run on a shared 2-core CPU (the numbers in docs/results.md): smaller vocabulary,
    # widths and batch, 32-piece sentences, a short schedule.
    c.data.vocab_size = 2000
    c.data.src_len = 32
    c.data.tgt_len = 32
    if a.model == "lstm":
      c.model.d_model = 128
      c.model.hidden_size = 128
      c.model.attention_size = 128
      c.model.dropout = 0.1
      c.optimizer.lr = 3e-3
    else:
      c.model.d_model = 128
      c.model.d_ff = 512
      c.model.num_heads = 4
      c.optimizer.lr = 2e-3
    c.optimizer.warmup_steps = 30
    c.train.num_steps = 300
    c.train.batch_size = 32
    c.train.log_every = 20
    c.train.eval_every = 0
    c.train.checkpoint_every = 100
    c.eval.max_decode_len = 40
  return c
