"""Cascade stage 1: class-conditional DDPM on 14x14 MNIST (area-downsampled), for mnist_sr.py.

Arguments: ``runlocal`` (a CPU smoke run).

  python -m experiments.main --config=experiments/configs/mnist_cascade_base.py \
      --workdir=/tmp/seqgen/mnist_base14
  python -m experiments.main --config=experiments/configs/mnist_cascade_base.py:runlocal \
      --workdir=/tmp/seqgen/mnist_base14_local        # CPU smoke run
"""

from experiments.configs import common, ddpm_unet

ARGS = common.Args(flags=("runlocal",))


def get_config(arg: str | None = None):
  a = ARGS.parse(arg)
  c = ddpm_unet.get_config("runlocal" if a.runlocal else "")
  c.data.image_size = 14
  c.model.ch_mult = (1, 2)
  c.model.attn_resolutions = (7,)
  c.eval.bpd_num_examples = 0  # bits/dim of 14x14 area averages is not MNIST's
  return c
