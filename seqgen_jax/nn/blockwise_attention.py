"""Blockwise (flash) attention in pure JAX: FlashAttention-2's algorithm with a custom VJP.

The forward pass walks each block of queries over the blocks of keys with an online softmax
(a running row maximum ``m`` and row sum ``l``), so the T x S score matrix never exists: the
largest temporary is one [block_q, block_k] tile per (batch, head), and what is kept for the
backward pass is the output and two numbers per query row (``m``, ``l``): memory O(T) in the
sequence length. Under ``causal`` a query block visits only the key blocks it can see (the
loop's trip count depends on the block: real skipping, not masking), which halves the work.

The backward pass (``jax.custom_vjp``) recomputes the probabilities tile by tile from ``m`` and
``l`` instead of storing them: for each key block it walks the query blocks that can see it,
accumulating dK and dV for that block and adding into dQ (Dao 2023, Algorithm 2).

Semantics are those of ``attention._xla_attention``: a masked score is replaced by the lowest
float32 (so a row whose keys are all masked averages the values, as the XLA path does), keys
are aligned to the end under ``causal`` (query t sees keys s <= t + S - T), grouped-query
attention reads key/value head n // G, matmuls accumulate in float32 whatever the input dtype,
and the output has the query's dtype. Lengths need not divide the blocks: the tail is padded
and the padded keys are excluded. No attention dropout (use the XLA path for that).

Axis key: B batch, T query positions, S key positions, N query heads, K key/value heads,
G query heads per key/value head (N = K * G), H head width, Q one block of queries, C one
block of keys, I query blocks, J key blocks.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from seqgen_jax.errors import ConfigError

NEG = float(jnp.finfo(jnp.float32).min)  # a masked score, exactly as the XLA path writes it
DEFAULT_BLOCK_Q = 512
DEFAULT_BLOCK_K = 512


def _mask_5d(mask: jax.Array | None, b: int, k: int, g: int, t: int, s: int) -> jax.Array | None:
  """A boolean mask broadcastable to [B, N, T, S] -> [B|1, K|1, G|1, T|1, S|1]."""
  if mask is None:
    return None
  m = jnp.asarray(mask, bool)
  m = m.reshape((1,) * (4 - m.ndim) + m.shape)
  mb, mn, mt, ms = m.shape
  for size, full, name in ((mb, b, "batch"), (mn, k * g, "head"), (mt, t, "query"),
                           (ms, s, "key")):
    if size not in (1, full):
      raise ValueError(f"mask {name} axis has size {size}, expected 1 or {full}")
  if mn == 1:
    return m[:, :, None]
  return m.reshape(mb, k, g, mt, ms)


def _tile_mask(mask5, q0, c0, block_q, block_k):
  """The [.., Q|1, C|1] tile of a 5-d mask at query offset q0, key offset c0 (padded array)."""
  if mask5 is None:
    return None
  if mask5.shape[3] != 1:
    mask5 = jax.lax.dynamic_slice_in_dim(mask5, q0, block_q, axis=3)
  if mask5.shape[4] != 1:
    mask5 = jax.lax.dynamic_slice_in_dim(mask5, c0, block_k, axis=4)
  return mask5


def _scores(q_BKGQH, k_BKCH, q0, c0, mask5, *, scale, causal, offset, s_len):
  """Scaled float32 scores of one tile with masked entries NEG and padded keys -inf; also the
  boolean of entries whose gradient flows (allowed and real)."""
  s_BKGQC = jnp.einsum("bkgqh,bkch->bkgqc", q_BKGQH, k_BKCH,
                       preferred_element_type=jnp.float32) * scale
  block_q, block_k = q_BKGQH.shape[3], k_BKCH.shape[2]
  key_11111C = (c0 + jnp.arange(block_k)).reshape(1, 1, 1, 1, block_k)
  real_1111QC = jnp.broadcast_to(key_11111C < s_len, (1, 1, 1, block_q, block_k))
  allowed = jnp.ones((1, 1, 1, block_q, block_k), bool)
  if causal:
    query_1111Q1 = (q0 + jnp.arange(block_q)).reshape(1, 1, 1, block_q, 1)
    allowed = key_11111C <= query_1111Q1 + offset
  tile = _tile_mask(mask5, q0, c0, block_q, block_k)
  if tile is not None:
    allowed = jnp.logical_and(tile, allowed)
  s_BKGQC = jnp.where(allowed, s_BKGQC, NEG)
  s_BKGQC = jnp.where(real_1111QC, s_BKGQC, -jnp.inf)
  return s_BKGQC, jnp.logical_and(allowed, real_1111QC)


def _key_blocks_seen(i, *, block_q, block_k, offset, num_key_blocks, causal):
  """How many key blocks query block i visits (all of them unless causal)."""
  if not causal:
    return num_key_blocks
  last_key = (i + 1) * block_q - 1 + offset
  return jnp.clip(last_key // block_k + 1, 1, num_key_blocks)


def _first_query_block(j, *, block_q, block_k, offset, num_query_blocks, causal):
  """The first query block that sees key block j (0 unless causal)."""
  if not causal:
    return 0
  return jnp.clip((j * block_k - offset) // block_q, 0, num_query_blocks)


def _layout(q_BTNH, k_BSKH, v_BSKH, block_q, block_k):
  """Heads-major, padded copies: q [B, K, G, Tp, H], k / v [B, K, Sp, H]."""
  b, t, n, h = q_BTNH.shape
  s, kh = k_BSKH.shape[1], k_BSKH.shape[2]
  g = n // kh
  tp, sp = -(-t // block_q) * block_q, -(-s // block_k) * block_k
  q = jnp.pad(q_BTNH, ((0, 0), (0, tp - t), (0, 0), (0, 0)))
  q_BKGTH = q.reshape(b, tp, kh, g, h).transpose(0, 2, 3, 1, 4)
  pad_s = ((0, 0), (0, sp - s), (0, 0), (0, 0))
  k_BKSH = jnp.pad(k_BSKH, pad_s).transpose(0, 2, 1, 3)
  v_BKSH = jnp.pad(v_BSKH, pad_s).transpose(0, 2, 1, 3)
  return q_BKGTH, k_BKSH, v_BKSH


def _forward(q_BTNH, k_BSKH, v_BSKH, mask, causal, block_q, block_k):
  b, t, n, h = q_BTNH.shape
  s, kh = k_BSKH.shape[1], k_BSKH.shape[2]
  g = n // kh
  q_BKGTH, k_BKSH, v_BKSH = _layout(q_BTNH, k_BSKH, v_BSKH, block_q, block_k)
  tp, sp = q_BKGTH.shape[3], k_BKSH.shape[2]
  ni, nj = tp // block_q, sp // block_k
  mask5 = _pad_mask(_mask_5d(mask, b, kh, g, t, s), tp, sp)
  kw = dict(scale=1.0 / math.sqrt(h), causal=causal, offset=s - t, s_len=s)

  def query_block(i):
    q0 = i * block_q
    q_BKGQH = jax.lax.dynamic_slice_in_dim(q_BKGTH, q0, block_q, axis=3)

    def key_block(j, carry):
      m_BKGQ, l_BKGQ, acc_BKGQH = carry
      c0 = j * block_k
      k_BKCH = jax.lax.dynamic_slice_in_dim(k_BKSH, c0, block_k, axis=2)
      v_BKCH = jax.lax.dynamic_slice_in_dim(v_BKSH, c0, block_k, axis=2)
      s_BKGQC, _ = _scores(q_BKGQH, k_BKCH, q0, c0, mask5, **kw)
      m_new = jnp.maximum(m_BKGQ, jnp.max(s_BKGQC, axis=-1))
      p_BKGQC = jnp.exp(s_BKGQC - m_new[..., None])
      corr_BKGQ = jnp.exp(m_BKGQ - m_new)
      l_BKGQ = l_BKGQ * corr_BKGQ + jnp.sum(p_BKGQC, axis=-1)
      pv_BKGQH = jnp.einsum("bkgqc,bkch->bkgqh", p_BKGQC.astype(v_BKCH.dtype), v_BKCH,
                            preferred_element_type=jnp.float32)
      return m_new, l_BKGQ, acc_BKGQH * corr_BKGQ[..., None] + pv_BKGQH

    init = (jnp.full((b, kh, g, block_q), NEG, jnp.float32),
            jnp.zeros((b, kh, g, block_q), jnp.float32),
            jnp.zeros((b, kh, g, block_q, h), jnp.float32))
    stop = _key_blocks_seen(i, block_q=block_q, block_k=block_k, offset=s - t,
                            num_key_blocks=nj, causal=causal)
    m_BKGQ, l_BKGQ, acc_BKGQH = jax.lax.fori_loop(0, stop, key_block, init)
    return acc_BKGQH / l_BKGQ[..., None], m_BKGQ, l_BKGQ

  o_IBKGQH, m_IBKGQ, l_IBKGQ = jax.lax.map(query_block, jnp.arange(ni))
  # [I, B, K, G, Q, ...] -> [B, K, G, I*Q, ...]
  o_BKGTH = jnp.moveaxis(o_IBKGQH, 0, 3).reshape(b, kh, g, tp, h)
  m_BKGT = jnp.moveaxis(m_IBKGQ, 0, 3).reshape(b, kh, g, tp)
  l_BKGT = jnp.moveaxis(l_IBKGQ, 0, 3).reshape(b, kh, g, tp)
  out_BTNH = o_BKGTH.transpose(0, 3, 1, 2, 4).reshape(b, tp, n, h)[:, :t].astype(q_BTNH.dtype)
  return out_BTNH, (o_BKGTH, m_BKGT, l_BKGT)


def _pad_mask(mask5, tp, sp):
  """Pads the full-size query / key axes of a 5-d mask to the padded lengths (with False)."""
  if mask5 is None:
    return None
  pads = [(0, 0)] * 5
  if mask5.shape[3] != 1:
    pads[3] = (0, tp - mask5.shape[3])
  if mask5.shape[4] != 1:
    pads[4] = (0, sp - mask5.shape[4])
  return jnp.pad(mask5, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _attention(q_BTNH, k_BSKH, v_BSKH, mask, causal, block_q, block_k):
  return _forward(q_BTNH, k_BSKH, v_BSKH, mask, causal, block_q, block_k)[0]


def _attention_fwd(q_BTNH, k_BSKH, v_BSKH, mask, causal, block_q, block_k):
  out_BTNH, (o_BKGTH, m_BKGT, l_BKGT) = _forward(q_BTNH, k_BSKH, v_BSKH, mask, causal, block_q,
                                                 block_k)
  return out_BTNH, (q_BTNH, k_BSKH, v_BSKH, mask, o_BKGTH, m_BKGT, l_BKGT)


def _attention_bwd(causal, block_q, block_k, res, dout_BTNH):
  q_BTNH, k_BSKH, v_BSKH, mask, o_BKGTH, m_BKGT, l_BKGT = res
  b, t, n, h = q_BTNH.shape
  s, kh = k_BSKH.shape[1], k_BSKH.shape[2]
  g = n // kh
  q_BKGTH, k_BKSH, v_BKSH = _layout(q_BTNH, k_BSKH, v_BSKH, block_q, block_k)
  tp, sp = q_BKGTH.shape[3], k_BKSH.shape[2]
  ni, nj = tp // block_q, sp // block_k
  do = jnp.pad(dout_BTNH, ((0, 0), (0, tp - t), (0, 0), (0, 0)))
  do_BKGTH = do.reshape(b, tp, kh, g, h).transpose(0, 2, 3, 1, 4)
  # D_i = rowsum(dO_i * O_i): the softmax backward's correction term, one number per query.
  d_BKGT = jnp.sum(do_BKGTH.astype(jnp.float32) * o_BKGTH, axis=-1)
  mask5 = _pad_mask(_mask_5d(mask, b, kh, g, t, s), tp, sp)
  scale = 1.0 / math.sqrt(h)
  kw = dict(scale=scale, causal=causal, offset=s - t, s_len=s)

  def key_block(j, carry):
    dq_BKGTH, dk_BKSH, dv_BKSH = carry
    c0 = j * block_k
    k_BKCH = jax.lax.dynamic_slice_in_dim(k_BKSH, c0, block_k, axis=2)
    v_BKCH = jax.lax.dynamic_slice_in_dim(v_BKSH, c0, block_k, axis=2)

    def query_block(i, inner):
      dq_BKGTH, dk_BKCH, dv_BKCH = inner
      q0 = i * block_q
      sl = lambda x: jax.lax.dynamic_slice_in_dim(x, q0, block_q, axis=3)
      q_BKGQH, do_BKGQH = sl(q_BKGTH), sl(do_BKGTH)
      m_BKGQ, l_BKGQ, d_BKGQ = sl(m_BKGT), sl(l_BKGT), sl(d_BKGT)
      s_BKGQC, flows = _scores(q_BKGQH, k_BKCH, q0, c0, mask5, **kw)
      p_BKGQC = jnp.exp(s_BKGQC - m_BKGQ[..., None]) / l_BKGQ[..., None]
      dv_BKCH = dv_BKCH + jnp.einsum("bkgqc,bkgqh->bkch", p_BKGQC.astype(do_BKGQH.dtype),
                                     do_BKGQH, preferred_element_type=jnp.float32)
      dp_BKGQC = jnp.einsum("bkgqh,bkch->bkgqc", do_BKGQH, v_BKCH,
                            preferred_element_type=jnp.float32)
      ds_BKGQC = jnp.where(flows, p_BKGQC * (dp_BKGQC - d_BKGQ[..., None]), 0.0) * scale
      ds_BKGQC = ds_BKGQC.astype(q_BKGQH.dtype)
      dk_BKCH = dk_BKCH + jnp.einsum("bkgqc,bkgqh->bkch", ds_BKGQC, q_BKGQH,
                                     preferred_element_type=jnp.float32)
      dq_BKGQH = jnp.einsum("bkgqc,bkch->bkgqh", ds_BKGQC, k_BKCH,
                            preferred_element_type=jnp.float32)
      dq_BKGTH = jax.lax.dynamic_update_slice_in_dim(
          dq_BKGTH, sl(dq_BKGTH) + dq_BKGQH, q0, axis=3)
      return dq_BKGTH, dk_BKCH, dv_BKCH

    zeros = jnp.zeros((b, kh, block_k, h), jnp.float32)
    start = _first_query_block(j, block_q=block_q, block_k=block_k, offset=s - t,
                               num_query_blocks=ni, causal=causal)
    dq_BKGTH, dk_BKCH, dv_BKCH = jax.lax.fori_loop(start, ni, query_block,
                                                   (dq_BKGTH, zeros, zeros))
    dk_BKSH = jax.lax.dynamic_update_slice_in_dim(dk_BKSH, dk_BKCH, c0, axis=2)
    dv_BKSH = jax.lax.dynamic_update_slice_in_dim(dv_BKSH, dv_BKCH, c0, axis=2)
    return dq_BKGTH, dk_BKSH, dv_BKSH

  init = (jnp.zeros((b, kh, g, tp, h), jnp.float32), jnp.zeros((b, kh, sp, h), jnp.float32),
          jnp.zeros((b, kh, sp, h), jnp.float32))
  dq_BKGTH, dk_BKSH, dv_BKSH = jax.lax.fori_loop(0, nj, key_block, init)
  dq_BTNH = dq_BKGTH.transpose(0, 3, 1, 2, 4).reshape(b, tp, n, h)[:, :t]
  dk_BSKH = dk_BKSH.transpose(0, 2, 1, 3)[:, :s]
  dv_BSKH = dv_BKSH.transpose(0, 2, 1, 3)[:, :s]
  return (dq_BTNH.astype(q_BTNH.dtype), dk_BSKH.astype(k_BSKH.dtype),
          dv_BSKH.astype(v_BSKH.dtype), None)


_attention.defvjp(_attention_fwd, _attention_bwd)


def blockwise_attention(q_BTNH: jax.Array, k_BSKH: jax.Array, v_BSKH: jax.Array, *,
                        mask: jax.Array | None = None, causal: bool = False,
                        block_q: int | None = None, block_k: int | None = None) -> jax.Array:
  """softmax(q k^T / sqrt(H)) v without materialising the scores; see the module docstring.

  ``mask``: boolean, broadcastable to [B, N, T, S] (True = attend). Blocks default to
  ``DEFAULT_BLOCK_Q`` / ``DEFAULT_BLOCK_K`` capped at the (rounded-up) lengths.
  """
  t, n = q_BTNH.shape[1], q_BTNH.shape[2]
  s, kh = k_BSKH.shape[1], k_BSKH.shape[2]
  if n % kh:
    raise ValueError(f"query heads ({n}) must be a multiple of key/value heads ({kh})")
  if v_BSKH.shape != k_BSKH.shape:
    raise ValueError(f"values {v_BSKH.shape} and keys {k_BSKH.shape} differ in shape")
  block_q = _block(DEFAULT_BLOCK_Q if block_q is None else block_q, t, "block_q")
  block_k = _block(DEFAULT_BLOCK_K if block_k is None else block_k, s, "block_k")
  return _attention(q_BTNH, k_BSKH, v_BSKH, mask, causal, block_q, block_k)


def _block(block: int, length: int, name: str) -> int:
  """The block size for a sequence of ``length``: ``block``, or the length rounded up to a
  multiple of 8 when shorter (one block, little padding)."""
  if block <= 0:
    raise ConfigError(f"{name} must be positive, got {block}")
  return min(block, -(-length // 8) * 8)
