"""Character-level GPT on Tiny Shakespeare with nanoGPT's reference settings.

6 layers, 6 heads, width 384, context 256, batch 64, dropout 0.2, AdamW (b2 0.99), lr 1e-3
warm-up 100 then cosine to 1e-4 over 5000 steps, grad clip 1.0 (nanoGPT's
config/train_shakespeare_char.py). Needs <data_dir>/tinyshakespeare/input.txt.gz.

  python -m experiments.main --config=experiments/configs/shakespeare_char_gpt.py \
      --workdir=/tmp/seqgen/shakespeare_gpt --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/shakespeare_char_gpt.py:runlocal \
      --workdir=/tmp/seqgen/shakespeare_gpt_local --config.data.data_dir=../shared/data
"""

from seqgen_jax.train.defaults import default_config


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "lm"
  c.data.name = "tinyshakespeare"
  c.data.seq_len = 256
  c.data.prepared_dir = ""  # empty: $SEQGEN_PREPARED_DIR, else ~/tensorflow_datasets
  c.data.download = False  # True: fetch a missing input.txt from Karpathy's char-rnn repo

  c.model.name = "gpt"
  c.model.num_layers = 6
  c.model.num_heads = 6
  c.model.d_model = 384
  c.model.d_ff = 4 * 384
  c.model.dropout = 0.2
  c.model.use_bias = False  # nanoGPT's shakespeare_char config

  c.optimizer.name = "adamw"
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = "warmup_cosine"
  c.optimizer.warmup_steps = 100
  c.optimizer.min_lr = 1e-4
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.99
  c.optimizer.weight_decay = 0.1
  c.optimizer.clip_grad_norm = 1.0

  c.train.num_steps = 5000
  c.train.batch_size = 64
  c.train.compute_dtype = "bfloat16"
  c.train.log_every = 100
  c.train.eval_every = 250
  c.train.checkpoint_every = 1000
  c.train.sample_every = 0
  c.eval.num_batches = 200  # nanoGPT's eval_iters
  c.sample.num_tokens = 500

  if arg == "runlocal":
    c.data.seq_len = 64
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.d_model = 64
    c.model.d_ff = 256
    c.model.dropout = 0.0
    c.train.num_steps = 200
    c.train.batch_size = 32
    c.train.compute_dtype = "float32"
    c.train.log_every = 50
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
    c.optimizer.warmup_steps = 20
    c.eval.num_batches = 4
    c.sample.num_tokens = 100
  elif arg:
    raise ValueError(f"unknown config argument '{arg}'; choose one of: runlocal")
  return c

