"""Class-conditional DiT on MNIST pixels (patch 2 on 28x28: 196 tokens), CFG as the U-Net run.

A DiT-S-width model at depth 6 (hidden 384, 6 heads); ``--config.model.size=DiT-S/2`` gives the
paper's DiT-S/2 (12 blocks). v-prediction with the cosine schedule and min-SNR-5 weighting.

  python -m experiments.main --config=experiments/configs/mnist_dit.py:runlocal \
      --workdir=/tmp/seqgen/mnist_dit_local           # CPU smoke run
  python -m experiments.main --config=experiments/configs/mnist_dit.py \
      --workdir=/tmp/seqgen/mnist_dit
"""

from experiments.configs import mnist_ddpm_unet


def get_config(arg: str | None = None):
  c = mnist_ddpm_unet.get_config(arg)
  c.diffusion.schedule = "cosine"
  c.diffusion.prediction = "v"
  c.diffusion.weighting = "min_snr"
  c.eval.bpd_num_examples = 0  # the PF-ODE bits/dim is wired for the linear schedule only
  c.model = dict(name="dit", patch_size=2, hidden_size=384, depth=6, num_heads=6)
  c.optimizer.lr = 1e-4
  c.optimizer.weight_decay = 0.0
  if arg == "runlocal":
    c.model = dict(name="dit", patch_size=4, hidden_size=64, depth=2, num_heads=4)
  return c
