"""Class conditioning: label dropout for training and classifier-free guidance for sampling.

Classifier-free guidance (Ho & Salimans 2021, eq. 6) trains one network both conditionally and
unconditionally, by replacing the label with a null class (index ``num_classes``, one extra
embedding row) with probability p_uncond (0.1 - 0.2 in the paper), and samples with

  pred~(x, c) = (1 + w) pred(x, c) - w pred(x, null) = pred(x, null) + (1 + w) (pred(x, c) -
  pred(x, null)).

w = 0 is the conditional model, w > 0 sharpens towards the class; diffusers' ``guidance_scale``
is 1 + w. The combination is applied to whatever the network predicts (eps, x0, v or the
score): every conversion between them is affine in the prediction with coefficients that sum
the two branches' weights (1 + w) - w = 1, so guiding in one parametrisation equals guiding in
any other. Wrapping ``model_fn`` makes guidance work with every sampler.

Axis key: B batch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from seqgen_jax.diffusion.process import ModelFn


def null_label(num_classes: int) -> int:
  """The index of the null ("unconditional") class: one past the real classes."""
  return num_classes


def drop_labels(labels_B: jax.Array, rng: jax.Array, p_uncond: float,
                num_classes: int) -> jax.Array:
  """Replaces each label by the null class with probability ``p_uncond`` (for training)."""
  drop_B = jax.random.bernoulli(rng, p_uncond, labels_B.shape)
  return jnp.where(drop_B, null_label(num_classes), labels_B)


def classifier_free_guidance(model_fn: ModelFn, w: float, null_cond: Any) -> ModelFn:
  """``model_fn`` guided with weight ``w``: (1 + w) pred(x, c) - w pred(x, null).

  Both branches run in one call on a doubled batch. ``null_cond`` has the structure of ``cond``
  (e.g. ``null_label(num_classes)`` for integer labels) and is broadcast to its shape.
  """

  def guided(x: jax.Array, t_B: jax.Array, cond: Any) -> jax.Array:
    b = x.shape[0]
    both_cond = jax.tree.map(
        lambda c, n: jnp.concatenate([c, jnp.broadcast_to(jnp.asarray(n, c.dtype), c.shape)]),
        cond, null_cond)
    out = model_fn(jnp.concatenate([x, x]), jnp.concatenate([t_B, t_B]), both_cond)
    cond_out, uncond_out = out[:b].astype(jnp.float32), out[b:].astype(jnp.float32)
    return uncond_out + (1.0 + w) * (cond_out - uncond_out)

  return guided
