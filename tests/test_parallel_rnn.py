"""minGRU / minLSTM / LRU: associative scan == sequential scan, both == a numpy loop over the
papers' equations, padding, and the LRU's eigenvalue initialisation on the ring."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqgen_jax.nn import parallel_rnn as prnn

B, T, IN, H = 3, 9, 4, 5
LAYERS = {
    "mingru": lambda **kw: prnn.MinGRU(H, **kw),
    "mingru_log": lambda **kw: prnn.MinGRU(H, log_space=True, **kw),
    "minlstm": lambda **kw: prnn.MinLSTM(H, **kw),
    "minlstm_log": lambda **kw: prnn.MinLSTM(H, log_space=True, **kw),
    "lru": lambda **kw: prnn.LRU(H, r_min=0.4, max_phase=math.pi, **kw),
}


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _g(x):
  return np.where(x >= 0, x + 0.5, _sigmoid(x))


def _numpy_reference(kind, p, x, mask, h0, reverse):
  """The papers' recurrences as a plain loop (float64), masked steps keeping the state."""
  x = np.asarray(x, np.float64)
  if kind == "lru":
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    bmat = (p["B_re"] + 1j * p["B_im"]) * np.exp(p["gamma_log"])  # x @ (gamma * B)
    cmat = p["C_re"] + 1j * p["C_im"]
  else:
    k = x @ np.asarray(p["proj"]["kernel"], np.float64) + p["proj"]["bias"]
  h = np.array(h0, np.complex128 if kind == "lru" else np.float64)
  y = np.zeros((B, T, IN if kind == "lru" else H))
  for t in (range(T - 1, -1, -1) if reverse else range(T)):
    if kind == "lru":
      new = lam * h + x[:, t] @ bmat
      out = (new @ cmat).real + p["D"] * x[:, t]
    else:
      if kind.startswith("mingru"):
        kz, kh = np.split(k[:, t], 2, axis=-1)
        z = _sigmoid(kz)
        cand = _g(kh) if kind.endswith("log") else kh
        new = (1 - z) * h + z * cand
      else:
        kf, ki, kh = np.split(k[:, t], 3, axis=-1)
        f, i = _sigmoid(kf), _sigmoid(ki)
        cand = _g(kh) if kind.endswith("log") else kh
        new = f / (f + i) * h + i / (f + i) * cand
      out = new
    m = mask[:, t][:, None]
    h = np.where(m, new, h)
    y[:, t] = np.where(m, out, 0.0)
  return y, h


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(B, T, IN)).astype(np.float32)
  mask = np.arange(T)[None] < np.array([9, 4, 6])[:, None]
  return x, mask


@pytest.mark.parametrize("kind, reverse", [(k, False) for k in LAYERS]
                         + [("minlstm_log", True), ("lru", True)])
def test_associative_equals_sequential_equals_paper_loop(kind, reverse, inputs):
  x, mask = inputs
  assoc = LAYERS[kind](reverse=reverse)
  seq = LAYERS[kind](reverse=reverse, scan_impl="sequential")
  params = jax.jit(assoc.init)(jax.random.PRNGKey(1), x)
  h0 = np.random.default_rng(2).normal(size=(B, H)).astype(np.float32)
  if kind == "lru":
    h0 = h0 + 1j * np.random.default_rng(3).normal(size=(B, H)).astype(np.float32)

  def loss(p, x, m):
    y, h = m.apply(p, x, mask, h0)
    return jnp.sum(y ** 2) + jnp.sum(jnp.abs(h) ** 2), (y, h)

  grad = lambda m: jax.jit(jax.grad(lambda p, x: loss(p, x, m), (0, 1), has_aux=True))
  (g_a, (y_a, h_a)), (g_s, (y_s, h_s)) = grad(assoc)(params, x), grad(seq)(params, x)
  for a, s in zip(jax.tree.leaves((y_a, h_a)), jax.tree.leaves((y_s, h_s))):
    np.testing.assert_allclose(a, s, rtol=2e-5, atol=2e-6)
  # A gradient entry is a float32 sum over batch and time whose terms the two scans round in
  # different orders (the associative one multiplies decay powers pairwise), so an entry that
  # cancels to well below its leaf's scale is compared at that scale.
  for a, s in zip(jax.tree.leaves(g_a), jax.tree.leaves(g_s)):
    np.testing.assert_allclose(a, s, rtol=2e-5, atol=2e-5 * float(np.max(np.abs(s))))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
  y_ref, h_ref = _numpy_reference(kind, p, x, mask, h0, reverse)
  np.testing.assert_allclose(y_a, y_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(h_a, h_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["mingru_log", "minlstm", "lru"])
def test_padded_batch_equals_each_sequence_alone(kind, inputs):
  x, mask = inputs
  layer = LAYERS[kind]()
  params = jax.jit(layer.init)(jax.random.PRNGKey(1), x)
  apply = jax.jit(layer.apply)
  y, h = apply(params, np.where(mask[..., None], x, 50.0), mask)
  for i, n in enumerate(mask.sum(1)):
    y_i, h_i = apply(params, x[i:i + 1, :n], np.ones((1, n), bool))
    np.testing.assert_allclose(y[i, :n], y_i[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h[i], h_i[0], rtol=1e-5, atol=1e-6)


def test_lru_eigenvalues_start_on_the_ring_with_gamma_normalisation():
  layer = prnn.LRU(2048, r_min=0.5, r_max=0.9, max_phase=math.pi / 2)
  p = jax.jit(layer.init)(jax.random.PRNGKey(0), jnp.zeros((1, 2, 3)))["params"]
  lam = np.exp(-np.exp(np.asarray(p["nu_log"], np.float64))
               + 1j * np.exp(np.asarray(p["theta_log"], np.float64)))
  r, phase = np.abs(lam), np.angle(lam)
  assert 0.5 <= r.min() and r.max() <= 0.9 and 0 <= phase.min() and phase.max() <= math.pi / 2
  # uniform on the ring: the area fraction (r^2 - r_min^2) / (r_max^2 - r_min^2) is U(0, 1)
  frac = (r ** 2 - 0.25) / (0.81 - 0.25)
  assert abs(frac.mean() - 0.5) < 0.03 and abs(np.median(phase) - math.pi / 4) < 0.1
  np.testing.assert_allclose(np.exp(p["gamma_log"]), np.sqrt(1 - r ** 2), rtol=1e-5)
