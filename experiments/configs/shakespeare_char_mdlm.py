"""MDLM (masked discrete diffusion) on Tiny Shakespeare characters, GPT's backbone made
bidirectional: the diffusion counterpart of shakespeare_char.py's GPT.

Arguments: ``runlocal`` (a CPU smoke run).

Same sizes and optimiser as shakespeare_char.py (6 layers, 6 heads, width 384, context 256,
nanoGPT's AdamW settings); the network sees one extra token (the mask). Eval reports the NELBO
bound in bits per character (4 stratified samples of t per sequence) and logs a sample drawn by
64 steps of iterative unmasking.

  python -m experiments.main --config=experiments/configs/shakespeare_char_mdlm.py \
      --workdir=/tmp/seqgen/shakespeare_mdlm --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/shakespeare_char_mdlm.py:runlocal \
      --workdir=/tmp/seqgen/shakespeare_mdlm_local --config.data.data_dir=../shared/data
"""

from experiments.configs import common, shakespeare_char

ARGS = common.Args(flags=("runlocal",))


def get_config(arg: str | None = None):
  a = ARGS.parse(arg)
  c = common.mdlm_defaults(shakespeare_char.get_config("runlocal" if a.runlocal else ""))
  c.model.name = "gpt_bidir"
  c.mdlm = dict(eval_t_samples=4, sample_steps=64)
  c.sample.temperature = 1.0
  return c
