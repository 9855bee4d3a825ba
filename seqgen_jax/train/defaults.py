"""The full set of config fields the training loop reads, with their defaults.

Experiment configs start from ``default_config()`` and set what they need, so every field exists
(and can be overridden with ``--config.train.num_steps=...``) and a misspelt override fails.
"""

from __future__ import annotations

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "lm"

  c.data = ml_collections.ConfigDict()
  c.data.name = ""
  c.data.data_dir = ""  # empty: $SEQGEN_DATA_DIR, else ~/seqgen_data
  c.data.prepared_dir = ""  # empty: $SEQGEN_PREPARED_DIR, else ~/tensorflow_datasets
  c.data.download = False  # True: fetch missing raw files from their canonical source

  c.model = ml_collections.ConfigDict()
  c.model.name = ""

  c.init = ml_collections.ConfigDict()
  # A Hugging Face / diffusers checkpoint directory to fine-tune (seqgen_jax.convert): its model
  # replaces config.model; empty: a fresh initialisation.
  c.init.from_pretrained = ""

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = "warmup_cosine"
  c.optimizer.warmup_steps = 100
  c.optimizer.min_lr = 1e-4
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.99
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.1
  c.optimizer.momentum = 0.0  # sgd only; 0: none
  c.optimizer.nesterov = False  # sgd only
  c.optimizer.clip_grad_norm = 1.0  # None: no clipping

  c.train = ml_collections.ConfigDict()
  c.train.seed = 0
  c.train.num_steps = 1000
  c.train.batch_size = 64  # global, over all devices
  c.train.grad_accum_steps = 1
  c.train.compute_dtype = "float32"  # or "bfloat16": bf16 compute, f32 master params
  c.train.ema_decay = ml_collections.config_dict.placeholder(float)  # None: no EMA
  c.train.ema_warmup = False  # True: decay min(ema_decay, (1+n)/(10+n)) at update n
  c.train.step_mode = "jit"  # or "shard_map"
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.sample_every = 0  # 0: only at the end; -1: never
  c.train.final_eval = True  # Task.final_eval at the end (BLEU, FID, test metrics)
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 3
  c.train.async_checkpoint = True
  # Scale-out and efficiency (seqgen_jax/train/perf.py):
  c.train.profile_steps = ()  # (first, last): jax.profiler trace of those steps -> workdir/profile
  c.train.peak_tflops = 0.0  # peak TFLOP/s of one device for MFU; 0: from the device-kind table
  c.train.device_memory_budget_gib = 0.0  # >0: refuse a step that needs more per device

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 0  # 0: train.batch_size
  c.eval.num_batches = 10

  c.sample = ml_collections.ConfigDict()
  c.sample.prompt = "\n"
  c.sample.num_tokens = 200
  c.sample.temperature = 0.8
  c.sample.top_k = 0  # 0: no top-k filtering

  c.mesh = ml_collections.ConfigDict()
  c.mesh.fsdp = 1  # >1: shard params and optimizer state over this many devices
  return c
