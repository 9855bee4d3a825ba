"""Fine-tune the BERT of sst2_bert_mlm.py on SST-2 classification ([CLS] pooler + linear head).

``init.from_workdir`` is the pre-training run's workdir: its latest checkpoint's params (params
only) give the encoder (``with_encoder_from``) and its tokenizer.json the vocabulary; the pooler
and head start fresh. The encoder fields come from sst2_bert_mlm.bert_fields (they must match;
a mismatch is a one-line error naming the parameter). AdamW lr 2e-4 (warm-up 100, linear decay),
weight decay 0.01, dropout 0.1, batch 64, 1,000 steps (0.95 epochs; training batches cut at 32
tokens, eval at 50). Eval: accuracy over the
whole dev split; final_metrics.json also has test accuracy and the majority-class baseline.
``--config.init.from_workdir=''`` trains the same BERT from scratch (the comparison);
``--config.init.hf_checkpoint=DIR`` starts from a local Hugging Face BERT instead (its own
config and vocab.txt).

Arguments: ``runlocal`` (a CPU smoke run).

  python -m experiments.main --config=experiments/configs/sst2_bert_mlm.py \
      --workdir=/tmp/seqgen/sst2_bert_mlm --config.data.data_dir=../shared/data
  python -m experiments.main --config=experiments/configs/sst2_bert_finetune.py \
      --workdir=/tmp/seqgen/sst2_bert_finetune --config.data.data_dir=../shared/data \
      --config.init.from_workdir=/tmp/seqgen/sst2_bert_mlm
  python -m experiments.main --config=experiments/configs/sst2_bert_finetune.py:runlocal \
      --workdir=/tmp/seqgen/sst2_bert_finetune_local --config.data.data_dir=../shared/data \
      --config.init.from_workdir=/tmp/seqgen/sst2_bert_mlm_local
"""

from experiments.configs import common, sst2_bert_mlm

ARGS = common.Args(flags=("runlocal",))


def get_config(arg: str | None = None):
  runlocal = ARGS.parse(arg).runlocal
  c = common.base_config("classify")
  c.data.name = "sst2"
  c.data.seq_len = 50  # dev / test: every sentence whole (with [CLS], [SEP]: 48 words)
  c.data.train_seq_len = 32  # training phrases: less padding
  c.model = sst2_bert_mlm.bert_fields(runlocal)
  c.model.pooling = "cls"
  c.init.from_workdir = "/tmp/seqgen/sst2_bert_mlm" + ("_local" if runlocal else "")
  c.init.hf_checkpoint = ""

  c.optimizer.lr = 2e-4
  c.optimizer.schedule = "warmup_linear"
  c.optimizer.warmup_steps = 100
  c.optimizer.min_lr = 0.0
  c.optimizer.weight_decay = 0.01
  c.optimizer.clip_grad_norm = 1.0

  c.train.num_steps = 1000
  c.train.batch_size = 64
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 1000
  c.eval.batch_size = 128

  if runlocal:
    c.data.max_examples = 2000
    c.data.seq_len = 32
    c.data.train_seq_len = 16
    c.train.num_steps = 100
    c.train.batch_size = 32
    c.train.log_every = 25
    c.train.eval_every = 50
    c.train.checkpoint_every = 50
    c.optimizer.warmup_steps = 10
    c.eval.batch_size = 64
  return c
