"""Scaled dot-product attention: masks, multi-head / grouped-query, cross-attention, KV cache.

Three backends sit behind one argument, ``implementation``:
  * ``"xla"``: the einsum reference below (float32 logits and softmax, attention dropout); it
    materialises the [T, S] scores, so its memory grows with T * S.
  * ``"blockwise"``: FlashAttention-2's algorithm in pure JAX (nn/blockwise_attention.py): online
    softmax over key blocks, causal block skipping, a custom VJP that recomputes the
    probabilities; memory O(T). Any backend, any dtype (float32 accumulation), no dropout.
  * ``"cudnn"``: ``jax.nn.dot_product_attention(..., implementation="cudnn")``, cuDNN's fused
    flash-attention kernel (NVIDIA GPU, compute capability >= 8.0, bf16/fp16, no dropout). Asking
    for it where it cannot serve raises a one-line ConfigError that says why.
  * ``"auto"``: cuDNN when it can serve the call; otherwise blockwise when there are at least
    ``AUTO_BLOCKWISE_MIN_KEYS`` keys and no dropout (where it measured faster than XLA, see
    experiments/bench/attention_tflops.py), XLA otherwise.

Axis key: B batch, T query positions, S key/value positions, N query heads, K key/value heads
(N = K * G for grouped-query attention), G query heads per key/value head, H head width,
D model width.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqgen_jax.errors import ConfigError
from seqgen_jax.nn.blockwise_attention import blockwise_attention
from seqgen_jax.nn.embeddings import apply_rotary

IMPLEMENTATIONS = ("xla", "blockwise", "cudnn", "auto")
# "auto" takes the blockwise path from this many keys on (when cuDNN cannot serve the call).
AUTO_BLOCKWISE_MIN_KEYS = 1024


def causal_mask(t: int, s: int | None = None) -> jax.Array:
  """[T, S] boolean, True where query t may attend key s (s <= t, keys aligned to the end)."""
  s = t if s is None else s
  return jnp.arange(s)[None, :] <= jnp.arange(t)[:, None] + (s - t)


def check_implementation(name: str) -> str:
  """Returns ``name`` if it is a known attention backend, else a one-line ConfigError."""
  if name not in IMPLEMENTATIONS:
    raise ConfigError(f"unknown attention implementation '{name}'; choose one of: "
                      f"{', '.join(IMPLEMENTATIONS)}")
  return name


def cudnn_unsupported_reason(q_BTNH: jax.Array, k_BSKH: jax.Array, *, dropout_rate: float = 0.0,
                             has_mask: bool = False) -> str | None:
  """Why cuDNN's fused attention cannot serve this call, or None if it can.

  Mirrors the checks in jax._src.cudnn.fused_attention_stablehlo so that the error is raised
  here, in one line, instead of deep inside lowering.
  """
  backend = jax.default_backend()
  if backend != "gpu":
    return f"the JAX backend is '{backend}', and cuDNN attention needs an NVIDIA GPU"
  dev = jax.devices()[0]
  if "cuda" not in getattr(dev.client, "platform_version", "cuda").lower():
    return "the GPU is not a CUDA device (cuDNN attention is NVIDIA-only)"
  cc = tuple(int(x) for x in str(getattr(dev, "compute_capability", "0.0")).split("."))
  if cc < (8, 0):
    return f"GPU compute capability {'.'.join(map(str, cc))} < 8.0 (needs Ampere or newer)"
  if q_BTNH.dtype not in (jnp.bfloat16, jnp.float16):
    return f"dtype {q_BTNH.dtype} (cuDNN attention takes bfloat16 or float16)"
  if k_BSKH.dtype != q_BTNH.dtype:
    return f"query dtype {q_BTNH.dtype} differs from key dtype {k_BSKH.dtype}"
  h, h_max = q_BTNH.shape[-1], 256 if cc >= (9, 0) else 128
  if h > h_max or h % 8:
    return f"head size {h} (cuDNN attention needs a multiple of 8 that is <= {h_max})"
  if dropout_rate > 0.0:
    return (f"attention dropout {dropout_rate} (jax.nn.dot_product_attention has no dropout; "
            "set the attention dropout to 0 in training)")
  t, s = q_BTNH.shape[1], k_BSKH.shape[1]
  if has_mask and (t % 2 or s % 2):
    # A boolean mask becomes a bias in cuDNN, whose backward pass needs even lengths.
    return f"a mask with odd sequence lengths (queries {t}, keys {s})"
  return None


def resolve_implementation(implementation: str, q_BTNH: jax.Array, k_BSKH: jax.Array, *,
                           dropout_rate: float = 0.0, has_mask: bool = False) -> str:
  """"xla", "blockwise" or "cudnn" for this call. "auto" picks cuDNN where it can serve, else
  blockwise for long key sequences without dropout, else XLA; an explicit backend that cannot
  serve the call is a one-line ConfigError naming the reason."""
  check_implementation(implementation)
  if implementation == "xla":
    return "xla"
  if implementation == "blockwise":
    if dropout_rate > 0.0:
      raise ConfigError(f"blockwise attention has no attention dropout (got {dropout_rate}); "
                        "set the attention dropout to 0 or use attention implementation 'xla'")
    return "blockwise"
  reason = cudnn_unsupported_reason(q_BTNH, k_BSKH, dropout_rate=dropout_rate, has_mask=has_mask)
  if reason is None:
    return "cudnn"
  if implementation == "auto":
    long_keys = k_BSKH.shape[1] >= AUTO_BLOCKWISE_MIN_KEYS
    return "blockwise" if long_keys and dropout_rate == 0.0 else "xla"
  raise ConfigError(f"cuDNN attention cannot serve this call: {reason}; "
                    "use attention implementation 'xla', 'blockwise' or 'auto'")


def _as_4d(mask: jax.Array) -> jax.Array:
  mask = jnp.asarray(mask, bool)
  return mask.reshape((1,) * (4 - mask.ndim) + mask.shape)


def _xla_attention(q_BTNH, k_BSKH, v_BSKH, mask, dropout_rate, dropout_rng):
  b, t, n, h = q_BTNH.shape
  kh = k_BSKH.shape[2]
  g = n // kh
  q_BTKGH = q_BTNH.reshape(b, t, kh, g, h)
  logits_BKGTS = jnp.einsum("btkgh,bskh->bkgts", q_BTKGH, k_BSKH,
                            preferred_element_type=jnp.float32) / math.sqrt(h)
  if mask is not None:
    m = _as_4d(mask)  # [B|1, N|1, T|1, S|1] -> [B|1, K|1, G|1, T|1, S|1]
    m = m[:, :, None] if m.shape[1] == 1 else m.reshape(m.shape[0], kh, g, *m.shape[2:])
    logits_BKGTS = jnp.where(m, logits_BKGTS, jnp.finfo(jnp.float32).min)
  probs_BKGTS = jax.nn.softmax(logits_BKGTS, axis=-1)
  if dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs_BKGTS.shape)
    probs_BKGTS = jnp.where(keep, probs_BKGTS / (1.0 - dropout_rate), 0.0)
  out_BTKGH = jnp.einsum("bkgts,bskh->btkgh", probs_BKGTS.astype(v_BSKH.dtype), v_BSKH)
  return out_BTKGH.reshape(b, t, n, h)


def _cudnn_attention(q_BTNH, k_BSKH, v_BSKH, mask, causal):
  t, s = q_BTNH.shape[1], k_BSKH.shape[1]
  if causal and t != s:
    # cuDNN's causal mask is aligned to the first key; ours to the last: pass it explicitly.
    cm = _as_4d(causal_mask(t, s))
    mask = cm if mask is None else jnp.logical_and(_as_4d(mask), cm)
    causal = False
  if mask is not None:
    m = _as_4d(mask)  # cuDNN turns the mask into a bias, which must be full-size in T and S
    mask = jnp.broadcast_to(m, (m.shape[0], m.shape[1], t, s))
  return jax.nn.dot_product_attention(q_BTNH, k_BSKH, v_BSKH, mask=mask, is_causal=causal,
                                      implementation="cudnn")


def dot_product_attention(q_BTNH: jax.Array, k_BSNH: jax.Array, v_BSNH: jax.Array, *,
                          mask: jax.Array | None = None, causal: bool = False,
                          dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None,
                          implementation: str = "xla") -> jax.Array:
  """softmax(q k^T / sqrt(H)) v with optional boolean mask (broadcastable to [B, N, T, S]).

  Keys and values may have fewer heads than the queries (grouped-query attention: query head n
  reads key/value head n // G). ``causal`` aligns the keys to the end (query t sees keys
  s <= t + S - T). With the XLA and blockwise backends the logits and the softmax are float32
  whatever the input dtype; ``implementation`` is "xla", "blockwise", "cudnn" or "auto" (see
  the module docstring).
  """
  n, kh = q_BTNH.shape[2], k_BSNH.shape[2]
  if n % kh:
    raise ValueError(f"query heads ({n}) must be a multiple of key/value heads ({kh})")
  impl = resolve_implementation(implementation, q_BTNH, k_BSNH, dropout_rate=dropout_rate,
                                has_mask=mask is not None)
  if impl == "cudnn":
    return _cudnn_attention(q_BTNH, k_BSNH, v_BSNH, mask, causal)
  if impl == "blockwise":
    return blockwise_attention(q_BTNH, k_BSNH, v_BSNH, mask=mask, causal=causal)
  if causal:
    cm = _as_4d(causal_mask(q_BTNH.shape[1], k_BSNH.shape[1]))
    mask = cm if mask is None else jnp.logical_and(_as_4d(mask), cm)
  return _xla_attention(q_BTNH, k_BSNH, v_BSNH, mask, dropout_rate, dropout_rng)


def padding_mask(mask_BS: jax.Array) -> jax.Array:
  """Key-padding mask [B, S] (True = real token) -> [B, 1, 1, S] for dot_product_attention."""
  return jnp.asarray(mask_BS, bool)[:, None, None, :]


class MultiHeadAttention(nn.Module):
  """Multi-head / grouped-query attention with self, cross and cached (incremental) modes.

  Self-attention uses one fused projection to N + 2K heads ([D, N + 2K, H]: queries, then keys,
  then values), so MHA costs one matmul; cross-attention projects queries (``q``) and the
  memory's keys/values (``kv``, [D, 2K, H]) separately, so that a decoder can project the memory
  once (``project_kv``) and reuse it at every step. ``rotary_base`` turns on rotary positions
  (self-attention only).
  """

  num_heads: int
  d_model: int
  num_kv_heads: int | None = None  # None: = num_heads (MHA); 1: multi-query
  head_dim: int | None = None  # None: d_model // num_heads
  self_attention: bool = True
  dropout: float = 0.0
  use_bias: bool = True
  init_std: float = 0.02
  out_init_std: float = 0.02
  rotary_base: float | None = None
  implementation: str = "xla"
  dtype: jnp.dtype | None = None

  def _dims(self) -> tuple[int, int, int]:
    n, k = self.num_heads, self.num_kv_heads or self.num_heads
    if n % k:
      raise ConfigError(f"num_heads={n} must be a multiple of num_kv_heads={k}")
    if self.head_dim is None and self.d_model % n:
      raise ConfigError(f"model width {self.d_model} is not divisible by num_heads={n}")
    return n, k, self.head_dim or self.d_model // n

  def setup(self):
    check_implementation(self.implementation)
    n, k, h = self._dims()
    dense = lambda feats, **kw: nn.DenseGeneral(
        feats, use_bias=self.use_bias, dtype=self.dtype,
        kernel_init=nn.initializers.normal(self.init_std), **kw)
    if self.self_attention:
      self.qkv = dense((n + 2 * k, h))
    else:
      self.q = dense((n, h))
      self.kv = dense((2 * k, h))
    self.out = nn.DenseGeneral(self.d_model, axis=(-2, -1), use_bias=self.use_bias,
                               dtype=self.dtype,
                               kernel_init=nn.initializers.normal(self.out_init_std))

  def _project_self(self, x_BTD, positions_BT):
    n, k, _ = self._dims()
    qkv_BTMH = self.qkv(x_BTD)
    q_BTNH, k_BTKH, v_BTKH = jnp.split(qkv_BTMH, [n, n + k], axis=2)
    if self.rotary_base is not None:
      q_BTNH = apply_rotary(q_BTNH, positions_BT, base=self.rotary_base)
      k_BTKH = apply_rotary(k_BTKH, positions_BT, base=self.rotary_base)
    return q_BTNH, k_BTKH, v_BTKH

  def _attend(self, q, k, v, *, mask, causal, deterministic, implementation):
    rate = 0.0 if deterministic else self.dropout
    out_BTNH = dot_product_attention(
        q, k, v, mask=mask, causal=causal, dropout_rate=rate,
        dropout_rng=self.make_rng("dropout") if rate > 0 else None,
        implementation=implementation)
    return self.out(out_BTNH)

  def __call__(self, x_BTD: jax.Array, *, mask: jax.Array | None = None, causal: bool = False,
               positions_BT: jax.Array | None = None, deterministic: bool = True) -> jax.Array:
    """Self-attention over the whole sequence; ``positions_BT`` (default 0..T-1) for rotary."""
    if positions_BT is None:
      positions_BT = jnp.arange(x_BTD.shape[1])[None, :]
    q, k, v = self._project_self(x_BTD, positions_BT)
    return self._attend(q, k, v, mask=mask, causal=causal, deterministic=deterministic,
                        implementation=self.implementation)

  def project_kv(self, memory_BSD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cross-attention keys and values of the memory, each [B, S, K, H]."""
    _, k, _ = self._dims()
    kv_BS2KH = self.kv(memory_BSD)
    return kv_BS2KH[:, :, :k], kv_BS2KH[:, :, k:]

  def cross(self, x_BTD: jax.Array, k_BSKH: jax.Array, v_BSKH: jax.Array, *,
            mask: jax.Array | None = None, deterministic: bool = True) -> jax.Array:
    """Cross-attention of ``x`` over projected memory keys/values (from ``project_kv``)."""
    return self._attend(self.q(x_BTD), k_BSKH, v_BSKH, mask=mask, causal=False,
                        deterministic=deterministic, implementation=self.implementation)

  def decode(self, x_BTD: jax.Array, cache: dict[str, jax.Array], position: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Causal self-attention of T new tokens at ``position`` over the cache; returns the output
    and the cache with their keys/values written in (cache leaves: [B, S_max, K, H])."""
    t, s = x_BTD.shape[1], cache["k"].shape[1]
    positions_BT = position + jnp.arange(t)[None, :]
    q, k, v = self._project_self(x_BTD, positions_BT)
    k_cache = jax.lax.dynamic_update_slice_in_dim(cache["k"], k.astype(cache["k"].dtype),
                                                  position, axis=1)
    v_cache = jax.lax.dynamic_update_slice_in_dim(cache["v"], v.astype(cache["v"].dtype),
                                                  position, axis=1)
    mask_TS = jnp.arange(s)[None, :] <= positions_BT[0][:, None]
    # A few-token query over a long cache gains nothing from the fused kernel, and cuDNN cannot
    # take odd lengths with a mask: an explicit "cudnn" model still decodes, through "auto".
    impl = "xla" if self.implementation == "xla" else "auto"
    out = self._attend(q, k_cache, v_cache, mask=mask_TS, causal=False, deterministic=True,
                       implementation=impl)
    return out, {"k": k_cache, "v": v_cache}


class SelfAttention(nn.Module):
  """Multi-head self-attention with a fused q/k/v projection ([D, 3, N, H] layout).

  The foundation's module, kept for code that uses it; new models use MultiHeadAttention.
  """

  num_heads: int
  dropout: float = 0.0
  use_bias: bool = True
  init_std: float = 0.02
  out_init_std: float = 0.02
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x_BTD: jax.Array, *, causal: bool, mask: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    d = x_BTD.shape[-1]
    if d % self.num_heads:
      raise ValueError(f"model width {d} is not divisible by num_heads={self.num_heads}")
    h = d // self.num_heads
    qkv_BT3NH = nn.DenseGeneral((3, self.num_heads, h), use_bias=self.use_bias, dtype=self.dtype,
                                kernel_init=nn.initializers.normal(self.init_std),
                                name="qkv")(x_BTD)
    q, k, v = (qkv_BT3NH[:, :, i] for i in range(3))
    rate = self.dropout if train else 0.0
    out_BTNH = dot_product_attention(
        q, k, v, mask=mask, causal=causal, dropout_rate=rate,
        dropout_rng=self.make_rng("dropout") if rate > 0 else None)
    return nn.DenseGeneral(d, axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype,
                           kernel_init=nn.initializers.normal(self.out_init_std),
                           name="out")(out_BTNH)
