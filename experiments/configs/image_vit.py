"""ViT image classifier on MNIST, Fashion-MNIST or CIFAR-10 (the offline JPEG copy).

Arguments: ``runlocal`` (a CPU smoke run, < 1 minute) and ``dataset=mnist|fashion_mnist|cifar10``
(default mnist), e.g. ``:runlocal,dataset=cifar10``.

A small ViT sized for the 2-core CPU of the numbers in docs/results.md: 4 pre-LN layers, width
64, 4 heads, MLP 128 (about 0.14M parameters), a class token; AdamW with warm-up + cosine decay.
Per dataset:

* MNIST: 7x7 patches (16 tokens), no augmentation (the run is under two epochs), 700 steps;
* Fashion-MNIST: 4x4 patches (49 tokens), random horizontal flips, 300 steps;
* CIFAR-10: 4x4 patches (64 tokens), the standard CIFAR augmentation (4-pixel zero padding,
  random crop, horizontal flip), 240 steps.

On an accelerator use the ViT paper's widths and train for many epochs.

  python -m experiments.main --config=experiments/configs/image_vit.py:runlocal \
      --workdir=/tmp/seqgen/mnist_vit_local  # CPU smoke run, < 1 minute
  python -m experiments.main --config=experiments/configs/image_vit.py:dataset=mnist \
      --workdir=/work/runs/imgcls/mnist_vit  # the run in docs/results.md (CPU, about 12 minutes)
  python -m experiments.main --config=experiments/configs/image_vit.py:dataset=fashion_mnist \
      --workdir=/work/runs/imgcls/fmnist_vit  # the run in docs/results.md (CPU, about 12 minutes)
  python -m experiments.main --config=experiments/configs/image_vit.py:dataset=cifar10 \
      --workdir=/work/runs/imgcls/cifar10_vit  # the run in docs/results.md (CPU, about 12 minutes)
"""

from experiments.configs import common

ARGS = common.Args(flags=("runlocal",),
                   choices={"dataset": ("mnist", "fashion_mnist", "cifar10")})

# What differs between the datasets: augmentation, patch size, and the length of the run.
DATASETS = {
    "mnist": dict(augment="none", crop_padding=0, patch_size=7, num_steps=700, eval_every=350),
    "fashion_mnist": dict(augment="flip", crop_padding=0, patch_size=4, num_steps=300,
                          eval_every=150),
    "cifar10": dict(augment="crop_flip", crop_padding=4, patch_size=4, num_steps=240,
                    eval_every=120),
}


def get_config(arg: str | None = None):
  a = ARGS.parse(arg)
  d = DATASETS[a.dataset]
  c = common.base_config("image_classify")
  c.data.name = a.dataset
  c.data.augment = d["augment"]
  c.data.crop_padding = d["crop_padding"]
  c.data.max_examples = 0  # 0: the whole dataset

  c.model.name = "vit"
  c.model.patch_size = d["patch_size"]
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.d_model = 64
  c.model.d_ff = 128
  c.model.pooling = "cls"
  c.model.dropout = 0.0

  c.optimizer.lr = 2e-3
  c.optimizer.warmup_steps = 40
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
    c.model.num_layers = 2
    c.model.d_model = 32
    c.model.d_ff = 64
    c.train.num_steps = 40
    c.train.batch_size = 32
    c.train.log_every = 10
    c.train.eval_every = 20
    c.train.checkpoint_every = 20
    c.optimizer.warmup_steps = 5
    c.eval.batch_size = 64
    c.eval.num_batches = 2
  return c
