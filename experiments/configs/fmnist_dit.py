"""Class-conditional DiT on Fashion-MNIST: the MNIST DiT recipes (mnist_dit.py), same arguments.

  python -m experiments.main --config=experiments/configs/fmnist_dit.py:cpu \
      --workdir=/tmp/seqgen/fmnist_dit_cpu            # ~15 min on 2 CPU cores
"""

from experiments.configs import mnist_dit


def get_config(arg: str | None = None):
  c = mnist_dit.get_config(arg)
  c.data.name = "fashion_mnist"
  return c
