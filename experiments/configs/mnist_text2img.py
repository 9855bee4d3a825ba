"""Text-to-image on MNIST: captions of the labels ("a handwritten seven", "the digit two", ...)
through a small Transformer text encoder and cross-attention in the U-Net; the caption is
dropped to [BOS] with p = 0.1 and sampling is guided (w = 2). The sample hook draws one row per
digit from the caption "a handwritten <digit>" and a grid for ``sample.prompts``.

Arguments: ``runlocal`` (a CPU smoke run).

  python -m experiments.main --config=experiments/configs/mnist_text2img.py:runlocal \
      --workdir=/tmp/seqgen/mnist_t2i_local           # CPU smoke run
  python -m experiments.main --config=experiments/configs/mnist_text2img.py \
      --workdir=/tmp/seqgen/mnist_t2i
"""

from experiments.configs import common, ddpm_unet

ARGS = common.Args(flags=("runlocal",))


def get_config(arg: str | None = None):
  a = ARGS.parse(arg)
  c = ddpm_unet.get_config("runlocal" if a.runlocal else "")
  c.cond.kind = "text"
  c.cond.guidance = 2.0
  c.model.attn_resolutions = (14, 7)  # cross-attention sits at every attention site
  c.model.text_width = 128
  c.model.text_layers = 2
  c.model.text_heads = 4
  c.sample.prompts = ("a handwritten seven", "the digit three", "a drawing of the number zero")
  c.eval.bpd_num_examples = 0
  if a.runlocal:
    c.model.attn_resolutions = (14,)
    c.model.text_width = 32
    c.model.text_layers = 1
    c.model.text_heads = 2
  return c
