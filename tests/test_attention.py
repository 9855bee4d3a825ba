"""Attention: XLA path against a numpy loop (MHA / GQA / MQA, masks), rotary against complex
arithmetic, backend choice and its error messages, and XLA == cuDNN on a GPU."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqgen_jax.errors import ConfigError
from seqgen_jax.nn import attention
from seqgen_jax.nn.attention import dot_product_attention
from seqgen_jax.nn.embeddings import apply_rotary


def _np_attention(q, k, v, mask_BTS):
  """Plain loops over batch and heads; query head n reads key/value head n // (N / K)."""
  b, t, n, h = q.shape
  g = n // k.shape[2]
  out = np.zeros_like(q, dtype=np.float64)
  for bi in range(b):
    for ni in range(n):
      logits = q[bi, :, ni] @ k[bi, :, ni // g].T / np.sqrt(h)
      logits = np.where(mask_BTS[bi], logits, -np.inf)
      p = np.exp(logits - logits.max(-1, keepdims=True))
      out[bi, :, ni] = (p / p.sum(-1, keepdims=True)) @ v[bi, :, ni // g]
  return out


@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # MHA, GQA, MQA
def test_xla_attention_matches_numpy_loop(kv_heads):
  rng = np.random.default_rng(kv_heads)
  b, t, s, n, h = 2, 5, 7, 4, 8
  q = rng.normal(size=(b, t, n, h)).astype(np.float32)
  k = rng.normal(size=(b, s, kv_heads, h)).astype(np.float32)
  v = rng.normal(size=(b, s, kv_heads, h)).astype(np.float32)
  keep_BS = np.ones((b, s), bool)
  keep_BS[1, :2] = False  # left padding in row 1
  causal_TS = np.arange(s)[None, :] <= np.arange(t)[:, None] + (s - t)  # keys end-aligned
  want = _np_attention(q, k, v, keep_BS[:, None, :] & causal_TS[None])
  got = dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                              mask=attention.padding_mask(keep_BS), causal=True)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  # "auto" on a machine without a usable cuDNN is the XLA path, bit for bit.
  auto = dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                               mask=attention.padding_mask(keep_BS), causal=True,
                               implementation="auto")
  if attention.cudnn_unsupported_reason(jnp.asarray(q), jnp.asarray(k)) is not None:
    np.testing.assert_array_equal(np.asarray(auto), np.asarray(got))


def test_masked_keys_and_values_have_no_influence():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(1, 4, 2, 8)), jnp.float32) for _ in range(3))
  keep = jnp.array([[True, True, False, True]])
  out = dot_product_attention(q, k, v, mask=attention.padding_mask(keep))
  k2, v2 = k.at[:, 2].set(100.0), v.at[:, 2].set(-100.0)
  out2 = dot_product_attention(q, k2, v2, mask=attention.padding_mask(keep))
  np.testing.assert_array_equal(np.asarray(out), np.asarray(out2))


def test_rotary_matches_complex_rotation_and_depends_on_offsets_only():
  rng = np.random.default_rng(1)
  h = 8
  x = rng.normal(size=(1, 6, 2, h)).astype(np.float32)
  pos = np.array([[0, 1, 2, 5, 9, 100]])
  got = np.asarray(apply_rotary(jnp.asarray(x), jnp.asarray(pos)))
  # Reference: feature pair (i, i + H/2) as the complex number x_i + j x_{i+H/2}, times e^{j*a}.
  z = x[..., : h // 2] + 1j * x[..., h // 2:]
  ang = pos[:, :, None, None] * 10_000.0 ** (-np.arange(0, h, 2) / h)
  zr = z * np.exp(1j * ang)
  np.testing.assert_allclose(got, np.concatenate([zr.real, zr.imag], -1), rtol=1e-5, atol=1e-5)
  # <rot(q, m), rot(k, n)> depends on m - n only.
  q, k = (jnp.asarray(rng.normal(size=(1, 1, 1, h)), jnp.float32) for _ in range(2))
  dot = lambda m, n: float(jnp.sum(apply_rotary(q, jnp.array([[m]])) *
                                   apply_rotary(k, jnp.array([[n]]))))
  assert abs(dot(3, 1) - dot(10, 8)) < 1e-5 and abs(dot(3, 1) - dot(1, 3)) > 1e-3


def test_backend_names_and_cudnn_refusal_are_one_line_errors():
  q = jnp.zeros((1, 4, 2, 8))
  with pytest.raises(ConfigError, match="unknown attention implementation 'flash'; choose one "
                                         "of: xla, blockwise, cudnn, auto"):
    dot_product_attention(q, q, q, implementation="flash")
  if jax.default_backend() != "gpu":
    with pytest.raises(ConfigError, match="cuDNN attention cannot serve this call: the JAX "
                                           "backend is 'cpu'.*use attention implementation"):
      dot_product_attention(q, q, q, implementation="cudnn")


def test_cudnn_reasons_on_a_pretend_gpu(monkeypatch):
  """The checks after "is there a GPU" name the offending property."""
  dev = types.SimpleNamespace(compute_capability="9.0",
                              client=types.SimpleNamespace(platform_version="cuda 12.8"))
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(jax, "devices", lambda *a: [dev])
  reason = lambda dtype, h=64, **kw: attention.cudnn_unsupported_reason(
      jnp.zeros((1, 4, 2, h), dtype), jnp.zeros((1, 4, 2, h), dtype), **kw)
  assert reason(jnp.bfloat16) is None
  assert "dtype float32" in reason(jnp.float32)
  assert "head size 260" in reason(jnp.bfloat16, h=260)
  assert "head size 20" in reason(jnp.bfloat16, h=20)
  assert "attention dropout 0.1" in reason(jnp.float16, dropout_rate=0.1)
  dev.compute_capability = "7.5"
  assert "compute capability 7.5 < 8.0" in reason(jnp.bfloat16)


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() != "gpu",
                    reason="cuDNN attention needs an NVIDIA GPU; this run has none")
def test_xla_and_cudnn_attention_agree_forward_and_backward():
  rng = jax.random.split(jax.random.PRNGKey(0), 3)
  b, t, n, kh, h = 2, 256, 8, 2, 64
  q = jax.random.normal(rng[0], (b, t, n, h), jnp.bfloat16)
  k = jax.random.normal(rng[1], (b, t, kh, h), jnp.bfloat16)
  v = jax.random.normal(rng[2], (b, t, kh, h), jnp.bfloat16)
  reason = attention.cudnn_unsupported_reason(q, k)
  if reason:
    pytest.skip(f"this GPU cannot run cuDNN attention: {reason}")
  keep = attention.padding_mask(jnp.arange(t)[None, :] < jnp.array([[t], [200]]))
  for kw in (dict(causal=True), dict(mask=keep), dict(mask=keep, causal=True)):
    def loss(q, k, v, impl, kw=kw):
      out = dot_product_attention(q, k, v, implementation=impl, **kw)
      return jnp.sum(out.astype(jnp.float32) ** 2), out
    (lx, ox), gx = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, "xla")
    (lc, oc), gc = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, "cudnn")
    np.testing.assert_allclose(np.asarray(oc, np.float32), np.asarray(ox, np.float32),
                               atol=2e-2, rtol=2e-2)  # bf16 inputs and outputs
    for a, c in zip(gx, gc):
      a, c = np.asarray(a, np.float32), np.asarray(c, np.float32)
      assert np.max(np.abs(a - c)) <= 2e-2 * max(1.0, np.max(np.abs(a)))
