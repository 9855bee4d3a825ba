"""TrainState: the explicit pytree that a train step maps to its successor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; a pure pytree (no functions inside).

  Attributes:
    step: number of optimizer updates applied so far (int32 scalar).
    params: float32 master parameters.
    opt_state: the optax optimizer state for ``params``.
    ema_params: exponential moving average of ``params``, or None when EMA is off.
    rng: PRNG key; each step derives its randomness with ``fold_in(rng, step)``.
  """

  step: jax.Array
  params: PyTree
  opt_state: PyTree
  ema_params: PyTree | None
  rng: jax.Array


def create_train_state(
    init_params_fn: Callable[[jax.Array], PyTree],
    tx: optax.GradientTransformation,
    rng: jax.Array,
    *,
    use_ema: bool = False,
) -> TrainState:
  """Initialises params from ``init_params_fn(key)`` and builds the optimizer and EMA state.

  Pure, so that ``jax.eval_shape`` gives the abstract state and ``jax.jit(...,
  out_shardings=...)`` creates it directly in its sharded layout.
  """
  init_rng, state_rng = jax.random.split(rng)
  params = init_params_fn(init_rng)
  params = jax.tree.map(
      lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      ema_params=jax.tree.map(jnp.copy, params) if use_ema else None,
      rng=state_rng,
  )
