"""Shared pieces of the benchmarks: timing (medians, compilation excluded) and the measured
matmul peak that MFU is quoted against."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp


def median_seconds(fn: Callable[[], object], *, warmup: int, iters: int,
                   sync: Callable[[object], object] = jax.block_until_ready) -> float:
  """Median wall time of ``fn()`` over ``iters`` calls after ``warmup`` untimed calls (which
  absorb compilation). ``sync`` waits for the result (JAX arrays by default)."""
  for _ in range(warmup):
    sync(fn())
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    sync(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def measured_matmul_peak(dtype: jnp.dtype, sizes: tuple[int, ...], iters: int = 5
                         ) -> tuple[float, int]:
  """The best median FLOP/s of square matmuls (2 n^3 FLOPs) over ``sizes`` on the default
  device, and the size that achieved it."""
  best, best_n = 0.0, sizes[0]
  mm = jax.jit(lambda a, b: a @ b)
  for n in sizes:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32).astype(dtype)
    t = median_seconds(lambda a=a, b=b: mm(a, b), warmup=2, iters=iters)
    if 2 * n**3 / t > best:
      best, best_n = 2 * n**3 / t, n
  return best, best_n


def device_name() -> str:
  d = jax.devices()[0]
  return f"{d.platform}:{getattr(d, 'device_kind', '?')} x{jax.device_count()}"
