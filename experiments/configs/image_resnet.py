"""Pre-activation GroupNorm ResNet on MNIST, Fashion-MNIST or CIFAR-10: the FID feature network
for diffusion on that dataset.

Arguments: ``runlocal`` (a CPU smoke run, < 1 minute) and ``dataset=mnist|fashion_mnist|cifar10``
(default mnist), e.g. ``:runlocal,dataset=fashion_mnist``.

ResNet-8 (width 16, one pre-activation block per stage, 3 stages: at 28, 14 and 7 pixels with
77,562 parameters on the 28x28 datasets, at 32, 16 and 8 with 77,850 on CIFAR-10; features
D = 64), AdamW with warm-up + cosine decay. Augmentation: MNIST random crops after 2-pixel zero
padding; Fashion-MNIST the same plus horizontal flips; CIFAR-10 the standard 4-pixel padding,
random crop and horizontal flip. Sized for the 2-core CPU of the numbers in docs/results.md
(MNIST 1,000 steps, Fashion-MNIST 1,500, CIFAR-10 240); on an accelerator raise width,
blocks_per_stage and num_steps. Its penultimate features (``ResNet.features``) are the FID
features of seqgen_jax/eval/fid.py.

  python -m experiments.main --config=experiments/configs/image_resnet.py:runlocal \
      --workdir=/tmp/seqgen/mnist_resnet_local  # CPU smoke run, < 1 minute
  python -m experiments.main --config=experiments/configs/image_resnet.py:dataset=mnist \
      --workdir=/work/runs/fidnet/mnist  # docs/results.md (2-core CPU, < 3 minutes)
  python -m experiments.main --config=experiments/configs/image_resnet.py:dataset=fashion_mnist \
      --workdir=/work/runs/fidnet/fashion_mnist  # docs/results.md (2-core CPU, ~4 minutes)
  python -m experiments.main --config=experiments/configs/image_resnet.py:dataset=cifar10 \
      --workdir=/work/runs/fidnet/cifar10  # docs/results.md (CPU, ~12 minutes)
"""

from experiments.configs import common

ARGS = common.Args(flags=("runlocal",),
                   choices={"dataset": ("mnist", "fashion_mnist", "cifar10")})

# What differs between the datasets: augmentation and the length of the run.
DATASETS = {
    "mnist": dict(augment="crop", crop_padding=2, num_steps=1000, eval_every=500),
    "fashion_mnist": dict(augment="crop_flip", crop_padding=2, num_steps=1500, eval_every=500),
    "cifar10": dict(augment="crop_flip", crop_padding=4, num_steps=240, eval_every=120),
}


def get_config(arg: str | None = None):
  a = ARGS.parse(arg)
  d = DATASETS[a.dataset]
  c = common.base_config("image_classify")
  c.data.name = a.dataset
  c.data.augment = d["augment"]
  c.data.crop_padding = d["crop_padding"]
  c.data.max_examples = 0  # 0: the whole dataset

  c.model.name = "resnet"
  c.model.width = 16
  c.model.blocks_per_stage = 1
  c.model.num_stages = 3

  c.optimizer.lr = 3e-3
  c.optimizer.warmup_steps = 30
  c.optimizer.min_lr = 2e-5
  c.optimizer.weight_decay = 0.05

  c.train.num_steps = d["num_steps"]
  c.train.batch_size = 128
  c.train.log_every = 50
  c.train.eval_every = d["eval_every"]
  c.train.checkpoint_every = d["eval_every"]
  c.eval.batch_size = 500
  c.eval.num_batches = 4  # periodic eval: 2,000 test images; final_eval: all 10,000

  if a.runlocal:
    c.data.max_examples = 1024
    c.model.width = 8
    c.train.num_steps = 40
    c.train.batch_size = 32
    c.train.log_every = 10
    c.train.eval_every = 20
    c.train.checkpoint_every = 20
    c.optimizer.warmup_steps = 5
    c.eval.batch_size = 64
    c.eval.num_batches = 2
  return c
