"""Optimizers and learning-rate schedules built from the config through optax.

``config.optimizer`` fields: ``name`` (see OPTIMIZERS), ``lr`` (peak), ``schedule`` (see
SCHEDULES), ``warmup_steps``, ``min_lr`` (the value cosine / linear decay ends at),
``weight_decay`` (decoupled; applied to parameters with >= 2 dims only, as in GPT-2 / nanoGPT),
``b1``, ``b2``, ``eps``, ``momentum``, ``clip_grad_norm`` (used by the train step).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import optax

from seqgen_jax.registry import Registry

Schedule = Callable[[Any], Any]
OPTIMIZERS: Registry[Callable[..., optax.GradientTransformation]] = Registry("optimizer")
SCHEDULES: Registry[Callable[..., Schedule]] = Registry("learning-rate schedule")


def _decay_mask(params):
  return jax.tree.map(lambda p: p.ndim >= 2, params)


@OPTIMIZERS.register("adamw")
def _adamw(lr, cfg):
  return optax.adamw(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                     eps=cfg.get("eps", 1e-8), weight_decay=cfg.get("weight_decay", 0.0),
                     mask=_decay_mask)


@OPTIMIZERS.register("adam")
def _adam(lr, cfg):
  return optax.adam(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), eps=cfg.get("eps", 1e-8))


@OPTIMIZERS.register("sgd")
def _sgd(lr, cfg):
  return optax.sgd(lr, momentum=cfg.get("momentum", None) or None,
                   nesterov=cfg.get("nesterov", False))


@OPTIMIZERS.register("lion")
def _lion(lr, cfg):
  return optax.lion(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.99),
                    weight_decay=cfg.get("weight_decay", 0.0), mask=_decay_mask)


@OPTIMIZERS.register("adafactor")
def _adafactor(lr, cfg):
  return optax.adafactor(lr, weight_decay_rate=cfg.get("weight_decay", None) or None)


@SCHEDULES.register("constant")
def _constant(lr, cfg, num_steps):
  warmup = cfg.get("warmup_steps", 0)
  if warmup:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
  return optax.constant_schedule(lr)


@SCHEDULES.register("warmup_cosine")
def _warmup_cosine(lr, cfg, num_steps):
  warmup = cfg.get("warmup_steps", 0)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=lr, warmup_steps=warmup,
      decay_steps=max(num_steps, warmup + 1), end_value=cfg.get("min_lr", 0.0))


@SCHEDULES.register("warmup_linear")
def _warmup_linear(lr, cfg, num_steps):
  warmup = cfg.get("warmup_steps", 0)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup),
       optax.linear_schedule(lr, cfg.get("min_lr", 0.0), max(num_steps - warmup, 1))], [warmup])


@SCHEDULES.register("warmup_rsqrt")
def _warmup_rsqrt(lr, cfg, num_steps):
  warmup = max(cfg.get("warmup_steps", 1), 1)

  def schedule(step):
    step = jax.numpy.asarray(step, jax.numpy.float32) + 1.0
    return lr * jax.numpy.minimum(step / warmup, jax.numpy.sqrt(warmup / step))

  return schedule


def build_optimizer(cfg: ml_collections.ConfigDict,
                    num_steps: int) -> tuple[optax.GradientTransformation, Schedule]:
  """Returns (optimizer, learning-rate schedule) for ``config.optimizer``."""
  make_opt = OPTIMIZERS.get(cfg.name)
  make_sched = SCHEDULES.get(cfg.get("schedule", "constant"))
  schedule = make_sched(cfg.lr, cfg, num_steps)
  return make_opt(schedule, cfg), schedule
