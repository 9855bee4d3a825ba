"""ViT on MNIST: image classification with the vit model (nn/vit.py).

A small ViT sized for the 2-core CPU of the README numbers: 7x7 patches (16 tokens + a class
token), 4 pre-LN layers, width 64, 4 heads, MLP 128 (about 0.14M parameters); no augmentation
(the run is under two epochs); AdamW with warm-up + cosine decay. On an accelerator use the ViT
paper's widths and train for many epochs.

  python -m experiments.main --config=experiments/configs/mnist_vit.py:runlocal \
      --workdir=/tmp/seqgen/mnist_vit_local  # CPU smoke run, < 1 minute
  python -m experiments.main --config=experiments/configs/mnist_vit.py \
      --workdir=/work/runs/imgcls/mnist_vit  # the README run (CPU, about 12 minutes)
"""

from seqgen_jax.train.defaults import default_config


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "image_classify"
  c.data.name = "mnist"
  c.data.augment = "none"
  c.data.crop_padding = 0
  c.data.max_examples = 0  # 0: the whole dataset

  c.model.name = "vit"
  c.model.patch_size = 7
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.d_model = 64
  c.model.d_ff = 128
  c.model.pooling = "cls"
  c.model.dropout = 0.0

  c.optimizer.lr = 2e-3
  c.optimizer.warmup_steps = 40
  c.optimizer.min_lr = 2e-5
  c.optimizer.weight_decay = 0.05

  c.train.num_steps = 700
  c.train.batch_size = 128
  c.train.log_every = 50
  c.train.eval_every = 350
  c.train.checkpoint_every = 350
  c.eval.batch_size = 500
  c.eval.num_batches = 4  # periodic eval: 2,000 test images; final_eval: all 10,000

  if arg == "runlocal":
    c.data.max_examples = 1024
    c.model.num_layers = 2
    c.model.d_model = 32
    c.model.d_ff = 64
    c.train.num_steps = 40
    c.train.batch_size = 32
    c.train.log_every = 10
    c.train.eval_every = 20
    c.train.checkpoint_every = 20
    c.optimizer.warmup_steps = 5
    c.eval.batch_size = 64
    c.eval.num_batches = 2
  elif arg:
    raise ValueError(f"unknown config argument '{arg}'; choose one of: runlocal")
  return c
