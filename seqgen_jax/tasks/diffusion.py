"""Task "diffusion": trains and evaluates any ``kind="denoiser"`` model (unet, dit) on images.

Data: MNIST / Fashion-MNIST / CIFAR-10 (``seqgen_jax.data.images``), pixels scaled to [-1, 1]
(``data.image_size``: an integer area-downsampling first, e.g. 14 for a cascade's MNIST base).
Training: t ~ U{0..T-1} with the library's schedules (``diffusion.schedule`` linear | cosine,
``diffusion.num_timesteps``), target ``diffusion.prediction`` eps | x0 | v and loss weighting
``diffusion.weighting`` (simple | eps_mse | v_mse | min_snr, ``diffusion.min_snr_gamma``).
EMA is the loop's ``train.ema_decay``. Conditioning, ``cond.kind``:
  * ``none``;
  * ``label``: class labels, replaced by the null class with probability ``cond.p_uncond``
    (classifier-free guidance, weight ``cond.guidance`` = w at sampling: (1 + w) c - w null);
  * ``text``: templated captions of the labels (``seqgen_jax.data.captions``) through the
    denoiser's text encoder and cross-attention; the caption is dropped to [BOS] with
    probability ``cond.p_uncond``.
Modes:
  * latent diffusion, ``latent.autoencoder_workdir``: a finished "autoencoder" run; the denoiser
    learns z * scale with z ~ q(z|x) (scale = 1 / std of the first training latents, LDM's
    scale_factor), and samples are decoded to pixels;
  * super-resolution, ``sr.low_res_size > 0``: the U-Net gets cond "low_res" (the image
    area-downsampled to that size, noised to a level s ~ U{0..sr.aug_max_t-1} of the same
    schedule: noise-conditioning augmentation, Ho et al. 2022) and "low_res_t" = s; sampling
    uses s = ``sr.sample_aug_t``. With ``cascade.base_workdir`` (a finished base run at the low
    resolution) samples come from the cascade base -> SR (``cascade_sample``).
Fine-tuning, ``init.from_pretrained=DIR``: a diffusers UNet2DModel or DiTTransformer2DModel
(seqgen_jax.convert) becomes the denoiser (``config.model`` is replaced by its fields), without
text or low-res conditioning; label conditioning needs the checkpoint's number of classes.
Eval (test split, every ``train.eval_every``): the weighted training loss and the raw MSE at
stratified timesteps, per t-bucket (``eval.t_buckets``). Sample hook: a DDIM-50 grid from pure
noise (one row per class, guided when conditioned; a prompt grid for text; low-res / SR /
ground-truth rows for SR). ``final_eval``: bits/dim of ``eval.bpd_num_examples`` test images by
the probability-flow ODE (pixel space, linear schedule: its continuous VP-SDE limit) and, with
``eval.fid_classifier_workdir``, FID of ``eval.fid_num_samples`` samples against the test split
for each sampler in ``eval.fid_samplers`` ("ddim-50", "ddpm-1000", "dpm_solver_2m-20") and the
accuracy of the conditioned samples as judged by that classifier, at the guidance weight
``eval.fid_guidance`` (None: ``cond.guidance``). With ``eval.fid_sample_dir`` every batch of FID
samples is kept there, so a stopped evaluation resumes, and ``eval.fid_sample_shard`` = "i/k"
makes only every k-th batch, for k processes to share one evaluation (seqgen_jax/eval/
fid_samples.py).

Axis key: B batch, N samples, H height, W width, C channels (h, w: a super-resolution model's
low-res input), S text positions, T timesteps, K t-buckets of the eval.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

import seqgen_jax.nn  # noqa: F401  (registers the models)
from seqgen_jax.data import captions, images
from seqgen_jax.data.builder import DataOptions
from seqgen_jax.data.image_ops import area_downsample, image_grid, to_model_range, to_uint8
from seqgen_jax.diffusion import process, samplers, schedules, sde
from seqgen_jax.dtypes import compute_dtype_from_name
from seqgen_jax.errors import ConfigError
from seqgen_jax.eval import bpd, fid, fid_samples
from seqgen_jax.nn import autoencoder as ae
from seqgen_jax.registry import MODELS, TASKS
from seqgen_jax.tasks import pretrained
from seqgen_jax.tasks.autoencoder import build_autoencoder
from seqgen_jax.train.task import Task

PyTree = Any
COND_KINDS = ("none", "label", "text")
EVAL_KEY = 20_231_123  # eval noise / timesteps are fixed, so evals of one run are comparable
SCALE_BATCHES = 4  # training batches whose latents give the latent scale factor


@TASKS.register("diffusion")
class DiffusionTask(Task):
  """Image (or latent) diffusion with any denoiser; optional class / text / low-res cond."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    dc = config.get("diffusion", ml_collections.ConfigDict())
    self.prediction = process.check_prediction(dc.get("prediction", "eps"))
    self.weighting = dc.get("weighting", "simple")
    process.LOSS_WEIGHTINGS.get(self.weighting)
    self.gamma = float(dc.get("min_snr_gamma", 5.0))
    self.schedule_name = dc.get("schedule", "linear")
    self.schedule = schedules.make_schedule(self.schedule_name, dc.get("num_timesteps", 1000))
    self.T = self.schedule.num_timesteps
    cc = config.get("cond", ml_collections.ConfigDict())
    self.cond_kind = cc.get("kind", "none")
    if self.cond_kind not in COND_KINDS:
      raise ConfigError(f"unknown cond.kind '{self.cond_kind}'; choose one of: "
                        f"{', '.join(COND_KINDS)}")
    self.p_uncond = float(cc.get("p_uncond", 0.1))
    self.guidance = float(cc.get("guidance", 0.0))
    self.sample_cfg = config.get("sample", ml_collections.ConfigDict())
    self.eval_cfg = config.get("eval", ml_collections.ConfigDict())

    eval_bs = self.eval_cfg.get("batch_size", None) or config.train.batch_size
    self.data = images.load(config.data.name, DataOptions.from_config(config.data),
                            batch_size=config.train.batch_size, eval_batch_size=eval_bs,
                            seed=config.train.seed)
    self.dataset = config.data.name.replace("_official", "")
    h, w, c = self.data.image_shape
    self.image_size = int(config.data.get("image_size", 0) or h)
    area_downsample(jnp.zeros((1, h, w, c)), self.image_size)  # validates the size
    self.pixel_shape = (self.image_size, self.image_size, c)
    self.num_classes = self.data.num_classes
    self.captions = None
    if self.cond_kind == "text":
      self.captions = captions.CaptionBuilder(self.dataset)

    sc = config.get("sr", ml_collections.ConfigDict())
    self.low_res_size = int(sc.get("low_res_size", 0))
    self.aug_max_t = int(sc.get("aug_max_t", 0))
    self.sample_aug_t = int(sc.get("sample_aug_t", 0))
    if self.low_res_size:
      area_downsample(jnp.zeros((1, *self.pixel_shape)), self.low_res_size)
      if not 0 <= self.sample_aug_t < self.T or not 0 <= self.aug_max_t <= self.T:
        raise ConfigError(f"sr.aug_max_t must be in [0, {self.T}] and sr.sample_aug_t in "
                          f"[0, {self.T})")

    self.latent_dir = config.get("latent", {}).get("autoencoder_workdir", "") or ""
    self.dtype = compute_dtype_from_name(config.train.get("compute_dtype", "float32"))
    self.model_shape = self.pixel_shape
    if self.latent_dir:
      if self.low_res_size:
        raise ConfigError("latent diffusion and super-resolution (sr.low_res_size) cannot be "
                          "combined here")
      self._load_autoencoder()
    self.imported_params = None
    if config.get("init", {}).get("from_pretrained", ""):
      self.model = self._import_model(config)
    else:
      self.model = self._build_model(config.model)
    self.base = None
    base_dir = config.get("cascade", {}).get("base_workdir", "") or ""
    if base_dir:
      self._load_cascade_base(base_dir)
    self._jit_cache: dict[Any, Callable] = {}

  # ---------------------------------------------------------------- construction

  def _build_model(self, model_cfg):
    mcfg = ml_collections.ConfigDict(model_cfg.to_dict())
    if self.cond_kind == "text":
      tok = self.captions.tokenizer
      mcfg.text_vocab_size = tok.vocab_size
      mcfg.text_max_len = tok.max_len
    if self.low_res_size:
      if mcfg.name != "unet":
        raise ConfigError(f"super-resolution needs model 'unet' (low_res conditioning), got "
                          f"'{mcfg.name}'")
      mcfg.low_res_channels = self.pixel_shape[-1]
      mcfg.low_res_noise_cond = True
    build = MODELS.get(mcfg.name, kind="denoiser")
    return build(mcfg, image_shape=self.model_shape,
                 num_classes=self.num_classes if self.cond_kind == "label" else 0,
                 dtype=self.dtype)

  def _import_model(self, config: ml_collections.ConfigDict) -> Any:
    """config.init.from_pretrained: a diffusers UNet2DModel / DiTTransformer2DModel to fine-tune
    (label conditioning needs the checkpoint's classes; no text or low-res conditioning)."""
    source = config.init.from_pretrained
    if self.cond_kind == "text" or self.low_res_size:
      raise ConfigError(f"init.from_pretrained={source}: an imported denoiser has no text or "
                        "low-res conditioning (use cond.kind=none or label, no sr)")
    classes = self.num_classes if self.cond_kind == "label" else 0
    model, self.imported_params = pretrained.imported_model(
        config, "denoiser", dict(image_shape=self.model_shape, num_classes=classes),
        dtype=self.dtype)
    if config.model.get("learn_sigma", False):
      raise ConfigError(f"init.from_pretrained={source} predicts a learned variance too "
                        "(out_channels = 2 x in_channels), which this task does not train")
    return model

  def _load_autoencoder(self) -> None:
    ae_cfg = pretrained.load_config(self.latent_dir)
    self.ae_model = build_autoencoder(ae_cfg.model, self.pixel_shape[-1])
    self.ae_params, _ = pretrained.load_params(self.latent_dir)
    f = self.ae_model.downsample_factor
    h, w, _ = self.pixel_shape
    if h % f or w % f:
      raise ConfigError(f"the autoencoder downsamples by {f}, which does not divide {h}x{w}")
    self.model_shape = (h // f, w // f, self.ae_model.z_channels)
    # LDM's scale factor: 1 / std of the mean latents of the first training batches.
    enc = jax.jit(lambda p, x: self.ae_model.apply({"params": p}, x, method="encode")[0])
    zs = [enc(self.ae_params, self._pixels(jnp.asarray(self.data.train.batch(i, slice(
        0, self.data.train.global_batch_size))["image"]))) for i in range(SCALE_BATCHES)]
    self.latent_scale = float(ae.latent_scale_factor(jnp.concatenate(zs)))
    logging.info("latent diffusion: %s -> latents %s, scale factor %.4f", self.pixel_shape,
                 self.model_shape, self.latent_scale)

  def _load_cascade_base(self, base_dir: str) -> None:
    if not self.low_res_size:
      raise ConfigError("cascade.base_workdir needs a super-resolution model (sr.low_res_size)")
    base_cfg = pretrained.load_config(base_dir)
    self.base = TASKS.get(base_cfg.task)(base_cfg)
    if self.base.pixel_shape[:2] != (self.low_res_size, self.low_res_size):
      raise ConfigError(f"the cascade base makes {self.base.pixel_shape[:2]} images; this SR "
                        f"model takes {self.low_res_size}x{self.low_res_size}")
    self.base_params, _ = pretrained.load_params(base_dir)

  # ---------------------------------------------------------------- data -> model inputs

  def _pixels(self, image_BHWC: jax.Array) -> jax.Array:
    """uint8 images -> [-1, 1] at ``data.image_size``."""
    x_BHWC = to_model_range(image_BHWC)
    return (x_BHWC if x_BHWC.shape[1] == self.image_size
            else area_downsample(x_BHWC, self.image_size))

  def _encode(self, x_BHWC: jax.Array, rng: jax.Array | None) -> jax.Array:
    """Pixels -> what the denoiser models (scaled latents in latent mode)."""
    if not self.latent_dir:
      return x_BHWC
    mean_BHWC, logvar_BHWC = self.ae_model.apply({"params": self.ae_params}, x_BHWC,
                                                 method="encode")
    z_BHWC = (mean_BHWC if rng is None
              else ae.sample_posterior(rng, mean_BHWC, logvar_BHWC))
    return z_BHWC * self.latent_scale

  def decode(self, z_BHWC: jax.Array) -> jax.Array:
    """What the denoiser models -> pixels in [-1, 1] (identity in pixel space)."""
    if not self.latent_dir:
      return z_BHWC
    return self.ae_model.apply({"params": self.ae_params}, z_BHWC / self.latent_scale,
                               method="decode")

  def _low_res_cond(self, x_BHWC: jax.Array, aug_t_B: jax.Array, rng: jax.Array) -> dict:
    """SR conditioning: the low-res image noised to level aug_t (the augmentation)."""
    low_BhwC = (area_downsample(x_BHWC, self.low_res_size)
                if x_BHWC.shape[1] != self.low_res_size else x_BHWC)
    alpha_B, sigma_B = self.schedule.alpha_sigma(aug_t_B)
    noise_BhwC = jax.random.normal(rng, low_BhwC.shape, jnp.float32)
    return {"low_res": process.q_sample(low_BhwC, noise_BhwC, alpha_B, sigma_B),
            "low_res_t": aug_t_B}

  def _cond(self, batch: dict, x_BHWC: jax.Array, rng: jax.Array | None, *,
            aug_t_B: jax.Array | None = None) -> dict:
    """The model's cond dict for a batch; ``rng`` given: training (label/caption dropout)."""
    cond = {}
    b = x_BHWC.shape[0]
    k_drop, k_aug, k_lr = jax.random.split(rng if rng is not None else jax.random.PRNGKey(0), 3)
    drop_B = (jax.random.bernoulli(k_drop, self.p_uncond, (b,)) if rng is not None
              else jnp.zeros((b,), bool))
    if self.cond_kind == "label":
      cond["label"] = jnp.where(drop_B, self.num_classes, batch["label"]).astype(jnp.int32)
    elif self.cond_kind == "text":
      null_tok, null_mask = self.captions.null_tokens(1)
      cond["text_tokens"] = jnp.where(drop_B[:, None], null_tok, batch["text_tokens"])
      cond["text_mask"] = jnp.where(drop_B[:, None], null_mask, batch["text_mask"])
    if self.low_res_size:
      if aug_t_B is None:
        aug_t_B = jax.random.randint(k_aug, (b,), 0, max(self.aug_max_t, 1))
      cond.update(self._low_res_cond(x_BHWC, aug_t_B, k_lr))
    return cond

  def _apply(self, params, x_BHWC, t_B, cond, *, train=False, rng=None):
    rngs = {"dropout": rng} if rng is not None else None
    return self.model.apply({"params": params}, x_BHWC, t_B, cond=cond, train=train, rngs=rngs)

  def _terms(self, params, z_BHWC, t_B, noise_BHWC, cond, *, train=False, rng=None):
    """(weighted loss [B], raw MSE on the model's target [B]) at timesteps t_B."""
    alpha_B, sigma_B = self.schedule.alpha_sigma(t_B)
    zt_BHWC = process.q_sample(z_BHWC, noise_BHWC, alpha_B, sigma_B)
    pred_BHWC = self._apply(params, zt_BHWC, t_B, cond, train=train, rng=rng).astype(
        jnp.float32)
    target_BHWC = process.target(self.prediction, z_BHWC, noise_BHWC, alpha_B, sigma_B)
    mse_B = jnp.mean(jnp.square(pred_BHWC - target_BHWC).reshape(z_BHWC.shape[0], -1), axis=-1)
    w_B = process.loss_weight(self.weighting, self.prediction, self.schedule.snr(t_B),
                              self.gamma)
    return w_B * mse_B, mse_B

  # ---------------------------------------------------------------- Task interface

  def init_params(self, rng):
    z_BHWC = jnp.zeros((1, *self.model_shape), jnp.float32)
    batch = {"label": jnp.zeros((1,), jnp.int32)}
    if self.cond_kind == "text":
      tok, mask = self.captions.null_tokens(1)
      batch.update(text_tokens=jnp.asarray(tok), text_mask=jnp.asarray(mask))
    cond = self._cond(batch, jnp.zeros((1, *self.pixel_shape)), None,
                      aug_t_B=jnp.zeros((1,), jnp.int32))
    return self.model.init({"params": rng}, z_BHWC, jnp.zeros((1,), jnp.int32), cond=cond,
                           train=False)["params"]

  def initial_params(self) -> PyTree | None:
    return self.imported_params

  def loss_fn(self, params, batch, rng):
    k_enc, k_cond, k_t, k_noise, k_drop = jax.random.split(rng, 5)
    x_BHWC = self._pixels(batch["image"])
    z_BHWC = self._encode(x_BHWC, k_enc)
    cond = self._cond(batch, x_BHWC, k_cond)
    b = z_BHWC.shape[0]
    t_B = jax.random.randint(k_t, (b,), 0, self.T)
    noise_BHWC = jax.random.normal(k_noise, z_BHWC.shape, jnp.float32)
    loss_B, mse_B = self._terms(params, z_BHWC, t_B, noise_BHWC, cond, train=True, rng=k_drop)
    w_B = batch["weight"]
    total = jnp.maximum(jnp.sum(w_B), 1e-9)
    return jnp.sum(loss_B * w_B) / total, {"mse": jnp.sum(mse_B * w_B) / total,
                                           "weight": jnp.sum(w_B)}

  def _num_buckets(self) -> int:
    return int(self.eval_cfg.get("t_buckets", 4) or 0)

  def eval_step(self, params, batch):
    x_BHWC = self._pixels(batch["image"])
    z_BHWC = self._encode(x_BHWC, None)
    b = z_BHWC.shape[0]
    key = jax.random.PRNGKey(EVAL_KEY)
    # Stratified timesteps: each eval batch covers [0, T) evenly.
    t_B = (jnp.arange(b) * self.T // b).astype(jnp.int32)
    noise_BHWC = jax.random.normal(key, z_BHWC.shape, jnp.float32)
    cond = self._cond(batch, x_BHWC, None,
                      aug_t_B=jnp.full((b,), self.sample_aug_t, jnp.int32))
    loss_B, mse_B = self._terms(params, z_BHWC, t_B, noise_BHWC, cond)
    w_B = batch["weight"]
    out = {"loss": jnp.sum(loss_B * w_B), "mse": jnp.sum(mse_B * w_B), "count": jnp.sum(w_B)}
    nb = self._num_buckets()
    if nb:
      onehot_BK = jax.nn.one_hot(t_B * nb // self.T, nb) * w_B[:, None]
      out["bucket_mse"] = jnp.sum(onehot_BK * mse_B[:, None], axis=0)
      out["bucket_count"] = jnp.sum(onehot_BK, axis=0)
    return out

  def finalize_eval(self, sums):
    n = max(float(sums["count"]), 1e-9)
    out = {"loss": float(sums["loss"]) / n, "mse": float(sums["mse"]) / n}
    nb = self._num_buckets()
    for k in range(nb):
      lo, hi = k * self.T // nb, (k + 1) * self.T // nb - 1
      out[f"mse_t{lo:04d}_{hi:04d}"] = (float(sums["bucket_mse"][k])
                                        / max(float(sums["bucket_count"][k]), 1e-9))
    return out

  def train_source(self):
    if self.captions is not None:
      return captions.CaptionSource(self.data.train, self.captions, self.config.train.seed)
    return self.data.train

  def eval_source(self):
    n = self.eval_cfg.get("num_batches", 0)
    full = self.data.eval_batches
    src = self.data.eval
    if self.captions is not None:
      src = captions.CaptionSource(src, self.captions, EVAL_KEY)
    return src, (full if n <= 0 else min(n, full))

  # ---------------------------------------------------------------- sampling

  def label_cond(self, labels_N: np.ndarray) -> dict:
    """The cond of samples for class ids (captions with the first template for text)."""
    labels_N = np.asarray(labels_N, np.int32)
    if self.cond_kind == "label":
      return {"label": jnp.asarray(labels_N)}
    if self.cond_kind == "text":
      texts = [captions.caption(self.dataset, int(y), 0) for y in labels_N]
      return self.prompt_cond(texts)
    return {}

  def prompt_cond(self, texts: list[str]) -> dict:
    """The cond of samples for text prompts (a text-conditioned model only)."""
    if self.cond_kind != "text":
      raise ConfigError("prompts need a text-conditioned model (cond.kind=text)")
    tok, mask = self.captions.tokenizer.encode_batch(texts)
    return {"text_tokens": jnp.asarray(tok), "text_mask": jnp.asarray(mask)}

  def _null_cond(self, cond: dict) -> dict:
    out = dict(cond)
    if "label" in cond:
      out["label"] = jnp.full_like(cond["label"], self.num_classes)
    if "text_tokens" in cond:
      tok, mask = self.captions.null_tokens(1)
      out["text_tokens"] = jnp.broadcast_to(jnp.asarray(tok), cond["text_tokens"].shape)
      out["text_mask"] = jnp.broadcast_to(jnp.asarray(mask), cond["text_mask"].shape)
    return out

  def model_fn(self, params: PyTree, w: float) -> process.ModelFn:
    """The denoiser as ``model_fn(x, t, cond)``, classifier-free guided with weight w."""
    base = lambda x, t, c: self._apply(params, x, t, c)
    if w == 0.0 or self.cond_kind == "none":
      return base

    def guided(x, t_B, cond):
      b = x.shape[0]
      both = jax.tree.map(lambda a, n: jnp.concatenate([a, n]), cond, self._null_cond(cond))
      out = base(jnp.concatenate([x, x]), jnp.concatenate([t_B, t_B]), both)
      c_out, u_out = out[:b].astype(jnp.float32), out[b:].astype(jnp.float32)
      return u_out + (1.0 + w) * (c_out - u_out)

    return guided

  def _sampler_fn(self, name: str, num_steps: int, w: float) -> Callable:
    """Jitted (params, rng, cond) -> pixels in [-1, 1] for a batch; cached per settings."""
    key = (name, num_steps, w)
    if key not in self._jit_cache:
      opts: dict[str, Any] = dict(prediction=self.prediction, num_steps=num_steps)
      if not self.latent_dir and name in ("ddpm", "ddim"):
        opts["clip_x0"] = 1.0  # pixels live in [-1, 1] (Ho et al. clip the predicted x0)
        if name == "ddim":  # eps from the clipped x0 (guided-diffusion), as the results used
          opts["use_clipped_model_output"] = True

      def run(params, rng, cond, dummy_N):
        z = samplers.sample(name, self.model_fn(params, w), self.schedule,
                            (dummy_N.shape[0], *self.model_shape), rng, cond=cond, **opts)
        return jnp.clip(self.decode(z), -1.0, 1.0)

      self._jit_cache[key] = jax.jit(run)
    return self._jit_cache[key]

  def generate(self, params: PyTree, rng: jax.Array, cond: dict, num: int, *, sampler: str = "ddim",
               num_steps: int = 50, guidance: float | None = None,
               low_res: jax.Array | None = None) -> jax.Array:
    """``num`` samples in [-1, 1] ([N, H, W, C] pixels) from pure noise.

    ``cond``: label / text entries with leading dim ``num`` (or {}); an SR model also needs
    ``low_res`` ([N, h, w, C] in [-1, 1]), noised here to ``sr.sample_aug_t``.
    """
    w = self.guidance if guidance is None else guidance
    cond = dict(cond)
    if self.low_res_size:
      if low_res is None:
        raise ConfigError("a super-resolution model needs low_res images to sample")
      k_lr, rng = jax.random.split(rng)
      cond.update(self._low_res_cond(low_res, jnp.full((num,), self.sample_aug_t, jnp.int32),
                                     k_lr))
    return self._sampler_fn(sampler, num_steps, w)(params, rng, cond, jnp.zeros((num,)))

  def sample(self, params, rng):
    n_cls = self.num_classes
    per_row = int(self.sample_cfg.get("per_class", 8))
    steps = int(self.sample_cfg.get("num_steps", 50))
    labels = np.repeat(np.arange(n_cls), per_row)
    out: dict[str, Any] = {}
    if self.low_res_size:
      batch = self.data.eval.batch(0, slice(0, per_row))
      x_NHWC = self._pixels(jnp.asarray(batch["image"]))
      low_NhwC = area_downsample(x_NHWC, self.low_res_size)
      cond = self.label_cond(batch["label"])
      sr_NHWC = self.generate(params, rng, cond, per_row, num_steps=steps, low_res=low_NhwC)
      up_NHWC = jax.image.resize(low_NhwC, x_NHWC.shape, "nearest")
      out["sr_lowres_sample_truth"] = image_grid(
          to_uint8(jnp.concatenate([up_NHWC, sr_NHWC, x_NHWC])), cols=per_row)
      if self.base is not None:
        imgs_NHWC = cascade_sample(self.base, self.base_params, self, params, rng,
                              self.label_cond(labels), self.base.label_cond(labels), len(labels),
                              num_steps=steps)
        out["cascade_ddim"] = image_grid(to_uint8(imgs_NHWC), cols=per_row)
      return out
    if self.cond_kind == "none":
      imgs_NHWC = self.generate(params, rng, {}, len(labels), num_steps=steps)
      return {"ddim_samples": image_grid(to_uint8(imgs_NHWC), cols=per_row)}
    imgs_NHWC = self.generate(params, rng, self.label_cond(labels), len(labels), num_steps=steps)
    name = "text_grid" if self.cond_kind == "text" else "ddim_guided_by_class"
    out[name] = image_grid(to_uint8(imgs_NHWC), cols=per_row)
    if self.cond_kind == "text":
      prompts = list(self.sample_cfg.get("prompts", ()) or ())
      if prompts:
        reps = [p for p in prompts for _ in range(per_row)]
        imgs_NHWC = self.generate(params, rng, self.prompt_cond(reps), len(reps), num_steps=steps)
        out["text_prompts_grid"] = image_grid(to_uint8(imgs_NHWC), cols=per_row)
        out["text_prompts"] = "\n".join(f"row {i}: {p}" for i, p in enumerate(prompts))
      else:
        out["text_prompts"] = "\n".join(
            f"row {y}: {captions.caption(self.dataset, y, 0)}" for y in range(n_cls))
    return out

  # ---------------------------------------------------------------- final evaluation

  def generate_images(self, params: PyTree, rng: jax.Array, labels_N: np.ndarray, sampler: str,
                      num_steps: int, guidance: float | None = None) -> jax.Array:
    """Samples for FID / accuracy at the dataset's resolution (through the cascade for SR);
    ``guidance``: the CFG weight (None: ``cond.guidance``)."""
    if self.low_res_size:
      if self.base is None:
        raise ConfigError("an SR model alone makes no samples from noise; set "
                          "cascade.base_workdir")
      return cascade_sample(self.base, self.base_params, self, params, rng,
                            self.label_cond(labels_N), self.base.label_cond(labels_N),
                            len(labels_N), sampler=sampler, num_steps=num_steps,
                            guidance=guidance)
    return self.generate(params, rng, self.label_cond(labels_N), len(labels_N),
                         sampler=sampler, num_steps=num_steps, guidance=guidance)

  def final_eval(self, params, rng, evaluator):
    del evaluator  # bits/dim and FID sample their own batches
    out = {}
    k_bpd, k_fid = jax.random.split(rng)
    if int(self.eval_cfg.get("bpd_num_examples", 0) or 0) > 0:
      out.update(self.bits_per_dim(params, k_bpd))
    if self.eval_cfg.get("fid_classifier_workdir", ""):
      out.update(self.fid_and_accuracy(params, k_fid))
    return out

  def bits_per_dim(self, params: PyTree, rng: jax.Array) -> dict[str, float]:
    """bits/dim (unconditional) of the first test images by the probability-flow ODE."""
    if self.latent_dir or self.low_res_size or self.schedule_name != "linear":
      logging.info("bits/dim skipped: it needs a pixel-space model on the linear schedule "
                   "(the VP SDE); this one is %s", "latent" if self.latent_dir else
                   ("super-resolution" if self.low_res_size else self.schedule_name))
      return {}
    ec = self.eval_cfg
    n = int(ec.bpd_num_examples)
    bs = min(int(ec.get("bpd_batch_size", 64)), n)
    vp = sde.continuous_vp(self.schedule)
    to_index = sde.continuous_to_index(self.schedule, vp)
    null = self._null_cond(self.label_cond(np.zeros(bs, np.int32)))
    reader = images.load(self.config.data.name, DataOptions.from_config(self.config.data),
                         batch_size=bs, eval_batch_size=bs, seed=0).eval
    resize = lambda x: to_uint8(area_downsample(to_model_range(x), self.image_size))
    return bpd.split_bits_per_dim(
        lambda x, t, c: self._apply(params, x, to_index(t), c), vp, reader, n, rng,
        prediction=self.prediction, cond=null or None,
        num_steps=int(ec.get("bpd_ode_steps", 100)), method=ec.get("bpd_method", "rk4"),
        num_probes=int(ec.get("bpd_num_probes", 1)), eps=float(ec.get("bpd_eps", 1e-3)),
        preprocess=None if self.image_size == self.data.image_shape[0] else resize)

  def fid_and_accuracy(self, params: PyTree, rng: jax.Array) -> dict[str, float]:
    """FID (own classifier features) per sampler and the classifier's accuracy on samples."""
    if self.pixel_shape != tuple(self.data.image_shape):
      logging.info("FID skipped: samples are %s, the dataset's test images %s (a cascade's SR "
                   "stage measures the whole cascade)", self.pixel_shape, self.data.image_shape)
      return {}
    ec = self.eval_cfg
    sample_dir = ec.get("fid_sample_dir", "") or ""
    shard = fid_samples.parse_shard(ec.get("fid_sample_shard", "") or "")
    if shard and not sample_dir:
      raise ConfigError(f"eval.fid_sample_shard={shard[0]}/{shard[1]} needs eval.fid_sample_dir: "
                        "a shard only writes its batches there, for an unsharded run to gather")
    # The CFG weight of the FID samples (None: the model's cond.guidance). w = 0 samples the
    # conditional model alone: one network call per step instead of two.
    w = ec.get("fid_guidance", None)
    w = self.guidance if w is None else float(w)
    out = {"fid_guidance": w} if self.cond_kind != "none" else {}
    out.update(fid_samples.fid_report(
        lambda key, labels_N, name, steps: self.generate_images(params, key, labels_N, name,
                                                                steps, w),
        params, rng, list(ec.get("fid_samplers", ("ddim-50", "ddpm-1000"))), guidance=w,
        net=fid.FeatureNet.from_workdir(ec.fid_classifier_workdir), dataset=self.dataset,
        data_dir=self.config.data.get("data_dir", "") or None,
        num_samples=int(ec.get("fid_num_samples", 10000)),
        batch_size=int(ec.get("fid_batch_size", 500)), num_classes=self.num_classes,
        shape=self.pixel_shape, judge=self.cond_kind != "none", sample_dir=sample_dir,
        shard=shard))
    return out


def cascade_sample(base: DiffusionTask, base_params: PyTree, sr: DiffusionTask, sr_params: PyTree,
                   rng: jax.Array, sr_cond: dict, base_cond: dict, num: int, *,
                   sampler: str = "ddim", num_steps: int = 50,
                   guidance: float | None = None) -> jax.Array:
  """Cascaded sampling: the base model makes low-res images from noise, the SR model
  upsamples them (conditioned on each, augmented to ``sr.sample_aug_t``); [N, H, W, C].
  ``guidance``: the CFG weight of both stages (None: each model's ``cond.guidance``)."""
  k_base, k_sr = jax.random.split(rng)
  low = base.generate(base_params, k_base, base_cond, num, sampler=sampler,
                      num_steps=num_steps, guidance=guidance)
  return sr.generate(sr_params, k_sr, sr_cond, num, sampler=sampler, num_steps=num_steps,
                     guidance=guidance, low_res=low)
