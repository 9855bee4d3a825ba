"""DiT: the paper's sizes (parameters and Gflops), golden equality with diffusers'
DiTTransformer2DModel (its LayerNorm epsilons, an input size other than sample_size, the
directory and in-memory import paths), adaLN-Zero identity at initialisation, conditioning.

Measured against diffusers 0.42 (float32, random weights): max |ours - diffusers| / max
|diffusers| <= 1.3e-6 at norm_eps 1e-6, 1e-5 and 0.5 and at a 10x10 input to a model with
sample_size 6 (the bound asserted is 1e-5)."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from diffusers import DiTTransformer2DModel

from seqgen_jax.convert import load_pretrained
from seqgen_jax.convert.diffusers_dit import convert_dit_state_dict, dit_kwargs_from_diffusers
from seqgen_jax.data.captions import CaptionBuilder
from seqgen_jax.errors import ConfigError, DataError
from seqgen_jax.nn.dit import DiT, build_dit, dit_size, sincos_pos_embed_2d
from seqgen_jax.registry import MODELS


def randomize(params, seed: int, skip: str | None = None):
  """Numpy-random values for every parameter whose path does not contain ``skip``."""
  rs = np.random.RandomState(seed)

  def draw(path, a):
    name = jax.tree_util.keystr(path)
    if skip is not None and skip in name:
      return a
    fan_in = a.shape[0] if a.ndim > 1 else 10
    return jnp.asarray(rs.randn(*a.shape) / np.sqrt(fan_in), jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, params)


def closed_form_params(depth, d, p, c_in, c_out, classes, freq=256, mlp=4):
  """DiT's parameter count by hand: blocks (qkv, proj, MLP, adaLN 6d), patch / time / label
  embedders (with the extra CFG row), final adaLN (2d) + linear. Positions are fixed, not params."""
  block = (3 * d * d + 3 * d) + (d * d + d) + (2 * mlp * d * d + mlp * d + d) + (6 * d * d + 6 * d)
  embed = p * p * c_in * d + d
  t_mlp = freq * d + d + d * d + d
  final = 2 * d * d + 2 * d + d * p * p * c_out + p * p * c_out
  return depth * block + embed + t_mlp + (classes + 1) * d + final


def _imagenet_dit(size: str):
  """The paper's ImageNet-256 model: 32x32x4 latents, learned sigma, 1000 classes."""
  model = build_dit(ml_collections.ConfigDict(dict(size=size, learn_sigma=True)),
                    image_shape=(32, 32, 4), num_classes=1000)
  args = (jax.ShapeDtypeStruct((1, 32, 32, 4), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.int32),
          jax.ShapeDtypeStruct((1,), jnp.int32))
  init = lambda x, t, y: model.init(jax.random.key(0), x, t, cond={"label": y})
  return model, jax.eval_shape(init, *args), args


# Sizes: Peebles & Xie (2023), "Scalable Diffusion Models with Transformers", Table 1 (layers,
# hidden size, heads; Gflops at I=32, p=4: S 1.4, B 5.6, L 19.7, XL 29.1; DiT-XL/2: 118.6 Gflops).
# Parameter counts as quoted for these models: DiT-XL/2 675M (stated in the paper), DiT-B/2 130M,
# DiT-L 458M, DiT-S 33M (e.g. SiT, Ma et al. 2024, Table 1, which reuses DiT's backbones); the
# patch size changes them by < 0.1%.
@pytest.mark.parametrize("size,millions,gflops", [
    ("DiT-XL/2", 675, 118.6), ("DiT-B/2", 130, None), ("DiT-S/4", 33, 1.4),
    ("DiT-B/4", 130, 5.6), ("DiT-L/4", 458, 19.7), ("DiT-XL/4", 675, 29.1)])
def test_dit_sizes_match_paper(size, millions, gflops):
  model, shapes, args = _imagenet_dit(size)
  n = sum(a.size for a in jax.tree.leaves(shapes))
  s = dit_size(size)
  assert n == closed_form_params(s["depth"], s["hidden_size"], s["patch_size"], 4, 8, 1000)
  assert round(n / 1e6) == millions, n
  if gflops is not None:
    # XLA's cost analysis of one forward pass, in multiply-adds (flops / 2) as the paper counts;
    # allowance: the paper's rounding (0.05) plus the element-wise ops XLA also counts (< 0.5%).
    fwd = lambda p, x, t, y: model.apply(p, x, t, cond={"label": y})
    macs = jax.jit(fwd).lower(shapes, *args).cost_analysis()["flops"] / 2e9
    assert abs(macs - gflops) <= 0.05 + 0.005 * gflops, macs


def test_dit_size_errors():
  with pytest.raises(ConfigError, match="choose one of: DiT-S/2"):
    dit_size("DiT-M/2")
  with pytest.raises(ConfigError, match="patch_size"):
    build_dit(ml_collections.ConfigDict(dict(size="DiT-S/8")), image_shape=(36, 36, 4),
              num_classes=0)


def test_sincos_positions_match_mae_reference():
  """Row-major tokens; first half encodes the column, second half the row (MAE/DiT code)."""
  table = sincos_pos_embed_2d(8, 2, 3)
  omega = 1.0 / 10000 ** (np.arange(2) / 2.0)
  for r in range(2):
    for c in range(3):
      want = np.concatenate([np.sin(c * omega), np.cos(c * omega),
                             np.sin(r * omega), np.cos(r * omega)])
      np.testing.assert_allclose(table[r * 3 + c], want, atol=1e-7)


TINY = dict(patch_size=2, hidden_size=32, depth=2, num_heads=2)


def test_dit_matches_diffusers(tmp_path):
  """Random-initialised DiTTransformer2DModel, weights copied over: outputs agree to 1e-5.

  diffusers differs from the paper's code in two conventions, set here to match: its time
  embedding uses downscale_freq_shift=1 (the paper's code: 0), and every block carries its own
  copy of the time/label embedders (the paper's code: one shared copy), so block 0's is copied
  into the others (seqgen_jax.convert.diffusers_dit).
  """
  torch.manual_seed(0)
  peer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4,
                               out_channels=8, num_layers=2, sample_size=8, patch_size=2,
                               num_embeds_ada_norm=10, norm_eps=1e-6).eval()
  with torch.no_grad():
    for p in peer.parameters():
      p.copy_(torch.randn_like(p) / max(p[0].numel(), 1) ** 0.5)
    peer.transformer_blocks[1].norm1.emb.load_state_dict(
        peer.transformer_blocks[0].norm1.emb.state_dict())
  sd = {k: v.numpy() for k, v in peer.state_dict().items()}
  kwargs = dit_kwargs_from_diffusers(dict(peer.config))
  assert kwargs == dict(out_channels=8, num_classes=10, freq_shift=1.0, norm_eps=1e-6,
                        attn_norm_eps=1e-6, final_norm_eps=1e-6, pos_base_size=4, **TINY)
  ours, params = DiT(**kwargs), convert_dit_state_dict(sd, 2)
  key = "transformer_blocks.1.norm1.emb.timestep_embedder.linear_1.bias"
  with pytest.raises(DataError, match="block 1's time/label embedder differs"):
    convert_dit_state_dict(dict(sd, **{key: sd[key] + 1.0}), 2)
  x = np.random.RandomState(0).randn(3, 4, 8, 8).astype(np.float32)
  t, y = np.array([0, 250, 999]), np.array([1, 9, 10])
  with torch.no_grad():
    want = peer(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(y)).sample.numpy()
  got = jax.jit(lambda p: ours.apply({"params": p}, jnp.asarray(x.transpose(0, 2, 3, 1)), t,
                                     cond={"label": y}))(params)
  got = np.asarray(got).transpose(0, 3, 1, 2)
  assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-5


def _peer_dit(norm_eps: float, seed: int) -> DiTTransformer2DModel:
  """A random DiTTransformer2DModel of shapes no other test uses (3 heads of 8, 3 layers,
  sample_size 6, 3 input channels, learned sigma, 7 classes), one shared embedder."""
  torch.manual_seed(seed)
  peer = DiTTransformer2DModel(num_attention_heads=3, attention_head_dim=8, in_channels=3,
                               out_channels=6, num_layers=3, sample_size=6, patch_size=2,
                               num_embeds_ada_norm=7, norm_eps=norm_eps).eval()
  with torch.no_grad():
    for p in peer.parameters():
      p.copy_(torch.randn_like(p) / max(p[0].numel(), 1) ** 0.5)
    for block in peer.transformer_blocks[1:]:
      block.norm1.emb.load_state_dict(peer.transformer_blocks[0].norm1.emb.state_dict())
  return peer


def _peer_out(peer, x_BHWC, t, y) -> np.ndarray:
  with torch.no_grad():
    out = peer(torch.from_numpy(x_BHWC.transpose(0, 3, 1, 2).copy()), torch.from_numpy(t),
               torch.from_numpy(y)).sample.numpy()
  return out.transpose(0, 2, 3, 1)


def _max_rel(got, want) -> float:
  return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / np.max(np.abs(want)))


@pytest.mark.parametrize("norm_eps,size", [(1e-5, 6), (0.5, 6), (1e-5, 10)])
def test_load_pretrained_dit_matches_diffusers(tmp_path, norm_eps, size):
  """load_pretrained on a saved directory and on the in-memory model gives the same params and
  diffusers' outputs; at norm_eps 0.5 the LayerNorms' epsilons visibly matter, and at size 10
  (sample_size 6) diffusers interpolates the positional grid. Rebuilding the module by name
  from the record gives the same function; the old conversion (norm_eps everywhere, integer
  grid positions) is shown to miss."""
  peer = _peer_dit(norm_eps, seed=11)
  peer.save_pretrained(tmp_path)
  imp = load_pretrained(tmp_path)
  mem = load_pretrained(peer)
  jax.tree.map(np.testing.assert_array_equal, imp.params, mem.params)
  assert imp.kind == "denoiser" and imp.config.name == "dit" and imp.config.learn_sigma
  assert imp.build_kwargs == dict(image_shape=(6, 6, 3), num_classes=7)
  rs = np.random.RandomState(1)
  x = rs.randn(3, size, size, 3).astype(np.float32)
  t, y = np.array([0, 313, 999]), np.array([0, 6, 7])  # 7: the null class
  want = _peer_out(peer, x, t, y)
  apply = jax.jit(lambda m, p: m.apply({"params": p}, x, t, cond={"label": y}), static_argnums=0)
  assert _max_rel(apply(imp.model, imp.params), want) <= 1e-5
  rebuilt = MODELS.get("dit", kind="denoiser")(imp.config, **imp.build_kwargs)
  assert _max_rel(apply(rebuilt, imp.params), want) <= 1e-5
  old = imp.model.clone(attn_norm_eps=None, final_norm_eps=None, pos_base_size=None)
  if norm_eps == 0.5 or size != 6:
    assert _max_rel(apply(old, imp.params), want) > 1e-2


def test_load_pretrained_dit_refuses_unsupported_configs(tmp_path):
  peer = _peer_dit(1e-5, seed=12)
  for key, value in [("activation_fn", "gelu"), ("norm_elementwise_affine", True),
                     ("attention_bias", False)]:
    bad = DiTTransformer2DModel(**{**{k: v for k, v in peer.config.items() if k[0] != "_"},
                                   key: value})
    with pytest.raises(DataError, match=f"unsupported config \\({key}="):
      load_pretrained(bad)
  odd = DiTTransformer2DModel(**{**{k: v for k, v in peer.config.items() if k[0] != "_"},
                                 "out_channels": 5})
  with pytest.raises(DataError, match="out_channels=5 with in_channels=3"):
    load_pretrained(odd)
  with pytest.raises(DataError, match="cannot be loaded as a 'causal_lm' model"):
    load_pretrained(peer, kind="causal_lm")


def _layer_norm(x, eps=1e-6):
  return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)


def test_adaln_zero_blocks_are_the_identity_at_init():
  """At init every adaLN modulation is zero, so each block is the identity (gates 0) and the
  output is the final layer applied to patch embedding + positions; the real init's zero final
  layer makes that exactly 0. With all other weights random, the output must equal that closed
  form, computed here in numpy."""
  model = DiT(out_channels=4, num_classes=10, **TINY)
  x = np.random.RandomState(0).randn(2, 8, 8, 4).astype(np.float32)
  t, y = np.array([3, 700]), np.array([2, 10])
  init = jax.jit(lambda k: model.init(k, x, t, cond={"label": y}))(jax.random.key(0))["params"]
  for i in range(2):
    assert not np.any(init[f"block_{i}"]["adaLN_modulation"]["kernel"])
  apply = jax.jit(lambda p: model.apply({"params": p}, x, t, cond={"label": y}))
  assert not np.any(apply(init))
  params = randomize(init, 1, skip="'adaLN_modulation'")  # blocks' modulations stay zero
  got = np.asarray(apply(params))
  p = jax.tree.map(np.asarray, params)
  # The closed form: final layer on (patch embedding + positions), conditioned on c = t + y.
  patches = x.reshape(2, 4, 2, 4, 2, 4).transpose(0, 1, 3, 2, 4, 5).reshape(2, 16, 16)
  h = patches @ p["x_embedder"]["kernel"] + p["x_embedder"]["bias"] + sincos_pos_embed_2d(32, 4, 4)
  freqs = np.exp(-math.log(10000) * np.arange(128) / 128)
  temb = np.concatenate([np.cos(t[:, None] * freqs), np.sin(t[:, None] * freqs)], axis=1)
  silu = lambda v: v / (1 + np.exp(-v))
  dense = lambda name, v: v @ p[name]["kernel"] + p[name]["bias"]
  c = dense("t_mlp_1", silu(dense("t_mlp_0", temb))) + p["y_embedder"]["embedding"][y]
  shift, scale = np.split(dense("final_adaLN_modulation", silu(c)), 2, axis=-1)
  out = dense("final_linear", _layer_norm(h) * (1 + scale[:, None]) + shift[:, None])
  want = out.reshape(2, 4, 4, 2, 2, 4).transpose(0, 1, 3, 2, 4, 5).reshape(2, 8, 8, 4)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_dit_null_class_and_text_conditioning():
  """cond without a label == the null class; label and caption both change the output;
  learn_sigma doubles the channels."""
  captions = CaptionBuilder("cifar10")
  tok = captions.tokenizer
  cfg = ml_collections.ConfigDict(dict(TINY, learn_sigma=True, text_vocab_size=tok.vocab_size,
                                       text_max_len=tok.max_len, text_width=16, text_layers=1,
                                       text_heads=2))
  model = build_dit(cfg, image_shape=(8, 8, 4), num_classes=10)
  ids, mask = captions.tokens(np.array([8, 8]), np.random.default_rng(0))
  nul_ids, nul_mask = captions.null_tokens(2)
  x = np.random.RandomState(0).randn(2, 8, 8, 4).astype(np.float32)
  t = np.array([5, 5])
  full = dict(label=np.array([8, 8]), text_tokens=ids, text_mask=mask)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, cond=full))
  params = randomize(shapes["params"], 0)
  fn = jax.jit(lambda cond: model.apply({"params": params}, x, t, cond=cond))
  out = fn(full)
  assert out.shape == (2, 8, 8, 8) and np.isfinite(np.asarray(out)).all()
  null = fn(dict(label=np.array([10, 10]), text_tokens=nul_ids, text_mask=nul_mask))
  # Missing keys -> null class and [BOS] caption (different padded length: float32 round-off).
  np.testing.assert_allclose(fn({}), null, rtol=1e-5, atol=1e-5)
  assert np.abs(fn(dict(full, text_tokens=nul_ids, text_mask=nul_mask)) - null).max() > 1e-3
  assert np.abs(fn(dict(full, label=np.array([10, 10]))) - null).max() > 1e-3
  with pytest.raises(ValueError, match="unknown cond keys"):
    fn(dict(full, low_res=x))
