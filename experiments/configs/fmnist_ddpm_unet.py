"""Class-conditional DDPM on Fashion-MNIST: the MNIST U-Net recipe (mnist_ddpm_unet.py).

  python -m experiments.main --config=experiments/configs/fmnist_ddpm_unet.py:runlocal \
      --workdir=/tmp/seqgen/fmnist_ddpm_local         # CPU smoke run, under a minute
  python -m experiments.main --config=experiments/configs/fmnist_ddpm_unet.py:cpu \
      --workdir=/tmp/seqgen/fmnist_ddpm_cpu           # the README's CPU run, ~25 min
  python -m experiments.main --config=experiments/configs/fmnist_ddpm_unet.py \
      --workdir=/tmp/seqgen/fmnist_ddpm \
      --config.eval.fid_classifier_workdir=/path/to/fidnet/fashion_mnist   # + FID (10k)
"""

from experiments.configs import mnist_ddpm_unet


def get_config(arg: str | None = None):
  c = mnist_ddpm_unet.get_config(arg)
  c.data.name = "fashion_mnist"
  return c
