"""Fréchet distance and feature statistics (seqgen_jax/eval/fid.py) against closed forms.

Tests that need a trained feature network and the real MNIST files are in
tests/test_image_classify.py (they share its training run).
"""

import numpy as np
import pytest

from seqgen_jax.errors import DataError
from seqgen_jax.eval import fid


def _random_rotation(rng, d):
  q, r = np.linalg.qr(rng.normal(size=(d, d)))
  return q * np.sign(np.diag(r))


def _psd_sqrt(a):
  """Symmetric PSD square root by eigendecomposition (independent of scipy's sqrtm)."""
  w, v = np.linalg.eigh(a)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_commuting_covariances_match_the_closed_form():
  # Covariances with one eigenbasis Q: FD = ||mu1 - mu2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
  rng = np.random.default_rng(0)
  d = 7
  q = _random_rotation(rng, d)
  a, b = rng.uniform(0.1, 4.0, d), rng.uniform(0.1, 4.0, d)
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = fid.frechet_distance(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T)
  assert got == pytest.approx(want, rel=1e-9)
  # Diagonal covariances, and the one-dimensional case (plain scalars).
  assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-9)
  assert fid.frechet_distance(1.0, 4.0, -2.0, 9.0) == pytest.approx(9.0 + 1.0, rel=1e-12)


def test_non_commuting_covariances_match_the_wasserstein_form():
  # FD is the 2-Wasserstein distance between the Gaussians:
  # tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), computed here by symmetric eigendecompositions.
  rng = np.random.default_rng(1)
  d = 6
  x, y = rng.normal(size=(d, 2 * d)), rng.normal(size=(d, 2 * d))
  s1, s2 = x @ x.T / d, y @ y.T / d
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  r1 = _psd_sqrt(s1)
  want = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * _psd_sqrt(r1 @ s2 @ r1))
  assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-8)
  assert fid.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_two_large_samples_of_one_gaussian_are_close():
  rng = np.random.default_rng(2)
  d, n = 8, 40_000
  chol = rng.normal(size=(d, d)) / np.sqrt(d)
  mu = rng.normal(size=d)
  draw = lambda: mu + rng.normal(size=(n, d)) @ chol.T
  same = fid.frechet_distance(*fid.statistics(draw()), *fid.statistics(draw()))
  shifted = draw()
  shifted[:, 0] += 0.5  # moves the mean by 0.5: FD grows by 0.25
  moved = fid.frechet_distance(*fid.statistics(draw()), *fid.statistics(shifted))
  assert same < 5e-3
  assert moved == pytest.approx(0.25, abs=0.02)


def test_statistics_are_float64_mean_and_unbiased_covariance():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(9, 3)).astype(np.float32)
  mu, sigma = fid.statistics(x)
  assert mu.dtype == sigma.dtype == np.float64
  xs = x.astype(np.float64)
  want_mu = [sum(row[j] for row in xs) / 9 for j in range(3)]
  want_sigma = [[sum((row[i] - want_mu[i]) * (row[j] - want_mu[j]) for row in xs) / 8
                 for j in range(3)] for i in range(3)]
  np.testing.assert_allclose(mu, want_mu, rtol=1e-12)
  np.testing.assert_allclose(sigma, want_sigma, rtol=1e-12)


def test_singular_covariances_stay_finite():
  # Fewer samples than features: both covariances are singular, so is their product.
  rng = np.random.default_rng(4)
  a, b = rng.normal(size=(5, 12)), rng.normal(size=(5, 12))
  d_ab = fid.frechet_distance(*fid.statistics(a), *fid.statistics(b))
  assert np.isfinite(d_ab) and d_ab > 0
  assert fid.frechet_distance(*fid.statistics(a), *fid.statistics(a)) < 1e-3


def test_bad_statistics_are_one_line_errors():
  with pytest.raises(DataError, match="mismatched statistics"):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(DataError, match=r"need features of shape \[N >= 2, D\]"):
    fid.statistics(np.zeros((1, 4)))
