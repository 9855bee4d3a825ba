"""Bits per dimension of 8-bit test images under a diffusion model, by the probability-flow ODE.

Each image is dequantised (``diffusion.likelihood.dequantize``), its log-likelihood integrated
along the probability-flow ODE of an SDE (``likelihood.log_likelihood``) and turned into
bits/dim (``likelihood.bits_per_dim``: an upper bound on the discrete model's bits/dim). The
report is the mean over the first ``num_examples`` images of an evaluation source, its standard
error and the number of images.

Axis key: B batch, H height, W width, C channels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from seqgen_jax.data.pipeline import StepSource
from seqgen_jax.diffusion import likelihood, process
from seqgen_jax.diffusion.sde import VESDE, VPSDE


def split_bits_per_dim(model_fn: process.ModelFn, sde: VPSDE | VESDE, source: StepSource,
                       num_examples: int, rng: jax.Array, *, prediction: str = "eps",
                       cond: Any = None, num_steps: int = 100, method: str = "rk4",
                       num_probes: int = 1, eps: float = 1e-3,
                       preprocess: Callable[[np.ndarray], np.ndarray] | None = None
                       ) -> dict[str, float]:
  """``bpd``, ``bpd_stderr`` and ``bpd_num_examples`` of the first ``num_examples`` images.

  ``model_fn(x, t, cond)`` takes the SDE's continuous t; ``source`` yields uint8 ``image`` and
  ``weight`` (0 on padding rows) in batches of its ``global_batch_size``, which ``preprocess``
  may map to other uint8 images (e.g. downsampled); ``cond`` has that batch size. Batch i is
  dequantised and probed with ``fold_in(rng, i)``.
  """
  bs = source.global_batch_size

  @jax.jit
  def bpd_fn(x_uint_BHWC: jax.Array, key: jax.Array) -> jax.Array:
    k_deq, k_ll = jax.random.split(key)
    y_BHWC = likelihood.dequantize(x_uint_BHWC, k_deq)
    logp_B, _ = likelihood.log_likelihood(model_fn, sde, y_BHWC, k_ll, prediction=prediction,
                                          cond=cond, num_steps=num_steps, method=method,
                                          num_probes=num_probes, eps=eps)
    return likelihood.bits_per_dim(logp_B, math.prod(x_uint_BHWC.shape[1:]))

  vals, t0 = [], time.perf_counter()
  for i in range(math.ceil(num_examples / bs)):
    batch = source.batch(i, slice(0, bs))
    x_BHWC = np.asarray(batch["image"])
    if preprocess is not None:
      x_BHWC = preprocess(x_BHWC)
    bpd_B = np.asarray(bpd_fn(jnp.asarray(x_BHWC), jax.random.fold_in(rng, i)))
    vals.extend(bpd_B[batch["weight"] > 0].tolist())
  vals = np.asarray(vals[:num_examples])
  logging.info("bits/dim of %d test images: %.4f (%.1f s)", len(vals), vals.mean(),
               time.perf_counter() - t0)
  return {"bpd": float(vals.mean()), "bpd_stderr": float(vals.std() / np.sqrt(len(vals))),
          "bpd_num_examples": float(len(vals))}
