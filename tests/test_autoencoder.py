"""KL autoencoder for latent diffusion: shapes, loss pieces against torch, a few-step overfit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from seqgen_jax.nn.autoencoder import (
    AutoencoderKL,
    kl_divergence,
    reconstruction_error,
    sample_posterior,
    vae_loss,
)


@pytest.mark.parametrize("hw,c,mult,latent", [((28, 28), 1, (1, 2, 2), (7, 7)),
                                              ((32, 32), 3, (1, 2, 2, 2), (4, 4))])
def test_autoencoder_shapes(hw, c, mult, latent):
  """f = 2^(levels-1): MNIST 28x28 -> 7x7 with f=4, CIFAR 32x32 -> 4x4 with f=8."""
  ae = AutoencoderKL(in_channels=c, ch=32, ch_mult=mult, z_channels=4)
  x = jax.ShapeDtypeStruct((2, *hw, c), jnp.float32)
  params = jax.eval_shape(ae.init, jax.random.key(0), x)
  mean, logvar = jax.eval_shape(lambda p, x: ae.apply(p, x, method="encode"), params, x)
  assert mean.shape == logvar.shape == (2, *latent, 4)
  assert ae.downsample_factor == 2 ** (len(mult) - 1)
  recon = jax.eval_shape(lambda p, z: ae.apply(p, z, method="decode"), params, mean)
  assert recon.shape == (2, *hw, c) and recon.dtype == jnp.float32


def test_loss_pieces_match_torch():
  rs = np.random.RandomState(0)
  mean, logvar = rs.randn(3, 2, 2, 4), rs.randn(3, 2, 2, 4)
  want = torch.distributions.kl_divergence(
      torch.distributions.Normal(torch.tensor(mean), torch.tensor(np.exp(0.5 * logvar))),
      torch.distributions.Normal(0.0, 1.0)).sum((1, 2, 3)).numpy()
  np.testing.assert_allclose(kl_divergence(jnp.asarray(mean), jnp.asarray(logvar)), want,
                             rtol=1e-5)
  x, y = rs.randn(3, 4, 4, 1), rs.randn(3, 4, 4, 1)
  np.testing.assert_allclose(reconstruction_error(x, y, "l1"), np.abs(x - y).sum((1, 2, 3)),
                             rtol=1e-5)
  np.testing.assert_allclose(reconstruction_error(x, y, "l2"), ((x - y) ** 2).sum((1, 2, 3)),
                             rtol=1e-5)
  z = sample_posterior(jax.random.key(0), jnp.full((20000,), 2.0), jnp.full((20000,), np.log(0.25)))
  assert abs(float(z.mean()) - 2.0) < 0.02 and abs(float(z.std()) - 0.5) < 0.02


def test_autoencoder_overfits_a_tiny_batch():
  """30 Adam steps on 4 smooth 16x16 images: the VAE loss falls to under a third."""
  ae = AutoencoderKL(in_channels=1, ch=16, ch_mult=(1, 2), z_channels=2, norm_groups=8)
  grid = np.linspace(-1, 1, 16)
  x = np.stack([np.sin(3 * k * grid[:, None]) * np.cos(2 * grid[None, :] + k)
                for k in range(4)])[..., None].astype(np.float32)
  params = jax.jit(ae.init)(jax.random.key(0), x)
  tx = optax.adam(2e-3)

  def loss_fn(p, rng):
    recon, mean, logvar = ae.apply(p, x, rng)
    return vae_loss(x, recon, mean, logvar, kl_weight=1e-3)[0]

  @jax.jit
  def step(p, opt, rng):
    loss, g = jax.value_and_grad(loss_fn)(p, rng)
    upd, opt = tx.update(g, opt, p)
    return optax.apply_updates(p, upd), opt, loss

  opt = tx.init(params)
  losses = []
  for i in range(30):
    params, opt, loss = step(params, opt, jax.random.key(i))
    losses.append(float(loss))
  assert np.isfinite(losses).all()
  assert np.mean(losses[-5:]) < losses[0] / 3, losses
