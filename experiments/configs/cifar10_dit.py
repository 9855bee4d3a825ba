"""Class-conditional DiT on CIFAR-10 pixels (32x32x3), classifier-free guidance.

The default is DiT-S/2 (12 blocks, hidden 384: 256 tokens per image) with v-prediction on the
cosine schedule and min-SNR-5 weighting, for an accelerator. ``:cpu`` is the small recipe behind
the README's CPU sample grid: patch 4 (64 tokens), hidden 128, depth 4 (1.3M parameters), the
linear schedule with eps prediction, 800 steps of batch 64 (under an epoch: the grid shows
colour layouts, not objects).

  python -m experiments.main --config=experiments/configs/cifar10_dit.py:cpu \
      --workdir=/tmp/seqgen/cifar10_dit_cpu           # ~15 min on 2 CPU cores
  python -m experiments.main --config=experiments/configs/cifar10_dit.py \
      --workdir=/tmp/seqgen/cifar10_dit
"""

from experiments.configs import mnist_dit


def get_config(arg: str | None = None):
  if arg not in (None, "", "runlocal", "cpu"):
    raise ValueError(f"unknown config argument '{arg}'; choose one of: runlocal, cpu")
  c = mnist_dit.get_config(arg)
  c.data.name = "cifar10"
  if not arg:
    c.model = dict(name="dit", size="DiT-S/2")
    c.train.batch_size = 128
    c.train.num_steps = 400_000
    c.train.ema_decay = 0.9999
  elif arg == "cpu":
    c.train.batch_size = 64
    c.train.num_steps = 800
    c.train.checkpoint_every = 200
    c.eval.bpd_num_examples = 0
    c.sample.per_class = 8
  return c
