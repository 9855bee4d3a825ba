"""Task "autoencoder": trains the KL autoencoder of latent diffusion on an image dataset.

The model is ``nn.autoencoder.AutoencoderKL`` (``config.model.name = "autoencoder_kl"``; fields
ch, ch_mult, num_res_blocks, attn_resolutions, z_channels, norm_groups). Images are scaled to
[-1, 1]. Loss: LDM's reconstruction (``config.autoencoder.rec_loss`` l1 | l2, summed over
pixels) + ``config.autoencoder.kl_weight`` x KL(q(z|x) || N(0, I)) on a posterior sample, both
batch means; no perceptual or GAN terms (see nn/autoencoder.py). Eval on the test split:
per-pixel MSE and PSNR of the mean reconstruction (pixels in [0, 1]), L1, KL per example. The
sample hook logs a grid of test images (odd rows) over their reconstructions (even rows).
A finished run is the ``config.latent.autoencoder_workdir`` of the "diffusion" task.

Axis key: B batch, H height, W width, C channels; h, w, Z: the latent grid and channels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seqgen_jax.data import images
from seqgen_jax.data.builder import DataOptions
from seqgen_jax.data.image_ops import image_grid, to_model_range, to_uint8
from seqgen_jax.dtypes import compute_dtype_from_name
from seqgen_jax.errors import ConfigError
from seqgen_jax.nn import autoencoder as ae
from seqgen_jax.registry import TASKS
from seqgen_jax.train.task import Task

AE_FIELDS = ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "z_channels", "norm_groups")


def build_autoencoder(cfg: ml_collections.ConfigDict, in_channels: int,
                      dtype: jnp.dtype | None = None) -> ae.AutoencoderKL:
  """AutoencoderKL from ``config.model`` (name must be "autoencoder_kl")."""
  if cfg.get("name") != "autoencoder_kl":
    raise ConfigError(f"task 'autoencoder' trains model 'autoencoder_kl', got "
                      f"'{cfg.get('name')}'")
  kw = {k: (tuple(cfg[k]) if k in ("ch_mult", "attn_resolutions") else cfg[k])
        for k in AE_FIELDS if k in cfg}
  return ae.AutoencoderKL(in_channels=in_channels, dtype=dtype, **kw)


@TASKS.register("autoencoder")
class AutoencoderTask(Task):
  """KL autoencoder on MNIST / Fashion-MNIST / CIFAR-10 (reconstruction + small KL)."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    acfg = config.get("autoencoder", ml_collections.ConfigDict())
    self.kl_weight = float(acfg.get("kl_weight", 1e-6))
    self.rec_loss = acfg.get("rec_loss", "l1")
    if self.rec_loss not in ("l1", "l2"):
      raise ConfigError(f"autoencoder.rec_loss must be 'l1' or 'l2', got '{self.rec_loss}'")
    eval_bs = config.get("eval", {}).get("batch_size", None) or config.train.batch_size
    self.data = images.load(config.data.name, DataOptions.from_config(config.data),
                            batch_size=config.train.batch_size, eval_batch_size=eval_bs,
                            seed=config.train.seed)
    dtype = compute_dtype_from_name(config.train.get("compute_dtype", "float32"))
    self.model = build_autoencoder(config.model, self.data.image_shape[-1], dtype)

  def init_params(self, rng):
    x_BHWC = jnp.zeros((1, *self.data.image_shape), jnp.float32)
    return self.model.init({"params": rng}, x_BHWC)["params"]

  def loss_fn(self, params, batch, rng):
    x_BHWC = to_model_range(batch["image"])
    recon_BHWC, mean_BhwZ, logvar_BhwZ = self.model.apply({"params": params}, x_BHWC, rng)
    w_B = batch["weight"]
    rec_B = ae.reconstruction_error(x_BHWC, recon_BHWC, self.rec_loss)
    kl_B = ae.kl_divergence(mean_BhwZ, logvar_BhwZ)
    total = jnp.maximum(jnp.sum(w_B), 1e-9)
    loss = jnp.sum((rec_B + self.kl_weight * kl_B) * w_B) / total
    return loss, {"rec": jnp.sum(rec_B * w_B) / total, "kl": jnp.sum(kl_B * w_B) / total,
                  "weight": jnp.sum(w_B)}

  def eval_step(self, params, batch):
    x_BHWC = to_model_range(batch["image"])
    recon_BHWC, mean_BhwZ, logvar_BhwZ = self.model.apply({"params": params}, x_BHWC)
    w_B = batch["weight"]
    d = np.prod(x_BHWC.shape[1:])
    # Pixels in [0, 1] for MSE / PSNR, the usual convention.
    se_B = ae.reconstruction_error((x_BHWC + 1) / 2, (jnp.clip(recon_BHWC, -1, 1) + 1) / 2,
                                   "l2") / d
    return {"mse": jnp.sum(se_B * w_B), "psnr": jnp.sum(-10 * jnp.log10(se_B + 1e-12) * w_B),
            "l1": jnp.sum(ae.reconstruction_error(x_BHWC, recon_BHWC, "l1") / d * w_B),
            "kl": jnp.sum(ae.kl_divergence(mean_BhwZ, logvar_BhwZ) * w_B),
            "count": jnp.sum(w_B)}

  def finalize_eval(self, sums):
    n = max(float(sums["count"]), 1e-9)
    return {k: float(sums[k]) / n for k in ("mse", "psnr", "l1", "kl")}

  def train_source(self):
    return self.data.train

  def eval_source(self):
    n = self.config.get("eval", {}).get("num_batches", 0)
    full = self.data.eval_batches
    return self.data.eval, (full if n <= 0 else min(n, full))

  def sample(self, params, rng):
    del rng
    batch = self.data.eval.batch(0, slice(0, min(16, self.data.eval.global_batch_size)))
    x_BHWC = to_model_range(jnp.asarray(batch["image"]))
    recon_BHWC = jax.jit(lambda p, x: self.model.apply({"params": p}, x)[0])(params, x_BHWC)
    n = x_BHWC.shape[0]
    cols = min(8, n)
    n -= n % cols
    orig_BHWC, rec_BHWC = batch["image"][:n], to_uint8(recon_BHWC)[:n]
    rows = [r for i in range(0, n, cols) for r in (orig_BHWC[i:i + cols], rec_BHWC[i:i + cols])]
    return {"reconstructions": image_grid(np.concatenate(rows), cols=cols)}
