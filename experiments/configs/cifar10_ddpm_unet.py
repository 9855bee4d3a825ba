"""DDPM on CIFAR-10 with Ho et al. (2020)'s 35.7M-parameter U-Net (unconditional, as the paper).

ch 128, mult (1, 2, 2, 2), two res blocks per level, attention at 16x16, dropout 0.1; linear
schedule T = 1000, eps prediction, L_simple, Adam lr 2e-4 with 5000 warm-up steps, batch 128,
EMA 0.9999, 800k steps (the paper's recipe; on one H100 about 21+ steps/s). ``cond.kind=label``
turns it into a class-conditional model with classifier-free guidance. Images: the JPEG copy
(``cifar10``); ``--config.data.name=cifar10_official`` reads the official binary.

  python -m experiments.main --config=experiments/configs/cifar10_ddpm_unet.py:runlocal \
      --workdir=/tmp/seqgen/cifar10_ddpm_local        # CPU smoke run: a tiny U-Net
  python -m experiments.main --config=experiments/configs/cifar10_ddpm_unet.py:cpu \
      --workdir=/tmp/seqgen/cifar10_ddpm_cpu          # the README's CPU grid (class-conditional)
  python -m experiments.main --config=experiments/configs/cifar10_ddpm_unet.py \
      --workdir=/tmp/seqgen/cifar10_ddpm --config.train.compute_dtype=bfloat16   # full run
"""

from experiments.configs.mnist_ddpm_unet import diffusion_defaults
from seqgen_jax.nn.unet import ho_cifar10_config
from seqgen_jax.train.defaults import default_config


def get_config(arg: str | None = None):
  c = diffusion_defaults(default_config())
  c.data.name = "cifar10"
  c.cond.kind = "none"
  c.cond.guidance = 0.0
  c.model = ho_cifar10_config()

  c.optimizer.name = "adam"
  c.optimizer.lr = 2e-4
  c.optimizer.schedule = "warmup_cosine"
  c.optimizer.warmup_steps = 5000
  c.optimizer.min_lr = 2e-4  # Ho et al. keep the rate constant after warm-up
  c.optimizer.weight_decay = 0.0
  c.train.num_steps = 800_000
  c.train.batch_size = 128
  c.train.ema_decay = 0.9999
  c.train.log_every = 500
  c.train.eval_every = 20_000
  c.train.sample_every = 20_000
  c.train.checkpoint_every = 10_000
  c.eval.batch_size = 500
  c.eval.num_batches = 4
  c.eval.bpd_num_examples = 1000
  c.eval.bpd_batch_size = 100

  if arg == "runlocal":
    c.model.ch = 32
    c.model.ch_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = (16,)
    c.model.dropout = 0.0
    c.model.norm_groups = 8
    c.data.max_examples = 512
    c.optimizer.warmup_steps = 10
    c.optimizer.min_lr = 2e-5
    c.train.num_steps = 40
    c.train.batch_size = 32
    c.train.ema_decay = 0.99
    c.train.log_every = 10
    c.train.eval_every = 40
    c.train.sample_every = 0
    c.train.checkpoint_every = 40
    c.eval.batch_size = 64
    c.eval.num_batches = 1
    c.sample.per_class = 4
    c.sample.num_steps = 10
    c.eval.bpd_num_examples = 0
  elif arg == "cpu":
    # The README's CPU sample grid: a class-conditional (CFG w = 1) U-Net of the MNIST CPU
    # recipe's size (ch 16, mult 1-2-2, attention at 8x8), 3,000 steps of batch 64 (under four
    # epochs): colour layouts per class, not yet objects.
    c.cond = dict(kind="label", p_uncond=0.1, guidance=1.0)
    c.model.ch = 16
    c.model.ch_mult = (1, 2, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = (8,)
    c.model.dropout = 0.0
    c.model.norm_groups = 8
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.min_lr = 1e-4
    c.train.num_steps = 3000
    c.train.batch_size = 64
    c.train.ema_decay = 0.999
    c.train.ema_warmup = True
    c.train.log_every = 50
    c.train.eval_every = 0
    c.train.sample_every = 0
    c.train.checkpoint_every = 500
    c.eval.bpd_num_examples = 0
  elif arg:
    raise ValueError(f"unknown config argument '{arg}'; choose one of: runlocal, cpu")
  return c
