"""BERT masked-LM pre-training on the SST-2 training text (no labels), for sst2_bert_finetune.py.

Corpus: the 67,349 SST-2 training phrases (``data.corpus="sst2"``; "sst2+rt_polarity" adds the
rt-polarity snippets, which contain SST-2's dev / test sentences: see seqgen_jax/tasks/mlm.py).
Input ``[CLS] words [SEP]`` cut at 24 tokens (93% of the training phrases fit whole); the encoder
has 50 positions so that fine-tuning can read whole dev sentences. Vocabulary: the 5,000 most
frequent lower-cased words plus the specials and <mask>. Masking: 15% of the real words, 80%
[MASK] / 10% random word / 10% unchanged; loss on those positions only. BERT-Tiny's shape (Turc
et al. 2019): post-LN, 2 layers, width 128, 2 heads, MLP 512, dropout 0.1 (1.05M parameters,
0.64M of them the tied word embeddings). AdamW lr 7e-4 (warm-up 60, cosine to 1e-5), weight
decay 0.01, batch 64, 600 steps: a CPU-sized budget (0.6 epochs), far from a converged BERT.
Eval: masked-token accuracy and loss on the 872 SST-2 dev sentences (cut at 24 tokens, fixed
masks).

Arguments: ``runlocal`` (a CPU smoke run).

  python -m experiments.main --config=experiments/configs/sst2_bert_mlm.py \
      --workdir=/tmp/seqgen/sst2_bert_mlm --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/sst2_bert_mlm.py:runlocal \
      --workdir=/tmp/seqgen/sst2_bert_mlm_local --config.data.data_dir=../shared/data

Then fine-tune: experiments/configs/sst2_bert_finetune.py (init.from_workdir = this workdir).
"""

import ml_collections

from experiments.configs import common

ARGS = common.Args(flags=("runlocal",))


def bert_fields(runlocal: bool) -> ml_collections.ConfigDict:
  """The encoder fields shared by pre-training and fine-tuning (they must match)."""
  m = ml_collections.ConfigDict()
  m.name = "bert"
  m.num_layers = 1 if runlocal else 2
  m.num_heads = 2
  m.d_model = 32 if runlocal else 128
  m.d_ff = 64 if runlocal else 512
  m.dropout = 0.1
  m.attention_dropout = 0.1
  return m


def get_config(arg: str | None = None):
  runlocal = ARGS.parse(arg).runlocal
  c = common.base_config("mlm")
  c.data.name = "sst2"
  c.data.corpus = "sst2"
  c.data.seq_len = 24
  c.data.max_len = 50  # encoder positions: the fine-tuning length
  c.data.min_count = 1
  c.data.max_vocab = 5_000
  c.data.mask_rate = 0.15
  c.model = bert_fields(runlocal)

  c.optimizer.lr = 7e-4
  c.optimizer.warmup_steps = 60
  c.optimizer.min_lr = 1e-5
  c.optimizer.weight_decay = 0.01
  c.optimizer.clip_grad_norm = 1.0

  c.train.num_steps = 600
  c.train.batch_size = 64
  c.train.log_every = 50
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  c.eval.batch_size = 128

  if runlocal:
    c.data.max_examples = 2000
    c.data.seq_len = 16
    c.data.max_len = 32
    c.data.max_vocab = 1000
    c.train.num_steps = 50
    c.train.batch_size = 32
    c.train.log_every = 25
    c.train.eval_every = 25
    c.train.checkpoint_every = 25
    c.optimizer.warmup_steps = 10
    c.eval.batch_size = 64
  return c
