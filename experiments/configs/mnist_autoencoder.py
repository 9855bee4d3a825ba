"""KL autoencoder on MNIST for latent diffusion: 28x28x1 -> 7x7x4 latents (f = 4).

LDM's architecture (nn/autoencoder.py), L1 reconstruction + 1e-4 KL (no perceptual / GAN
terms). The finished run is the ``latent.autoencoder_workdir`` of mnist_latent_dit.py.

Arguments: ``runlocal`` (a CPU smoke run).

  python -m experiments.main --config=experiments/configs/mnist_autoencoder.py:runlocal \
      --workdir=/tmp/seqgen/mnist_ae_local           # CPU smoke run, under a minute
  python -m experiments.main --config=experiments/configs/mnist_autoencoder.py \
      --workdir=/tmp/seqgen/mnist_ae
"""

from experiments.configs import common

ARGS = common.Args(flags=("runlocal",))


def get_config(arg: str | None = None):
  a = ARGS.parse(arg)
  c = common.base_config("autoencoder")
  c.data.name = "mnist"
  c.model.name = "autoencoder_kl"
  c.model.ch = 32
  c.model.ch_mult = (1, 2, 2)
  c.model.num_res_blocks = 1
  c.model.attn_resolutions = ()
  c.model.z_channels = 4
  c.model.norm_groups = 8
  c.autoencoder = dict(kl_weight=1e-4, rec_loss="l1")

  c.optimizer.lr = 1e-3
  c.optimizer.warmup_steps = 200
  c.optimizer.min_lr = 1e-4
  c.optimizer.weight_decay = 0.0
  c.train.num_steps = 5000
  c.train.batch_size = 64
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.sample_every = 1000
  c.train.checkpoint_every = 1000
  c.eval.batch_size = 500
  c.eval.num_batches = 0  # the whole test split

  if a.runlocal:
    c.model.ch = 16
    c.data.max_examples = 512
    c.optimizer.warmup_steps = 10
    c.train.num_steps = 50
    c.train.batch_size = 32
    c.train.log_every = 10
    c.train.eval_every = 50
    c.train.sample_every = 0
    c.train.checkpoint_every = 50
    c.eval.batch_size = 64
    c.eval.num_batches = 2
  return c
