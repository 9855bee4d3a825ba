"""Latent diffusion on MNIST: a DiT on the 7x7x4 latents of mnist_autoencoder.py (patch 1).

Train the autoencoder first; the denoiser then learns z * scale (LDM's scale factor, 1 / std of
the training latents) and samples are decoded to pixels for the grid and FID.

Arguments: ``runlocal`` (a CPU smoke run).

  python -m experiments.main --config=experiments/configs/mnist_autoencoder.py \
      --workdir=/tmp/seqgen/mnist_ae
  python -m experiments.main --config=experiments/configs/mnist_latent_dit.py \
      --workdir=/tmp/seqgen/mnist_ldm --config.latent.autoencoder_workdir=/tmp/seqgen/mnist_ae
  # smoke: the same two commands with :runlocal on both configs
"""

from experiments.configs import common, ddpm_unet

ARGS = common.Args(flags=("runlocal",))


def get_config(arg: str | None = None):
  a = ARGS.parse(arg)
  c = ddpm_unet.get_config("runlocal" if a.runlocal else "")
  c.latent.autoencoder_workdir = "/tmp/seqgen/mnist_ae"
  c.diffusion.schedule = "linear"
  c.eval.bpd_num_examples = 0  # likelihood of latents is not bits/dim of images
  c.model = dict(name="dit", patch_size=1, hidden_size=256, depth=6, num_heads=4)
  c.optimizer.lr = 3e-4
  if a.runlocal:
    c.latent.autoencoder_workdir = "/tmp/seqgen/mnist_ae_local"
    c.model = dict(name="dit", patch_size=1, hidden_size=64, depth=2, num_heads=4)
  return c
