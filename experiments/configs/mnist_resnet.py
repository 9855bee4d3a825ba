"""Pre-activation GroupNorm ResNet on MNIST: the FID feature network for MNIST diffusion.

ResNet-8 (width 16, one pre-activation block per stage, 3 stages at 28, 14 and 7 pixels;
77,562 parameters; features D = 64), random crops after 2-pixel zero padding, AdamW with warm-up +
cosine decay. Sized for the 2-core CPU of the README numbers; on an accelerator raise width,
blocks_per_stage and num_steps. Its penultimate features (``ResNet.features``) are the FID
features of seqgen_jax/eval/fid.py.

  python -m experiments.main --config=experiments/configs/mnist_resnet.py:runlocal \
      --workdir=/tmp/seqgen/mnist_resnet_local  # CPU smoke run, < 1 minute
  python -m experiments.main --config=experiments/configs/mnist_resnet.py \
      --workdir=/work/runs/fidnet/mnist  # the README run (2-core CPU, under 3 minutes)
"""

from seqgen_jax.train.defaults import default_config


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "image_classify"
  c.data.name = "mnist"
  c.data.augment = "crop"
  c.data.crop_padding = 2
  c.data.max_examples = 0  # 0: the whole dataset

  c.model.name = "resnet"
  c.model.width = 16
  c.model.blocks_per_stage = 1
  c.model.num_stages = 3

  c.optimizer.lr = 3e-3
  c.optimizer.warmup_steps = 30
  c.optimizer.min_lr = 2e-5
  c.optimizer.weight_decay = 0.05

  c.train.num_steps = 1000
  c.train.batch_size = 128
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.eval.batch_size = 500
  c.eval.num_batches = 4  # periodic eval: 2,000 test images; final_eval: all 10,000

  if arg == "runlocal":
    c.data.max_examples = 1024
    c.model.width = 8
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
