"""A GPT that does not fit one device's memory budget unless FSDP shards it (8 devices).

``train.device_memory_budget_gib`` simulates a small accelerator: before anything is allocated the
loop adds up the real per-device shard sizes of params + AdamW state and XLA's temporaries for the
compiled step, and refuses with a one-line error when that exceeds the budget.

Full: a 100M-parameter GPT (8 layers, width 1024) on copy-with-delay. Plain data parallelism
needs 1.9 GiB per device (1.1 GiB of it params + AdamW moments, replicated; XLA:CPU's accounting),
over the 1 GiB budget; ``mesh.fsdp=8`` shards params and optimizer state 8 ways and needs
0.68 GiB. ``runlocal``: the same story at 1/4 of the width and a 16 MiB budget, on 8 fake CPU
devices (30.3 MiB per device data-parallel, 6.1 MiB with fsdp=8).

Arguments: ``runlocal`` (a CPU smoke run).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.main \
      --config=experiments/configs/fsdp_budget_gpt.py:runlocal --workdir=/tmp/seqgen/fsdp_local
  # the same with --config.mesh.fsdp=1 refuses: "the train step needs 30.3 MiB per device ..."
  python -m experiments.main --config=experiments/configs/fsdp_budget_gpt.py \
      --workdir=/tmp/seqgen/fsdp_budget     # on 8 accelerators
"""

from experiments.configs import common

ARGS = common.Args(flags=("runlocal",))


def get_config(arg: str | None = None):
  a = ARGS.parse(arg)
  c = common.base_config("lm")
  c.data.name = "copy"
  c.data.length = 8
  c.data.delay = 32
  c.data.alphabet = 8

  c.model.name = "gpt"
  c.model.num_layers = 8
  c.model.num_heads = 16
  c.model.d_model = 1024
  c.model.d_ff = 4096
  c.model.dropout = 0.0

  c.optimizer.lr = 3e-4
  c.optimizer.warmup_steps = 100
  c.optimizer.weight_decay = 0.0

  c.train.num_steps = 2000
  c.train.batch_size = 64
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.device_memory_budget_gib = 1.0
  c.mesh.fsdp = 8
  c.eval.num_batches = 8

  if a.runlocal:
    c.data.length = 4
    c.data.delay = 4
    c.data.alphabet = 6
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.d_model = 256
    c.model.d_ff = 1024
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 5
    c.train.num_steps = 40
    c.train.batch_size = 16
    c.train.log_every = 10
    c.train.eval_every = 40
    c.train.checkpoint_every = 40
    c.train.device_memory_budget_gib = 1 / 64  # 16 MiB
    c.eval.num_batches = 2
  return c
