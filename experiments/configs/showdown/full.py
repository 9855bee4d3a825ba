"""The showdown's full preset: nanoGPT-sized models and long dependencies, for a GPU / TPU.

Arguments: ``task=copy|assoc_recall|tinyshakespeare`` (default copy). Any field can be
overridden (``--config.seeds=1``, ``--config.budget_flops=1e15``); ``--mode=full --task=...`` is
the same as ``--config=`` this file.

  python -m experiments.showdown \
      --config=experiments/configs/showdown/full.py:task=tinyshakespeare \
      --config.seeds=3 --out=/tmp/showdown_full                # GPU / TPU
"""

from experiments.configs import common

# Per task: the config.data fields and the training FLOPs per model and seed. The budgets train
# every model for thousands of steps: on Tiny Shakespeare ~5,500 GPT steps of 64 x 256 tokens
# (the 10.7M-parameter GPT is nanoGPT's shakespeare-char model, which trains 5,000), on the
# synthetic tasks >= 3,000 steps of the 27M-parameter LSTM.
DATA = {"copy": dict(length=16, delay=256, alphabet=8),
        "assoc_recall": dict(num_pairs=64, num_keys=128, num_values=64),
        "tinyshakespeare": dict(seq_len=256)}
BUDGET_FLOPS = {"copy": 1e16, "assoc_recall": 1e16, "tinyshakespeare": 6e15}

ARGS = common.Args(flags=(), choices={"task": tuple(DATA)})


def get_config(arg: str | None = None):
  task = ARGS.parse(arg).task
  c = common.showdown_defaults(task, "full")
  c.data = DATA[task]
  c.budget_flops = BUDGET_FLOPS[task]
  c.batch_size = 64
  c.model = dict(d_model=384, hidden_size=768, num_layers=6, num_heads=6, d_ff=1536,
                 mlp_ratio=4, dropout=0.0, attention="auto")  # auto: cuDNN flash on GPU
  c.lr = 1e-3
  c.sweep_models = ()  # (): every causal_lm model
  c.sweep_steps = 2000
  c.copy_delays = (8, 32, 128, 512)
  c.recall_pairs = (4, 16, 64, 256)
  c.scaling_models = ("gpt", "lstm", "mingru", "lru")
  c.scaling_lengths = (128, 256, 512, 1024, 2048, 4096, 8192)
  c.scaling_tokens = 65536
  c.latency_lengths = (128, 512, 2048, 8192)
  c.denoiser = dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_levels=(1,),
                    norm_groups=32, dropout=0.0, hidden_size=384, depth=12, num_heads=6,
                    patch_size=2)
  c.image_shape = (32, 32, 3)
  c.denoise_steps = (1, 5, 10, 25, 50, 100, 250)
  c.repeats = 5
  return c
