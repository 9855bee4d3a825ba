"""Exact log-likelihoods through the probability-flow ODE, and bits per dimension.

log p_eps(x) = log p_T(x_T) + int_eps^T div f~(x_t, t) dt, where x_t solves the probability-flow
ODE dx/dt = f~(x, t) from x_eps = x (Song et al. 2021, eq. 39; Chen et al. 2018). The divergence
is computed

* ``exact``: the trace of the D x D Jacobian (D forward-mode products per evaluation; for
  small D only), or
* ``hutchinson``: E_v[v^T (d f~/dx) v] with Rademacher (or Gaussian) probes v, one
  Jacobian-vector product per probe, the probes held fixed along the trajectory (Grathwohl et
  al. 2019, FFJORD). Unbiased; its spread shrinks as 1 / sqrt(num_probes).

Bits per dimension of 8-bit data. Images are integers k in {0..255}; the model sees them
uniformly dequantised, y = lo + (k + u) / 256 * (hi - lo) with u ~ U[0, 1) (``dequantize``), so
every integer owns a bin of width w = (hi - lo) / 256 in y. By Jensen, -log2 P(k) <= E_u[-log2
p(y)] - D log2 w, hence

  bpd = -log p(y) / (D ln 2) + 8 - log2(hi - lo),

an upper bound on the discrete model's bits/dim: offset 7 for data in [-1, 1] (score_sde's
centred data), 8 for data in [0, 1].

Axis key: B batch, H height, W width, C channels, D = H * W * C.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqgen_jax.diffusion import process
from seqgen_jax.diffusion.ode import odeint, probability_flow_drift
from seqgen_jax.diffusion.sde import VESDE, VPSDE, check_sde_prediction, score_fn_from_model
from seqgen_jax.errors import ConfigError

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


def _exact_divergence(drift_for, x: jax.Array, t_B: jax.Array, cond: Any) -> jax.Array:
  """tr(d drift / dx) per example, from each example's own D x D Jacobian.

  ``drift_for(cond)`` builds the drift for a conditioning batch; each example is run alone with
  its own slice of ``cond``, so the network must not mix examples (no batch statistics).
  """
  def one(x_i, t_i, c_i):
    fn = drift_for(jax.tree.map(lambda c: c[None], c_i))
    jac = jax.jacfwd(lambda y: fn(y[None], t_i[None])[0])(x_i)
    d = x_i.size
    return jnp.trace(jac.reshape(d, d))

  return jax.vmap(one)(x, t_B, cond)


def _hutchinson_divergence(fn, x: jax.Array, t_B: jax.Array, probes: jax.Array) -> jax.Array:
  """mean_k v_k^T (d fn / dx) v_k per example, for probes [K, B, ...]."""
  def one(v):
    _, jv = jax.jvp(lambda y: fn(y, t_B), (x,), (v,))
    return jnp.sum((jv * v).reshape(x.shape[0], -1), axis=-1)

  return jnp.mean(jax.lax.map(one, probes), axis=0)


def log_likelihood(model_fn: process.ModelFn, sde: VPSDE | VESDE, x_BHWC: jax.Array,
                   rng: jax.Array, *, prediction: str = "eps", cond: Any = None,
                   num_steps: int = 100, method: str = "rk4", divergence: str = "hutchinson",
                   num_probes: int = 1, probe: str = "rademacher", eps: float = 1e-5
                   ) -> tuple[jax.Array, jax.Array]:
  """(log p_eps(x) in nats [B], the prior latent x_T) by the probability-flow ODE eps -> T."""
  check_sde_prediction(prediction)
  if divergence not in DIVERGENCES:
    raise ConfigError(f"unknown divergence '{divergence}'; choose one of: "
                      f"{', '.join(DIVERGENCES)}")
  if probe not in PROBES:
    raise ConfigError(f"unknown probe '{probe}'; choose one of: {', '.join(PROBES)}")
  if num_probes < 1:
    raise ConfigError(f"num_probes must be >= 1, got {num_probes}")
  drift_for = lambda c: probability_flow_drift(sde, score_fn_from_model(model_fn, sde,
                                                                       prediction, c))
  drift = drift_for(cond)
  x = x_BHWC.astype(jnp.float32)
  b = x.shape[0]
  if probe == "rademacher":
    probes = jax.random.rademacher(rng, (num_probes, *x.shape), jnp.float32)
  else:
    probes = jax.random.normal(rng, (num_probes, *x.shape), jnp.float32)

  def augmented(state, t):
    y, _ = state
    t_B = jnp.full((b,), t)
    if divergence == "exact":
      div_B = _exact_divergence(drift_for, y, t_B, cond)
    else:
      div_B = _hutchinson_divergence(drift, y, t_B, probes)
    return drift(y, t_B), div_B

  grid = np.linspace(eps, sde.T, num_steps + 1)
  z, delta_B = odeint(augmented, (x, jnp.zeros((b,), jnp.float32)), grid, method)
  return sde.prior_logp(z) + delta_B, z


def bits_per_dim(logp_B: jax.Array, num_dims: int, *, num_bits: int = 8,
                 data_range: tuple[float, float] = (-1.0, 1.0)) -> jax.Array:
  """-log p / (D ln 2) + num_bits - log2(hi - lo): discrete bits/dim of dequantised data."""
  lo, hi = data_range
  if not hi > lo:
    raise ConfigError(f"data_range must be (lo, hi) with hi > lo, got {data_range}")
  return -logp_B / (num_dims * math.log(2.0)) + num_bits - math.log2(hi - lo)


def dequantize(x_uint: jax.Array, rng: jax.Array, *, num_bits: int = 8,
               data_range: tuple[float, float] = (-1.0, 1.0)) -> jax.Array:
  """Uniform dequantisation of integer data: lo + (k + u) / 2^bits * (hi - lo), u ~ U[0, 1)."""
  lo, hi = data_range
  u = jax.random.uniform(rng, x_uint.shape, jnp.float32)
  return lo + (x_uint.astype(jnp.float32) + u) / 2**num_bits * (hi - lo)
