"""Character-level language model on Tiny Shakespeare: nanoGPT's GPT or a 2-layer LSTM (a
char-rnn), in the shared training library.

Arguments: ``runlocal`` (a CPU smoke run) and ``model=gpt|lstm`` (default gpt), e.g.
``:model=lstm,runlocal``. Needs <data_dir>/tinyshakespeare/input.txt.gz.

Context 256, batch 64, AdamW (b2 0.99) with warm-up 100 then cosine to 1e-4 over 5000 steps, grad
clip 1.0.

* ``gpt``: nanoGPT's reference settings (config/train_shakespeare_char.py): 6 layers, 6 heads,
  width 384, dropout 0.2, no biases, lr 1e-3, weight decay 0.1, bfloat16 compute.
* ``lstm``: embedding 128, two LSTM layers of 512 units (forget-gate bias 1), dropout 0.2 between
  layers and before the head (the state is reset per window), lr 2e-3, no weight decay.
  ``model.lstm_impl=cudnn`` runs the fused cuDNN LSTM on a GPU (the scan elsewhere).

  python -m experiments.main --config=experiments/configs/shakespeare_char.py \
      --workdir=/tmp/seqgen/shakespeare_gpt --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/shakespeare_char.py:runlocal \
      --workdir=/tmp/seqgen/shakespeare_gpt_local --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/shakespeare_char.py:model=lstm \
      --workdir=/tmp/seqgen/shakespeare_lstm --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/shakespeare_char.py:model=lstm,runlocal \
      --workdir=/tmp/seqgen/shakespeare_lstm_local --config.data.data_dir=../shared/data
"""

from experiments.configs import common

ARGS = common.Args(flags=("runlocal",), choices={"model": ("gpt", "lstm")})


def get_config(arg: str | None = None):
  a = ARGS.parse(arg)
  c = common.base_config("lm")
  c.data.name = "tinyshakespeare"
  c.data.seq_len = 256

  c.model.name = a.model
  if a.model == "gpt":
    c.model.num_layers = 6
    c.model.num_heads = 6
    c.model.d_model = 384
    c.model.d_ff = 4 * 384
    c.model.dropout = 0.2
    c.model.use_bias = False  # nanoGPT's shakespeare_char config
    c.optimizer.lr = 1e-3
    c.optimizer.weight_decay = 0.1
    c.train.compute_dtype = "bfloat16"
    c.train.eval_every = 250
    c.eval.num_batches = 200  # nanoGPT's eval_iters
  else:
    c.model.d_model = 128  # embedding width
    c.model.hidden_size = 512
    c.model.num_layers = 2
    c.model.dropout = 0.2
    c.model.forget_bias = 1.0
    c.model.lstm_impl = "scan"  # "cudnn": fused kernel on a GPU
    c.model.unroll = 1
    c.optimizer.lr = 2e-3
    c.optimizer.weight_decay = 0.0
    c.train.eval_every = 500
    c.eval.num_batches = 50

  c.optimizer.name = "adamw"
  c.optimizer.schedule = "warmup_cosine"
  c.optimizer.warmup_steps = 100
  c.optimizer.min_lr = 1e-4
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.99
  c.optimizer.clip_grad_norm = 1.0

  c.train.num_steps = 5000
  c.train.batch_size = 64
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.sample_every = 0
  c.sample.num_tokens = 500

  if a.runlocal:
    c.data.seq_len = 64
    if a.model == "gpt":
      c.model.num_layers = 2
      c.model.num_heads = 4
      c.model.d_model = 64
      c.model.d_ff = 256
      c.train.compute_dtype = "float32"
    else:
      c.model.d_model = 32
      c.model.hidden_size = 64
      c.optimizer.lr = 1e-2  # a tiny LSTM leaves the unigram plateau faster with a larger step
    c.model.dropout = 0.0
    c.train.num_steps = 200
    c.train.batch_size = 32
    c.train.log_every = 50
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
    c.optimizer.warmup_steps = 20
    c.eval.num_batches = 4
    c.sample.num_tokens = 100
  return c
