"""Cascade stage 2: 14x14 -> 28x28 super-resolution DDPM on MNIST, and the cascade sampler.

The U-Net gets the 14x14 image (area-downsampled from the 28x28 target), bicubic-upsampled and
concatenated to x_t, noised to a random level s < 200 of the schedule with s embedded as a
second time input (noise-conditioning augmentation, Ho et al. 2022); sampling uses s = 50.
With ``cascade.base_workdir`` (a finished mnist_cascade_base.py run) the sample hook and FID
run the whole cascade: base (14x14 from noise) -> SR (28x28).

Arguments: ``runlocal`` (a CPU smoke run).

  python -m experiments.main --config=experiments/configs/mnist_sr.py \
      --workdir=/tmp/seqgen/mnist_sr --config.cascade.base_workdir=/tmp/seqgen/mnist_base14
  python -m experiments.main --config=experiments/configs/mnist_sr.py:runlocal \
      --workdir=/tmp/seqgen/mnist_sr_local \
      --config.cascade.base_workdir=/tmp/seqgen/mnist_base14_local   # CPU smoke run
"""

from experiments.configs import common, ddpm_unet

ARGS = common.Args(flags=("runlocal",))


def get_config(arg: str | None = None):
  a = ARGS.parse(arg)
  c = ddpm_unet.get_config("runlocal" if a.runlocal else "")
  c.sr.low_res_size = 14
  c.sr.aug_max_t = 200
  c.sr.sample_aug_t = 50
  c.eval.bpd_num_examples = 0  # a conditional model: bits/dim given the low-res image
  c.sample.per_class = 4
  return c
