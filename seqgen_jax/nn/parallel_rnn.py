"""Recurrences that train in parallel: minGRU, minLSTM (Feng et al. 2024) and the LRU (Orvieto
et al. 2023).

All three are diagonal linear recurrences h_t = a_t * h_{t-1} + b_t whose a_t, b_t depend on the
input only, never on h. The pairs (a, b) compose associatively,
(a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2), so ``jax.lax.associative_scan`` computes every h_t in
O(log T) depth for training; generation runs the same layer one step (or one chunk) at a time with
the carried state. ``scan_impl`` picks ``"associative"`` or ``"sequential"`` (a ``lax.scan`` of the
same update); both give the same result.

* minGRU: z = sigmoid(W_z x), h~ = W_h x, h_t = (1 - z) h_{t-1} + z h~.
* minLSTM: f = sigmoid(W_f x), i = sigmoid(W_i x), h~ = W_h x, f' = f / (f + i), i' = i / (f + i),
  h_t = f' h_{t-1} + i' h~.
  ``log_space=False`` (default) is the plain formulation above, scanned in linear space.
  ``log_space=True`` is the paper's log-space version (its Appendix B): h~ = g(W_h x) with
  g(x) = x + 0.5 for x >= 0 and sigmoid(x) below (so h~ > 0), and the scan runs on
  (log a, log b) with logaddexp, as in Heinsen's (2023) log-space scan. The two differ in h~
  (identity vs g), so they are different models, not two numerics of one model.
* LRU: complex diagonal state x_t = lambda * x_{t-1} + gamma * (B u_t), y_t = Re(C x_t) + D * u_t,
  with lambda = exp(-exp(nu_log) + i exp(theta_log)) (stable for any parameters), initialised
  uniformly on the ring r_min <= |lambda| <= r_max with phases in [0, max_phase], and the
  normalisation gamma = sqrt(1 - |lambda|^2) kept as a trained log-parameter, initialised there.

Padding: a masked step has a = 1, b = 0, so it leaves the state unchanged; outputs there are 0.
Each layer takes and returns its state: ``layer(x_BTI, mask_BT, h0_BH) -> (y_BTO, hT_BH)``;
``reverse=True`` runs from the end (the backward half of a bidirectional block). Recurrence
math runs in float32 (complex64 for the LRU) whatever the compute dtype.

Axis key: B batch, T time, I input features, H hidden units (the LRU: its input and output
width), N the LRU's complex state size, O outputs, P = parts * H fused projections.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqgen_jax.nn.rnn import check_choice

SCAN_IMPLS = ("associative", "sequential")
f32 = jnp.float32
_LOG_ZERO = -1e30  # log b of a masked step; finite so that logaddexp stays NaN-free in backprop


def _flip_time(*arrays):
  return tuple(a[:, ::-1] for a in arrays)


def linear_recurrence(a_BTH: jax.Array, b_BTH: jax.Array, h0_BH: jax.Array, *,
                      scan_impl: str = "associative", reverse: bool = False) -> jax.Array:
  """All h_t of h_t = a_t * h_{t-1} + b_t (real or complex); h_{-1} = h0. Returns [B, T, H]."""
  check_choice("scan_impl", scan_impl, SCAN_IMPLS)
  if reverse:
    return linear_recurrence(*_flip_time(a_BTH, b_BTH), h0_BH, scan_impl=scan_impl)[:, ::-1]
  if scan_impl == "sequential":
    def body(h_BH, ab):
      h_BH = ab[0] * h_BH + ab[1]
      return h_BH, h_BH

    _, h_TBH = jax.lax.scan(body, h0_BH, (a_BTH.swapaxes(0, 1), b_BTH.swapaxes(0, 1)))
    return h_TBH.swapaxes(0, 1)

  def combine(e1, e2):
    return e1[0] * e2[0], e2[0] * e1[1] + e2[1]

  a_cum_BTH, b_cum_BTH = jax.lax.associative_scan(combine, (a_BTH, b_BTH), axis=1)
  return a_cum_BTH * h0_BH[:, None] + b_cum_BTH  # (prod of a) h0 + the scanned inputs


def log_linear_recurrence(log_a_BTH: jax.Array, log_b_BTH: jax.Array, h0_BH: jax.Array, *,
                          scan_impl: str = "associative", reverse: bool = False) -> jax.Array:
  """The same recurrence with a, b > 0 given as logs; the scan adds logs and uses logaddexp.

  Returns exp(sum log a) * h0 + exp(log B_t), so h0 may have any sign.
  """
  check_choice("scan_impl", scan_impl, SCAN_IMPLS)
  if reverse:
    return log_linear_recurrence(*_flip_time(log_a_BTH, log_b_BTH), h0_BH,
                                 scan_impl=scan_impl)[:, ::-1]

  def combine(e1, e2):
    return e1[0] + e2[0], jnp.logaddexp(e2[0] + e1[1], e2[1])

  if scan_impl == "sequential":
    def body(acc, e):
      acc = combine(acc, e)
      return acc, acc

    first = (log_a_BTH[:, 0], log_b_BTH[:, 0])
    rest = (log_a_BTH[:, 1:].swapaxes(0, 1), log_b_BTH[:, 1:].swapaxes(0, 1))
    _, (la_TBH, lb_TBH) = jax.lax.scan(body, first, rest)
    la_BTH = jnp.concatenate([first[0][:, None], la_TBH.swapaxes(0, 1)], axis=1)
    lb_BTH = jnp.concatenate([first[1][:, None], lb_TBH.swapaxes(0, 1)], axis=1)
  else:
    la_BTH, lb_BTH = jax.lax.associative_scan(combine, (log_a_BTH, log_b_BTH), axis=1)
  return jnp.exp(la_BTH) * h0_BH[:, None] + jnp.exp(lb_BTH)


def g_positive(x: jax.Array) -> jax.Array:
  """Feng et al.'s g: x + 0.5 for x >= 0, sigmoid(x) below; continuous and > 0."""
  return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def log_g(x: jax.Array) -> jax.Array:
  """log g(x), computed without forming g for negative x."""
  return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


def _final(h_BTH: jax.Array, reverse: bool) -> jax.Array:
  return h_BTH[:, 0] if reverse else h_BTH[:, -1]


class _MinRNN(nn.Module):
  """Shared fields of minGRU / minLSTM."""

  hidden_size: int
  log_space: bool = False
  scan_impl: str = "associative"
  reverse: bool = False
  dtype: Any = None
  param_dtype: Any = f32

  def initial_state(self, batch_size: int) -> jax.Array:
    """Zeros [B, H] float32."""
    return jnp.zeros((batch_size, self.hidden_size), f32)

  def _proj(self, x_BTI: jax.Array, parts: int) -> list[jax.Array]:
    k_BTP = nn.Dense(parts * self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
                     name="proj")(x_BTI)
    return jnp.split(k_BTP.astype(f32), parts, axis=-1)

  def _scan(self, coef_a_BTH, coef_b_BTH, mask_BT, h0_BH):
    b, t = coef_a_BTH.shape[:2]
    m_BT1 = (jnp.ones((b, t), bool) if mask_BT is None else mask_BT.astype(bool))[..., None]
    h0_BH = self.initial_state(b) if h0_BH is None else h0_BH.astype(f32)
    if self.log_space:
      h_BTH = log_linear_recurrence(
          jnp.where(m_BT1, coef_a_BTH, 0.0), jnp.where(m_BT1, coef_b_BTH, _LOG_ZERO), h0_BH,
          scan_impl=self.scan_impl, reverse=self.reverse)
    else:
      h_BTH = linear_recurrence(jnp.where(m_BT1, coef_a_BTH, 1.0),
                                jnp.where(m_BT1, coef_b_BTH, 0.0), h0_BH,
                                scan_impl=self.scan_impl, reverse=self.reverse)
    return (jnp.where(m_BT1, h_BTH, 0.0).astype(self.dtype or f32),
            _final(h_BTH, self.reverse))


class MinGRU(_MinRNN):
  """minGRU (Feng et al. 2024); see the module docstring. Params: ``proj`` = [W_z | W_h]."""

  @nn.compact
  def __call__(self, x_BTI: jax.Array, mask_BT: jax.Array | None = None,
               h0_BH: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(outputs [B, T, H], final state [B, H]) from the state ``h0_BH`` (None: zeros)."""
    kz_BTH, kh_BTH = self._proj(x_BTI, 2)
    if self.log_space:  # log(1 - z) = -softplus(k), log z = -softplus(-k)
      return self._scan(-jax.nn.softplus(kz_BTH), -jax.nn.softplus(-kz_BTH) + log_g(kh_BTH),
                        mask_BT, h0_BH)
    z_BTH = jax.nn.sigmoid(kz_BTH)
    return self._scan(1.0 - z_BTH, z_BTH * kh_BTH, mask_BT, h0_BH)


class MinLSTM(_MinRNN):
  """minLSTM (Feng et al. 2024); see the module docstring. Params: ``proj`` = [W_f | W_i | W_h]."""

  @nn.compact
  def __call__(self, x_BTI: jax.Array, mask_BT: jax.Array | None = None,
               h0_BH: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(outputs [B, T, H], final state [B, H]) from the state ``h0_BH`` (None: zeros)."""
    kf_BTH, ki_BTH, kh_BTH = self._proj(x_BTI, 3)
    if self.log_space:
      # log f' = -softplus(log i - log f), log i' = -softplus(log f - log i).
      diff_BTH = jax.nn.softplus(-kf_BTH) - jax.nn.softplus(-ki_BTH)
      return self._scan(-jax.nn.softplus(diff_BTH), -jax.nn.softplus(-diff_BTH) + log_g(kh_BTH),
                        mask_BT, h0_BH)
    f_BTH, i_BTH = jax.nn.sigmoid(kf_BTH), jax.nn.sigmoid(ki_BTH)
    return self._scan(f_BTH / (f_BTH + i_BTH), i_BTH / (f_BTH + i_BTH) * kh_BTH, mask_BT, h0_BH)


def _ring_init(r_min: float, r_max: float, max_phase: float):
  """nu_log, theta_log such that lambda is uniform on the ring (Orvieto et al., Lemma 3.2)."""

  def nu_init(key, shape, dtype=f32):
    u = jax.random.uniform(key, shape, dtype)
    return jnp.log(-0.5 * jnp.log(u * (r_max ** 2 - r_min ** 2) + r_min ** 2))

  def theta_init(key, shape, dtype=f32):
    return jnp.log(max_phase * jax.random.uniform(key, shape, dtype))

  return nu_init, theta_init


class LRU(nn.Module):
  """Linear Recurrent Unit (Orvieto et al. 2023): [B, T, H] -> [B, T, H], complex state [B, N].

  Parameters as in the paper's reference code: ``nu_log``, ``theta_log``, ``gamma_log`` [N];
  ``B_re``, ``B_im`` [H, N] (x @ B, i.e. the transpose of the paper's B) initialised
  N(0, 1/(2H)); ``C_re``, ``C_im`` [N, H] initialised N(0, 1/N); ``D`` [H] N(0, 1).
  """

  state_size: int
  r_min: float = 0.9
  r_max: float = 0.999
  max_phase: float = 2 * math.pi
  scan_impl: str = "associative"
  reverse: bool = False
  dtype: Any = None
  param_dtype: Any = f32

  def initial_state(self, batch_size: int) -> jax.Array:
    """Zeros [B, N] complex64."""
    return jnp.zeros((batch_size, self.state_size), jnp.complex64)

  @nn.compact
  def __call__(self, u_BTH: jax.Array, mask_BT: jax.Array | None = None,
               h0_BN: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(outputs [B, T, H], final complex state [B, N]) from ``h0_BN`` (None: zeros)."""
    h, n = u_BTH.shape[-1], self.state_size
    nu_init, theta_init = _ring_init(self.r_min, self.r_max, self.max_phase)
    nu_log_N = self.param("nu_log", nu_init, (n,), self.param_dtype).astype(f32)
    theta_log_N = self.param("theta_log", theta_init, (n,), self.param_dtype).astype(f32)

    def gamma_init(key, shape, dtype=f32):  # from the initial |lambda| = exp(-exp(nu_log))
      return 0.5 * jnp.log(1.0 - jnp.exp(-2.0 * jnp.exp(nu_log_N.astype(dtype))))

    gamma_log_N = self.param("gamma_log", gamma_init, (n,), self.param_dtype).astype(f32)
    normal = nn.initializers.normal
    b_re_HN = self.param("B_re", normal(1 / math.sqrt(2 * h)), (h, n), self.param_dtype)
    b_im_HN = self.param("B_im", normal(1 / math.sqrt(2 * h)), (h, n), self.param_dtype)
    c_re_NH = self.param("C_re", normal(1 / math.sqrt(n)), (n, h), self.param_dtype)
    c_im_NH = self.param("C_im", normal(1 / math.sqrt(n)), (n, h), self.param_dtype)
    d_H = self.param("D", normal(1.0), (h,), self.param_dtype)

    dt = self.dtype or f32
    u_BTH = u_BTH.astype(dt)
    lam_N = jnp.exp(jax.lax.complex(-jnp.exp(nu_log_N), jnp.exp(theta_log_N)))
    gamma_N = jnp.exp(gamma_log_N)
    bu_BTN = jax.lax.complex((u_BTH @ b_re_HN.astype(dt)).astype(f32) * gamma_N,
                             (u_BTH @ b_im_HN.astype(dt)).astype(f32) * gamma_N)
    b, t = u_BTH.shape[:2]
    m_BT1 = (jnp.ones((b, t), bool) if mask_BT is None else mask_BT.astype(bool))[..., None]
    h0_BN = self.initial_state(b) if h0_BN is None else h0_BN.astype(jnp.complex64)
    a_BTN = jnp.where(m_BT1, jnp.broadcast_to(lam_N, bu_BTN.shape), 1.0 + 0j)
    x_BTN = linear_recurrence(a_BTN, jnp.where(m_BT1, bu_BTN, 0j), h0_BN,
                              scan_impl=self.scan_impl, reverse=self.reverse)
    y_BTH = ((x_BTN.real.astype(dt) @ c_re_NH.astype(dt)).astype(f32)
             - (x_BTN.imag.astype(dt) @ c_im_NH.astype(dt)).astype(f32)
             + d_H.astype(f32) * u_BTH.astype(f32))
    return jnp.where(m_BT1, y_BTH, 0.0).astype(dt), _final(x_BTN, self.reverse)
