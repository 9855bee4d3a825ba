"""U-Net denoiser: golden equality with diffusers' UNet2DModel after weight import, Ho et al.'s
parameter count, timestep embedding, and every conditioning path."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from diffusers import UNet2DModel
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.resnet import ResnetBlock2D

from seqgen_jax.convert.diffusers_unet import load_diffusers_unet, unet_kwargs_from_diffusers
from seqgen_jax.data.captions import CaptionBuilder
from seqgen_jax.errors import ConfigError, DataError
from seqgen_jax.nn.embeddings import timestep_embedding
from seqgen_jax.nn.text_encoder import null_text
from seqgen_jax.nn.unet import ResBlock, build_unet, ho_cifar10_config

# google/ddpm-cifar10-32's unet/config.json (diffusers' port of Ho et al.'s CIFAR-10 model).
DDPM_CIFAR10_CONFIG = {
    "_class_name": "UNet2DModel", "act_fn": "silu", "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256], "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32,
    "out_channels": 3, "sample_size": 32, "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
HO_CIFAR10_PARAMS = 35_746_307  # counted in both implementations below; the paper says 35.7M


def randomize(params, seed: int, scale: float = 1.0):
  """Numpy-random values for every parameter (zero-initialised layers would hide bugs)."""
  rs = np.random.RandomState(seed)

  def draw(path, a):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return jnp.asarray(1.0 + 0.2 * rs.randn(*a.shape), jnp.float32)
    fan_in = int(np.prod(a.shape[:-1])) if a.ndim > 1 else 10
    return jnp.asarray(scale * rs.randn(*a.shape) / np.sqrt(fan_in), jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, params)


def _diffusers_unet(seed: int, **overrides) -> UNet2DModel:
  cfg = {k: v for k, v in DDPM_CIFAR10_CONFIG.items() if not k.startswith("_")}
  cfg.update(overrides)
  torch.manual_seed(seed)
  model = UNet2DModel(**cfg)
  with torch.no_grad():  # diffusers zero-inits nothing, but draw everything afresh anyway
    for name, p in model.named_parameters():
      p.copy_(1.0 + 0.2 * torch.randn_like(p) if "norm" in name and "weight" in name
              else 0.5 * torch.randn_like(p) / max(p[0].numel(), 1) ** 0.5)
  return model.eval()


def _golden(tmp_path, model: UNet2DModel, *, safe: bool = True, batch: int = 2):
  model.save_pretrained(tmp_path, safe_serialization=safe)
  imported = load_diffusers_unet(tmp_path)
  ours, params = imported.model, imported.params
  size, c = model.config.sample_size, model.config.in_channels
  x = np.random.RandomState(0).randn(batch, c, size, size).astype(np.float32)
  t = np.array([0, 999, 17, 500][:batch])
  with torch.no_grad():
    want = model(torch.from_numpy(x), torch.from_numpy(t)).sample.numpy()
  got = jax.jit(lambda p, x, t: ours.apply({"params": p}, x, t))(
      params, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(t))
  got = np.asarray(got).transpose(0, 3, 1, 2)
  return got, want, params


def _rel_err(got, want) -> float:
  return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("flip,shift,dim", [(False, 1, 128), (True, 0, 256), (True, 1, 33)])
def test_timestep_embedding_matches_diffusers(flip, shift, dim):
  t = np.array([0, 1, 17.5, 999])
  want = get_timestep_embedding(torch.tensor(t), dim, flip_sin_to_cos=flip,
                                downscale_freq_shift=shift).numpy()
  got = timestep_embedding(jnp.asarray(t), dim, flip_sin_to_cos=flip, downscale_freq_shift=shift)
  # float32 angles near t=999 carry ~6e-5 of rounding (one ulp of 999), whichever library
  # computes them, so sin/cos can differ by that much; small t agree to 1e-6.
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)
  np.testing.assert_allclose(np.asarray(got)[:3], want[:3], atol=1e-6)


def test_ho_cifar10_config_has_35_7m_params_like_diffusers():
  model = build_unet(ho_cifar10_config(), image_shape=(32, 32, 3))
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, jnp.zeros((1,))),
                          jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  ours = sum(a.size for a in jax.tree.leaves(shapes))
  with torch.device("meta"):
    peer = UNet2DModel(**{k: v for k, v in DDPM_CIFAR10_CONFIG.items() if k[0] != "_"})
  assert ours == sum(p.numel() for p in peer.parameters()) == HO_CIFAR10_PARAMS
  assert round(ours / 1e6, 1) == 35.7  # Ho et al. (2020), Sec. 4 / Appendix B: "35.7 million"


def test_ddpm_cifar10_layout_is_ho_et_al():
  """diffusers' google/ddpm-cifar10-32 config maps onto exactly Ho et al.'s CIFAR-10 settings."""
  kw = unet_kwargs_from_diffusers(DDPM_CIFAR10_CONFIG)
  ho = ho_cifar10_config()
  assert (kw["ch"], kw["ch_mult"], kw["num_res_blocks"], kw["attn_resolutions"]) == (
      ho.ch, tuple(ho.ch_mult), ho.num_res_blocks, tuple(ho.attn_resolutions))
  assert kw["attn_levels"] == (1,)  # the 16x16 level, by index as diffusers places it
  # Ho et al.'s own conventions, which are also the UNet defaults: one attention head,
  # TF-'SAME' stride-2 padding, sin-then-cos embedding with shift 1, GroupNorm eps 1e-6.
  assert (kw["attn_head_dim"], kw["downsample_padding"], kw["flip_sin_to_cos"],
          kw["freq_shift"], kw["norm_eps"]) == (None, 0, False, 1, 1e-6)


def test_import_tiny_ddpm_layout_matches_diffusers(tmp_path):
  """The ddpm-cifar10-32 block types (a plain level, then an attention level), small widths:
  float32 outputs agree to 1e-5 (relative L2)."""
  model = _diffusers_unet(0, sample_size=8, block_out_channels=[32, 64],
                          down_block_types=["DownBlock2D", "AttnDownBlock2D"],
                          up_block_types=["AttnUpBlock2D", "UpBlock2D"], norm_num_groups=8)
  got, want, params = _golden(tmp_path / "st", model)
  assert _rel_err(got, want) <= 1e-5, _rel_err(got, want)
  # The PyTorch .bin format gives identical parameters.
  model.save_pretrained(tmp_path / "bin", safe_serialization=False)
  params_bin = load_diffusers_unet(tmp_path / "bin").params
  jax.tree.map(np.testing.assert_array_equal, params, params_bin)


def test_imported_unet_ddim50_equals_diffusers_ddim_loop(tmp_path):
  """The path of a user with google/ddpm-cifar10-32 on disk: the imported network sampled with
  our compiled DDIM-50 lands on the same images as diffusers' DDIMScheduler loop over the
  original network, from the same x_T (the samplers of experiments/bench/ddim_sampling.py)."""
  from experiments.bench.ddim_sampling import jax_sampler, torch_sampler

  model = _diffusers_unet(1, sample_size=8, block_out_channels=[32, 64],
                          down_block_types=["DownBlock2D", "AttnDownBlock2D"],
                          up_block_types=["AttnUpBlock2D", "UpBlock2D"], norm_num_groups=8)
  model.save_pretrained(tmp_path)
  imported = load_diffusers_unet(tmp_path)
  ours, params = imported.model, imported.params
  x_T = np.random.RandomState(3).randn(2, 8, 8, 3).astype(np.float32)
  got = np.asarray(jax_sampler(ours, params, (8, 8, 3), 0, 2)(jax.random.PRNGKey(0),
                                                                jnp.asarray(x_T)))
  want = torch_sampler(model, (8, 8, 3), 0, 2, "float32", False)(
      0, torch.from_numpy(x_T).permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1).numpy()
  assert np.abs(got - x_T).max() > 0.1  # it really moved away from the noise
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-4)  # float32, 50 chained steps


def test_import_other_diffusers_conventions(tmp_path):
  """Multi-head attention, symmetric stride-2 padding, cos-first embedding, eps 1e-5."""
  model = _diffusers_unet(1, sample_size=8, block_out_channels=[32, 32],
                          down_block_types=["AttnDownBlock2D", "DownBlock2D"],
                          up_block_types=["UpBlock2D", "AttnUpBlock2D"], norm_num_groups=8,
                          attention_head_dim=8, downsample_padding=1, flip_sin_to_cos=True,
                          freq_shift=0, norm_eps=1e-5, layers_per_block=1, in_channels=2,
                          out_channels=4)
  got, want, _ = _golden(tmp_path, model, batch=3)
  assert _rel_err(got, want) <= 1e-5, _rel_err(got, want)


def test_load_pretrained_unet_directory_pipeline_and_in_memory(tmp_path):
  """load_pretrained reads a saved UNet2DModel, a pipeline directory's unet/ and the in-memory
  model to the same params; the record rebuilds the module by name (a learned-variance
  layout: out_channels = 2 * in_channels), which matches diffusers at a size other than
  sample_size too (max |ours - diffusers| / max |diffusers| <= 1e-5; measured <= 5e-7)."""
  from seqgen_jax.convert import load_pretrained
  from seqgen_jax.registry import MODELS

  model = _diffusers_unet(3, sample_size=12, block_out_channels=[16, 32],
                          down_block_types=["DownBlock2D", "AttnDownBlock2D"],
                          up_block_types=["AttnUpBlock2D", "UpBlock2D"], norm_num_groups=4,
                          layers_per_block=1, out_channels=6, attention_head_dim=4)
  model.save_pretrained(tmp_path / "pipe" / "unet")
  (tmp_path / "pipe" / "model_index.json").write_text("{}")
  imp = load_pretrained(tmp_path / "pipe")
  jax.tree.map(np.testing.assert_array_equal, imp.params, load_pretrained(model).params)
  assert imp.kind == "denoiser" and imp.config.name == "unet" and imp.config.learn_sigma
  assert imp.build_kwargs == dict(image_shape=(12, 12, 3), num_classes=0)
  rebuilt = MODELS.get("unet", kind="denoiser")(imp.config, **imp.build_kwargs)
  for size in (12, 8):
    x = np.random.RandomState(size).randn(2, 3, size, size).astype(np.float32)
    t = np.array([3, 870])
    with torch.no_grad():
      want = model(torch.from_numpy(x), torch.from_numpy(t)).sample.numpy()
    got = jax.jit(rebuilt.apply)({"params": imp.params}, jnp.asarray(x.transpose(0, 2, 3, 1)),
                                 jnp.asarray(t))
    got = np.asarray(got).transpose(0, 3, 1, 2)
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-5
  odd = _diffusers_unet(4, sample_size=8, block_out_channels=[16, 32],
                        down_block_types=["DownBlock2D", "AttnDownBlock2D"],
                        up_block_types=["AttnUpBlock2D", "UpBlock2D"], norm_num_groups=4,
                        out_channels=5)
  with pytest.raises(DataError, match="out_channels=5 with in_channels=3"):
    load_pretrained(odd)


@pytest.mark.slow
def test_import_full_ddpm_cifar10_layout_matches_diffusers(tmp_path):
  got, want, params = _golden(tmp_path, _diffusers_unet(2))
  assert sum(a.size for a in jax.tree.leaves(params)) == HO_CIFAR10_PARAMS
  assert _rel_err(got, want) <= 1e-5, _rel_err(got, want)


def test_import_refuses_unsupported_config(tmp_path):
  bad = dict(DDPM_CIFAR10_CONFIG, resnet_time_scale_shift="scale_shift")
  with pytest.raises(DataError, match="resnet_time_scale_shift"):
    unet_kwargs_from_diffusers(bad)
  (tmp_path / "config.json").write_text(json.dumps(DDPM_CIFAR10_CONFIG))
  with pytest.raises(DataError, match="no weights in .*diffusion_pytorch_model.safetensors"):
    load_diffusers_unet(tmp_path)


def test_scale_shift_res_block_matches_diffusers():
  """The adaptive-GroupNorm option (Dhariwal & Nichol) equals diffusers' 'scale_shift' block."""
  torch.manual_seed(0)
  peer = ResnetBlock2D(in_channels=16, out_channels=32, temb_channels=24, groups=8, eps=1e-6,
                       time_embedding_norm="scale_shift").eval()
  with torch.no_grad():
    for p in peer.parameters():
      p.copy_(torch.randn_like(p) * 0.3)
  sd = {k: v.numpy() for k, v in peer.state_dict().items()}
  conv = lambda k: sd[k].transpose(2, 3, 1, 0)
  params = {
      "norm1": {"scale": sd["norm1.weight"], "bias": sd["norm1.bias"]},
      "conv1": {"kernel": conv("conv1.weight"), "bias": sd["conv1.bias"]},
      "temb_proj": {"kernel": sd["time_emb_proj.weight"].T, "bias": sd["time_emb_proj.bias"]},
      "norm2": {"scale": sd["norm2.weight"], "bias": sd["norm2.bias"]},
      "conv2": {"kernel": conv("conv2.weight"), "bias": sd["conv2.bias"]},
      "nin_shortcut": {"kernel": conv("conv_shortcut.weight"), "bias": sd["conv_shortcut.bias"]},
  }
  x = np.random.RandomState(1).randn(2, 16, 8, 8).astype(np.float32)
  temb = np.random.RandomState(2).randn(2, 24).astype(np.float32)
  with torch.no_grad():
    want = peer(torch.from_numpy(x), torch.from_numpy(temb)).numpy()
  block = ResBlock(32, scale_shift_norm=True, norm_groups=8)
  got = jax.jit(lambda x, e: block.apply({"params": params}, x, e))(
      jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(temb))
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, rtol=1e-4, atol=1e-5)


# --- conditioning ---------------------------------------------------------------------------

CAPTIONS = CaptionBuilder("mnist")


@pytest.fixture(scope="module")
def cond_unet():
  """A small U-Net with every conditioning kind, random weights, and one jitted apply."""
  tok = CAPTIONS.tokenizer
  cfg = ml_collections.ConfigDict(dict(
      ch=16, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(8,), norm_groups=8,
      low_res_channels=1, low_res_noise_cond=True, text_vocab_size=tok.vocab_size,
      text_max_len=tok.max_len + 3, text_width=16, text_layers=1, text_heads=2, learn_sigma=True,
      dropout=0.1))
  model = build_unet(cfg, image_shape=(8, 8, 1), num_classes=10)
  ids, mask = CAPTIONS.tokens(np.array([7, 7]), np.random.default_rng(0))
  cond = dict(label=jnp.array([7, 7]), low_res=jnp.ones((2, 4, 4, 1)),
              low_res_t=jnp.array([0.0, 0.3]), text_tokens=jnp.asarray(ids),
              text_mask=jnp.asarray(mask))
  x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, jnp.zeros((2,)), cond=cond),
                          x)
  params = randomize(shapes["params"], 0)
  fn = jax.jit(lambda p, x, t, cond: model.apply({"params": p}, x, t, cond=cond))
  return model, params, fn, cond


def test_unet_every_conditioning_shape_and_finite(cond_unet):
  _, params, fn, cond = cond_unet
  x = jnp.asarray(np.random.RandomState(0).randn(2, 8, 8, 1), jnp.float32)
  out = fn(params, x, jnp.array([3, 900]), cond)
  assert out.shape == (2, 8, 8, 2) and out.dtype == jnp.float32  # learn_sigma: 2x channels
  assert np.isfinite(np.asarray(out)).all()


def test_res_block_dropout_only_in_training():
  block = ResBlock(16, dropout=0.5, norm_groups=4)
  x, temb = jnp.ones((1, 4, 4, 8)), jnp.ones((1, 12))
  params = randomize(jax.eval_shape(block.init, jax.random.key(0), x, temb)["params"], 0)
  run = jax.jit(lambda rng, train: block.apply({"params": params}, x, temb, train=train,
                                               rngs={"dropout": rng}), static_argnums=1)
  k1, k2 = jax.random.split(jax.random.key(1))
  np.testing.assert_array_equal(run(k1, False), run(k2, False))
  assert not np.allclose(run(k1, True), run(k2, True))


def test_unet_null_conditioning_is_the_unconditional_path(cond_unet):
  """No label and no caption == the null class id with the [BOS]-only null caption; and both
  signals matter (a real label / caption changes the output)."""
  _, params, fn, cond = cond_unet
  x = jnp.asarray(np.random.RandomState(1).randn(2, 8, 8, 1), jnp.float32)
  t = jnp.array([10, 10])
  tokens, mask = null_text(2)
  pad = lambda a: jnp.pad(a, ((0, 0), (0, cond["text_tokens"].shape[1] - 1)))
  null = dict(cond, label=jnp.array([10, 10]), text_tokens=pad(tokens), text_mask=pad(mask))
  uncond = fn(params, x, t, null)
  implicit = fn(params, x, t, {k: cond[k] for k in ("low_res", "low_res_t")})
  # Equal up to float32 summation order (the two null captions have different padded lengths).
  np.testing.assert_allclose(implicit, uncond, rtol=1e-5, atol=1e-5)
  labelled = fn(params, x, t, dict(null, label=jnp.array([3, 3])))
  captioned = fn(params, x, t, dict(cond, label=jnp.array([10, 10])))
  assert np.abs(labelled - uncond).max() > 1e-3
  assert np.abs(captioned - uncond).max() > 1e-3


def test_unet_text_padding_and_low_res_resize(cond_unet):
  """Extra padding (with junk ids) after a caption, and a low-res input that is already the
  bicubic upsampling of the small one, leave the output unchanged."""
  _, params, fn, cond = cond_unet
  x = jnp.asarray(np.random.RandomState(2).randn(2, 8, 8, 1), jnp.float32)
  t = jnp.array([5, 600])
  ref = fn(params, x, t, cond)
  junk = jnp.asarray(np.random.RandomState(3).randint(0, 20, (2, 3)), jnp.int32)
  other = dict(cond, text_tokens=jnp.concatenate([cond["text_tokens"], junk], axis=1),
               text_mask=jnp.pad(cond["text_mask"], ((0, 0), (0, 3))),
               low_res=jax.image.resize(cond["low_res"], (2, 8, 8, 1), "bicubic"))
  np.testing.assert_allclose(fn(params, x, t, other), ref, rtol=1e-5, atol=1e-5)


def test_unet_rejects_bad_conditioning(cond_unet):
  model, params, _, cond = cond_unet
  x = jnp.zeros((2, 8, 8, 1))
  with pytest.raises(ValueError, match="unknown cond keys.*allowed"):
    model.apply({"params": params}, x, jnp.zeros((2,)), cond=dict(cond, caption="x"))
  with pytest.raises(ValueError, match="low_res"):
    model.apply({"params": params}, x, jnp.zeros((2,)), cond={"label": cond["label"]})
  with pytest.raises(ConfigError, match="divisible by norm_groups"):
    build_unet(ml_collections.ConfigDict(dict(ch=20)), image_shape=(32, 32, 3))
