"""Class-conditional DiT on MNIST, Fashion-MNIST or CIFAR-10 pixels, classifier-free guidance as
the U-Net run (ddpm_unet.py).

Arguments: ``runlocal`` (a CPU smoke run) or ``cpu`` (a small DiT for a 2-core CPU), and
``dataset=mnist|fashion_mnist|cifar10`` (default mnist), e.g. ``:cpu,dataset=cifar10``.

MNIST / Fashion-MNIST (28x28): patch 2 (196 tokens), a DiT-S-width model at depth 6 (hidden
384, 6 heads); ``--config.model.size=DiT-S/2`` gives the paper's DiT-S/2 (12 blocks).
v-prediction with the cosine schedule and min-SNR-5 weighting. CIFAR-10 (32x32x3): DiT-S/2
(12 blocks, hidden 384: 256 tokens per image), batch 128, 400k steps, EMA 0.9999, for an
accelerator.

``cpu``: patch 4 (49 tokens on 28x28, 64 on 32x32), hidden 128, depth 4 (1.3M parameters; about
3x the samples per second of the CPU U-Net, since XLA's CPU matmuls run far above its
convolutions), the linear schedule with eps prediction (so the PF-ODE bits/dim applies), 1,500
steps of batch 128 (CIFAR-10: 800 steps of batch 64, under an epoch: the grid shows colour
layouts, not objects). Measured, it is a poor MNIST model at this budget: after 4,000 steps,
DDIM-50 FID 4.54 (2,000 samples, own features) and guided accuracy 0.34, where the U-Net of
``ddpm_unet.py:cpu`` reached 0.19 / 0.97 after 1,000 steps (docs/results.md); the FID
numbers there therefore come from the U-Net.

  python -m experiments.main --config=experiments/configs/dit.py:runlocal \
      --workdir=/tmp/seqgen/mnist_dit_local           # CPU smoke run
  python -m experiments.main --config=experiments/configs/dit.py:cpu \
      --workdir=/tmp/seqgen/mnist_dit_cpu             # ~15 min on 2 CPU cores
  python -m experiments.main --config=experiments/configs/dit.py \
      --workdir=/tmp/seqgen/mnist_dit
  python -m experiments.main --config=experiments/configs/dit.py:cpu,dataset=fashion_mnist \
      --workdir=/tmp/seqgen/fmnist_dit_cpu            # ~15 min on 2 CPU cores
  python -m experiments.main --config=experiments/configs/dit.py:cpu,dataset=cifar10 \
      --workdir=/tmp/seqgen/cifar10_dit_cpu           # ~15 min on 2 CPU cores
  python -m experiments.main --config=experiments/configs/dit.py:dataset=cifar10 \
      --workdir=/tmp/seqgen/cifar10_dit
"""

from experiments.configs import common, ddpm_unet

ARGS = common.Args(flags=("runlocal", "cpu"),
                   choices={"dataset": ("mnist", "fashion_mnist", "cifar10")})


def get_config(arg: str | None = None):
  a = ARGS.parse(arg)
  c = ddpm_unet.get_config("runlocal" if a.runlocal else "")  # the MNIST U-Net's training
  c.data.name = a.dataset
  c.diffusion.schedule = "cosine"
  c.diffusion.prediction = "v"
  c.diffusion.weighting = "min_snr"
  c.eval.bpd_num_examples = 0  # the PF-ODE bits/dim is wired for the linear schedule only
  c.model = dict(name="dit", patch_size=2, hidden_size=384, depth=6, num_heads=6)
  c.optimizer.lr = 1e-4
  c.optimizer.weight_decay = 0.0
  if a.runlocal:
    c.model = dict(name="dit", patch_size=4, hidden_size=64, depth=2, num_heads=4)
  elif a.cpu:
    c.model = dict(name="dit", patch_size=4, hidden_size=128, depth=4, num_heads=4)
    c.diffusion.schedule = "linear"
    c.diffusion.prediction = "eps"
    c.diffusion.weighting = "simple"
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.min_lr = 1e-4
    c.train.num_steps = 1500
    c.train.ema_decay = 0.998
    c.train.ema_warmup = True  # 1,500 steps: without it the EMA keeps 5% of the init
    c.train.log_every = 50
    c.train.eval_every = 0
    c.train.sample_every = 0
    c.train.checkpoint_every = 250
    c.eval.bpd_num_examples = 64
    c.eval.bpd_batch_size = 64
  if a.dataset == "cifar10":
    if a.cpu:
      c.train.batch_size = 64
      c.train.num_steps = 800
      c.train.checkpoint_every = 200
      c.eval.bpd_num_examples = 0
      c.sample.per_class = 8
    elif not a.runlocal:
      c.model = dict(name="dit", size="DiT-S/2")
      c.train.batch_size = 128
      c.train.num_steps = 400_000
      c.train.ema_decay = 0.9999
  return c
