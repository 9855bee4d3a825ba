"""Transformer encoder sentence classifier on SST-2, trained from scratch (the baseline for
sst2_bert_finetune.py).

The "transformer" classifier: pre-LN encoder, 2 layers, width 128, 4 heads, MLP 256, learned
positions, mean pooling over the real tokens, dropout 0.1; lower-cased words of the SST-2
training split; AdamW lr 5e-4 (warm-up 100, cosine to 1e-5), batch 64, 600 steps (0.57 epochs;
training batches cut at 32 words, eval at 50). Eval:
accuracy over the whole dev split; final_metrics.json also has test accuracy and the
majority-class baseline. ``--config.model.name=bert`` trains the post-LN BERT classifier
([CLS] pooling) from scratch with the same fields.

  python -m experiments.main --config=experiments/configs/sst2_transformer.py \
      --workdir=/tmp/seqgen/sst2_transformer --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/sst2_transformer.py:runlocal \
      --workdir=/tmp/seqgen/sst2_transformer_local --config.data.data_dir=../shared/data
"""

from seqgen_jax.train.defaults import default_config


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "classify"
  c.data.name = "sst2"
  c.data.seq_len = 50  # dev / test: every sentence whole (longest 47 words)
  c.data.train_seq_len = 32  # training phrases: 98.5% whole, less padding
  c.data.min_count = 1
  c.data.max_vocab = 0

  c.model.name = "transformer"
  c.model.num_layers = 2
  c.model.num_heads = 4
  c.model.d_model = 128
  c.model.d_ff = 256
  c.model.dropout = 0.1
  c.model.pooling = "mean"

  c.optimizer.lr = 5e-4
  c.optimizer.warmup_steps = 100
  c.optimizer.min_lr = 1e-5
  c.optimizer.weight_decay = 0.01
  c.optimizer.clip_grad_norm = 1.0

  c.train.num_steps = 600
  c.train.batch_size = 64
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 1000
  c.eval.batch_size = 128

  if arg == "runlocal":
    c.data.max_examples = 2000
    c.data.seq_len = 32
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
  elif arg:
    raise ValueError(f"unknown config argument '{arg}'; choose one of: runlocal")
  return c
