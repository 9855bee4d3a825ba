"""DDPM with a U-Net on MNIST, Fashion-MNIST or CIFAR-10 (``:dataset=``, default mnist).

Arguments: ``runlocal`` (a CPU smoke run, under a minute) or ``cpu`` (the CPU recipe of
docs/results.md), and ``dataset=mnist|fashion_mnist|cifar10``, e.g. ``:cpu,dataset=fashion_mnist``.

MNIST and Fashion-MNIST: class-conditional, a small U-Net, label dropout 0.1, classifier-free
guidance. Linear schedule (T = 1000), eps prediction, L_simple, EMA 0.9995. The sample hook draws
a DDIM-50 grid (one row per class, guidance w = 1); final_eval gives bits/dim (probability-flow
ODE on 256 test images) and, with a trained FID classifier (image_resnet.py), FID / guided
accuracy for DDIM-50 and DDPM-1000.

CIFAR-10: Ho et al. (2020)'s 35.7M-parameter U-Net, unconditional as the paper: ch 128, mult
(1, 2, 2, 2), two res blocks per level, attention at 16x16, dropout 0.1; linear schedule
T = 1000, eps prediction, L_simple, Adam lr 2e-4 with 5000 warm-up steps, batch 128, EMA 0.9999,
800k steps (the paper's recipe; on one H100 about 21+ steps/s). ``cond.kind=label`` turns it
into a class-conditional model with classifier-free guidance. Images: the JPEG copy
(``cifar10``); ``--config.data.name=cifar10_official`` reads the official binary. Its ``cpu``
recipe is class-conditional (CFG w = 1) at the MNIST CPU recipe's size.

  python -m experiments.main --config=experiments/configs/ddpm_unet.py:runlocal \
      --workdir=/tmp/seqgen/mnist_ddpm_local          # CPU smoke run, under a minute
  python -m experiments.main --config=experiments/configs/ddpm_unet.py:cpu \
      --workdir=/tmp/seqgen/mnist_ddpm_cpu            # the CPU run of docs/results.md, ~25 min
  python -m experiments.main --config=experiments/configs/ddpm_unet.py \
      --workdir=/tmp/seqgen/mnist_ddpm \
      --config.eval.fid_classifier_workdir=/path/to/fidnet/mnist   # full run + FID (10k)
  python -m experiments.main --config=experiments/configs/ddpm_unet.py:cpu,dataset=fashion_mnist \
      --workdir=/tmp/seqgen/fmnist_ddpm_cpu           # the CPU run of docs/results.md, ~25 min
  python -m experiments.main --config=experiments/configs/ddpm_unet.py:dataset=fashion_mnist \
      --workdir=/tmp/seqgen/fmnist_ddpm \
      --config.eval.fid_classifier_workdir=/path/to/fidnet/fashion_mnist   # + FID (10k)
  python -m experiments.main --config=experiments/configs/ddpm_unet.py:runlocal,dataset=cifar10 \
      --workdir=/tmp/seqgen/cifar10_ddpm_local        # CPU smoke run: a tiny U-Net
  python -m experiments.main --config=experiments/configs/ddpm_unet.py:cpu,dataset=cifar10 \
      --workdir=/tmp/seqgen/cifar10_ddpm_cpu          # the CPU grid of docs/results.md
  python -m experiments.main --config=experiments/configs/ddpm_unet.py:dataset=cifar10 \
      --workdir=/tmp/seqgen/cifar10_ddpm --config.train.compute_dtype=bfloat16   # full run
  python -m experiments.main --config=experiments/configs/ddpm_unet.py:dataset=cifar10 \
      --workdir=/tmp/seqgen/cifar10_ddpm_ft \
      --config.init.from_pretrained=/path/to/ddpm-cifar10-32   # fine-tune diffusers' weights

The last one starts from a local copy of diffusers' google/ddpm-cifar10-32 (its U-Net replaces
config.model; see docs/api.md).
"""

from experiments.configs import common
from seqgen_jax.nn.unet import ho_cifar10_config

ARGS = common.Args(flags=("runlocal", "cpu"),
                   choices={"dataset": ("mnist", "fashion_mnist", "cifar10")})


def get_config(arg: str | None = None):
  a = ARGS.parse(arg)
  if a.dataset == "cifar10":
    return _cifar10(a)
  c = common.base_config("diffusion")
  c.data.name = a.dataset
  c.model.name = "unet"
  c.model.ch = 64
  c.model.ch_mult = (1, 2, 2)
  c.model.num_res_blocks = 2
  c.model.attn_resolutions = (7,)
  c.model.dropout = 0.1
  c.model.norm_groups = 16

  c.optimizer.lr = 2e-4
  c.optimizer.schedule = "warmup_cosine"
  c.optimizer.warmup_steps = 500
  c.optimizer.min_lr = 2e-5
  c.optimizer.weight_decay = 0.0
  c.train.num_steps = 30000
  c.train.batch_size = 128
  c.train.ema_decay = 0.9995
  c.train.log_every = 100
  c.train.eval_every = 5000
  c.train.sample_every = 5000
  c.train.checkpoint_every = 5000
  c.eval.batch_size = 500

  if a.runlocal:
    c.model.ch = 16
    c.model.ch_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = (14,)
    c.model.norm_groups = 8
    c.data.max_examples = 512
    c.optimizer.warmup_steps = 10
    c.train.num_steps = 40
    c.train.batch_size = 32
    c.train.ema_decay = 0.99
    c.train.log_every = 10
    c.train.eval_every = 40
    c.train.sample_every = 0
    c.train.checkpoint_every = 40
    c.eval.batch_size = 64
    c.eval.num_batches = 2
    c.sample.per_class = 2
    c.sample.num_steps = 10
    c.eval.bpd_num_examples = 8
    c.eval.bpd_batch_size = 8
    c.eval.bpd_ode_steps = 8
    c.eval.fid_num_samples = 100
    c.eval.fid_batch_size = 50
    c.eval.fid_samplers = ("ddim-10",)
  elif a.cpu:
    # The CPU recipe of the FID numbers in docs/results.md: a 281k-parameter U-Net (ch 16, one
    # res block per level, attention at 7x7), 3,000 steps of batch 128 (6.4 epochs). On a 2-core
    # CPU it beat a DiT of the same cost per sample by far (FID 0.19 / accuracy 0.97 after
    # 1,000 steps vs 4.5 / 0.34 for a patch-4 DiT after 4,000).
    c.model.ch = 16
    c.model.num_res_blocks = 1
    c.model.norm_groups = 8
    c.model.dropout = 0.0
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.min_lr = 1e-4
    c.train.num_steps = 3000
    c.train.ema_decay = 0.999
    c.train.ema_warmup = True
    c.train.log_every = 50
    c.train.eval_every = 0
    c.train.sample_every = 0
    c.train.checkpoint_every = 500
    c.eval.fid_batch_size = 32  # x2 under guidance: XLA's CPU convolutions peak near batch 64
  return c


def _cifar10(a):
  """Ho et al.'s CIFAR-10 recipe, and its smoke / CPU versions."""
  c = common.base_config("diffusion")
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

  if a.runlocal:
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
  elif a.cpu:
    # The CPU sample grid of docs/results.md: a class-conditional (CFG w = 1) U-Net of the MNIST CPU
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
  return c
