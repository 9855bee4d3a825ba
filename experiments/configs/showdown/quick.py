"""The showdown's quick preset: small models and lengths for a CPU (~2 min on 2 cores).

Arguments: ``task=copy|assoc_recall|tinyshakespeare`` (default copy). Any field can be
overridden (``--config.seeds=1``, ``--config.budget_flops=1e11``); ``--mode=quick --task=...`` is
the same as ``--config=`` this file.

  python -m experiments.showdown --config=experiments/configs/showdown/quick.py \
      --out=/tmp/showdown                                  # CPU: ~2 min on 2 cores
  python -m experiments.showdown --config=experiments/configs/showdown/quick.py:task=assoc_recall \
      --out=/tmp/showdown_recall
"""

from experiments.configs import common

# Per task: the config.data fields and the training FLOPs per model and seed.
DATA = {"copy": dict(length=4, delay=8, alphabet=6),
        "assoc_recall": dict(num_pairs=8, num_keys=16, num_values=16),
        "tinyshakespeare": dict(seq_len=64)}
BUDGET_FLOPS = {"copy": 5e10, "assoc_recall": 5e10, "tinyshakespeare": 2e11}

ARGS = common.Args(flags=(), choices={"task": tuple(DATA)})


def get_config(arg: str | None = None):
  task = ARGS.parse(arg).task
  c = common.showdown_defaults(task, "quick")
  c.data = DATA[task]
  c.budget_flops = BUDGET_FLOPS[task]
  c.batch_size = 32
  c.model = dict(d_model=64, hidden_size=128, num_layers=2, num_heads=4, d_ff=256, mlp_ratio=4,
                 dropout=0.0)
  c.sweep_models = ("rnn", "lstm", "gpt")
  c.sweep_steps = 150
  c.copy_delays = (4, 16, 48)
  c.recall_pairs = (2, 6)
  c.scaling_models = ("gpt", "lstm", "mingru")
  c.scaling_lengths = (64, 256, 1024)
  c.scaling_tokens = 2048
  c.latency_lengths = (32, 256)
  c.denoiser = dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(1,), norm_groups=8,
                    dropout=0.0, hidden_size=64, depth=2, num_heads=4, patch_size=2)
  c.image_shape = (16, 16, 3)
  c.denoise_steps = (1, 10, 50)
  c.repeats = 3
  return c
