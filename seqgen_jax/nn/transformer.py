"""Transformer models on one block: GPT (decoder-only), BERT-style encoder with masked-LM and
classification heads, the encoder-decoder of Vaswani et al. (2017), ViT, and a forecasting
encoder.

One ``Block`` (pre-LN or post-LN; self-attention, optional cross-attention, MLP) is stacked by
``Stack``, either unrolled (params ``layers_0``, ``layers_1``, ...) or as one ``nn.scan`` over
layers (params ``layers`` with a leading layer axis: one compiled block, so compile time does not
grow with depth), optionally rematerialised (``nn.remat``) to trade compute for activation
memory. ``stack_layer_params`` / ``unstack_layer_params`` convert between the two layouts.

KV caches (``init_cache`` / ``decode``) are plain pytrees whose every leaf has the batch as its
leading axis, so generic decoders (seqgen_jax/decoding.py) can tile and reorder them.

Axis key: B batch, T target / query positions, S source / key positions, D model width,
F MLP width, V vocabulary, C classes, K key/value heads, H head width, L layers,
W forecast look-back window, Z forecast horizon, E input features.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from seqgen_jax.errors import ConfigError
from seqgen_jax.nn.attention import IMPLEMENTATIONS, MultiHeadAttention, padding_mask
from seqgen_jax.nn.embeddings import LearnedPositions, sinusoidal_positions
from seqgen_jax.registry import MODELS

LN_EPS = 1e-5  # GPT-2's LayerNorm epsilon
ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=False),  # exact erf form (BERT, ViT)
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),  # tanh approximation (GPT-2)
    "relu": nn.relu,  # the original Transformer
}
NORMS = ("pre", "post")
POSITIONS = ("learned", "sinusoidal", "rotary")
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,  # recompute the whole block
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
}


def _choice(field: str, value: Any, allowed) -> Any:
  if value not in allowed:
    raise ConfigError(f"unknown {field} '{value}'; choose one of: {', '.join(allowed)}")
  return value


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """Hyper-parameters of one Transformer block (hashable, so it can be a module field)."""

  num_heads: int
  d_ff: int
  num_kv_heads: int | None = None  # grouped-query attention when < num_heads
  dropout: float = 0.0  # on each residual branch
  attention_dropout: float | None = None  # on the attention probabilities; None: = dropout
  use_bias: bool = True
  norm: str = "pre"  # "pre": x + f(LN(x)); "post": LN(x + f(x))
  activation: str = "gelu_tanh"
  ln_eps: float = LN_EPS
  causal: bool = False
  cross_attention: bool = False
  rotary_base: float | None = None  # None: no rotary positions
  attention: str = "xla"  # "xla" | "cudnn" | "auto" (seqgen_jax/nn/attention.py)
  init_std: float = 0.02
  out_init_std: float = 0.02  # projections that write into the residual stream
  dtype: Any = None

  def __post_init__(self):
    _choice("norm", self.norm, NORMS)
    _choice("activation", self.activation, tuple(ACTIVATIONS))
    _choice("attention implementation", self.attention, IMPLEMENTATIONS)


class MLP(nn.Module):
  """Dense(F) -> activation -> Dense(D)."""

  d_ff: int
  use_bias: bool = True
  init_std: float = 0.02
  out_init_std: float = 0.02
  activation: str = "gelu_tanh"
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x_BTD: jax.Array) -> jax.Array:
    d = x_BTD.shape[-1]
    h_BTF = nn.Dense(self.d_ff, use_bias=self.use_bias, dtype=self.dtype,
                     kernel_init=nn.initializers.normal(self.init_std), name="fc")(x_BTD)
    h_BTF = ACTIVATIONS[self.activation](h_BTF)
    return nn.Dense(d, use_bias=self.use_bias, dtype=self.dtype,
                    kernel_init=nn.initializers.normal(self.out_init_std), name="proj")(h_BTF)


class Block(nn.Module):
  """Self-attention, optional cross-attention and MLP, each a residual branch (pre- or post-LN).

  ``__call__(x_BTD, cache, ctx) -> (x_BTD, cache)`` has the shape ``nn.scan`` wants (carry, then
  per-layer input). ``mode`` selects what it does:
    * "full": attention over the whole sequence; ``ctx`` may hold "mask" (self-attention mask),
      "positions" (for rotary), "memory" and "memory_mask" (cross-attention). Returns no cache.
    * "decode": causal self-attention of new tokens at ``ctx["position"]`` over the cache
      {"k", "v"} (and cross-attention over the cached "cross_k" / "cross_v"); returns the cache.
    * "prime": only projects ``ctx["memory"]`` to this layer's cross-attention keys and values.
  """

  cfg: BlockConfig
  deterministic: bool = True
  mode: str = "full"

  def _attention(self, d: int, *, self_attention: bool, name: str) -> MultiHeadAttention:
    c = self.cfg
    return MultiHeadAttention(
        num_heads=c.num_heads, d_model=d, num_kv_heads=c.num_kv_heads,
        self_attention=self_attention,
        dropout=c.dropout if c.attention_dropout is None else c.attention_dropout,
        use_bias=c.use_bias, init_std=c.init_std, out_init_std=c.out_init_std,
        rotary_base=c.rotary_base if self_attention else None, implementation=c.attention,
        dtype=c.dtype, name=name)

  @nn.compact
  def __call__(self, x_BTD: jax.Array, cache: dict | None, ctx: dict
               ) -> tuple[jax.Array, dict | None]:
    c, d = self.cfg, x_BTD.shape[-1]
    if self.mode == "prime":
      k, v = self._attention(d, self_attention=False, name="cross_attn").project_kv(
          ctx["memory"])
      return x_BTD, {"cross_k": k, "cross_v": v}
    drop = nn.Dropout(c.dropout, deterministic=self.deterministic)

    def residual(x_BTD, ln_name, f):
      ln = nn.LayerNorm(epsilon=c.ln_eps, use_bias=c.use_bias, dtype=c.dtype, name=ln_name)
      y_BTD, aux = f(ln(x_BTD) if c.norm == "pre" else x_BTD)
      x_BTD = x_BTD + drop(y_BTD)
      return (x_BTD if c.norm == "pre" else ln(x_BTD)), aux

    attn = self._attention(d, self_attention=True, name="attn")
    if self.mode == "decode":
      x_BTD, self_kv = residual(x_BTD, "ln1", lambda h: attn.decode(
          h, {"k": cache["k"], "v": cache["v"]}, ctx["position"]))
      cache = {**cache, **self_kv}
    else:
      x_BTD, _ = residual(x_BTD, "ln1", lambda h: (attn(
          h, mask=ctx.get("mask"), causal=c.causal, positions_BT=ctx.get("positions"),
          deterministic=self.deterministic), None))
    if c.cross_attention:
      xattn = self._attention(d, self_attention=False, name="cross_attn")
      if self.mode == "decode":
        k, v = cache["cross_k"], cache["cross_v"]
      else:
        k, v = xattn.project_kv(ctx["memory"])
      x_BTD, _ = residual(x_BTD, "ln_cross", lambda h: (xattn.cross(
          h, k, v, mask=ctx.get("memory_mask"), deterministic=self.deterministic), None))
    mlp = MLP(c.d_ff, use_bias=c.use_bias, init_std=c.init_std, out_init_std=c.out_init_std,
              activation=c.activation, dtype=c.dtype, name="mlp")
    x_BTD, _ = residual(x_BTD, "ln2", lambda h: (mlp(h), None))
    return x_BTD, (cache if self.mode == "decode" else None)


class Stack(nn.Module):
  """``num_layers`` Blocks, unrolled or scanned over layers, optionally rematerialised.

  Caches: unrolled, a tuple of per-layer dicts with [B, ...] leaves; scanned, one dict with
  [B, L, ...] leaves (the layer axis second, so the batch stays the leading axis).
  """

  block: BlockConfig
  num_layers: int
  scan: bool = False
  remat: str = "none"  # "none" | "full" | "dots" (REMAT_POLICIES)

  @nn.compact
  def __call__(self, x_BTD: jax.Array, ctx: dict, caches: Any = None, *, train: bool = False,
               mode: str = "full") -> tuple[jax.Array, Any]:
    _choice("remat", self.remat, tuple(REMAT_POLICIES))
    cls = Block
    if self.remat != "none":
      # Under scan, CSE across iterations cannot undo the remat, so prevent_cse is not needed.
      cls = nn.remat(Block, prevent_cse=not self.scan, policy=REMAT_POLICIES[self.remat])
    kw = dict(deterministic=not train, mode=mode)
    if self.scan:
      scanned = nn.scan(cls, variable_axes={"params": 0},
                        split_rngs={"params": True, "dropout": True},
                        in_axes=(1, nn.broadcast), out_axes=1, length=self.num_layers)
      return scanned(self.block, **kw, name="layers")(x_BTD, caches, ctx)
    new_caches = []
    for i in range(self.num_layers):
      layer_cache = None if caches is None else caches[i]
      x_BTD, layer_cache = cls(self.block, **kw, name=f"layers_{i}")(x_BTD, layer_cache, ctx)
      new_caches.append(layer_cache)
    return x_BTD, (None if mode == "full" else tuple(new_caches))


def _zero_kv_cache(block: BlockConfig, d_model: int, num_layers: int, scan: bool,
                   batch_size: int, max_len: int) -> Any:
  k = block.num_kv_heads or block.num_heads
  shape = (batch_size, max_len, k, d_model // block.num_heads)
  dtype = block.dtype or jnp.float32
  if scan:
    shape = shape[:1] + (num_layers,) + shape[1:]
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
  return tuple({"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
               for _ in range(num_layers))


def _add_positions(x_BTD: jax.Array, kind: str, positions_BT: jax.Array, max_len: int,
                   table: nn.Module | None) -> jax.Array:
  """Adds learned or sinusoidal position embeddings (rotary ones live in the attention)."""
  if kind == "learned":
    return x_BTD + table(positions_BT).astype(x_BTD.dtype)
  if kind == "sinusoidal":
    pe_TD = sinusoidal_positions(max_len, x_BTD.shape[-1])
    return x_BTD + jnp.take(pe_TD, positions_BT, axis=0).astype(x_BTD.dtype)
  return x_BTD


def _check_len(t: int, max_len: int) -> None:
  if t > max_len:
    raise ValueError(f"sequence length {t} exceeds the model's max_len={max_len}")


# ------------------------------------------------------------------------------ decoder-only


class GPT(nn.Module):
  """Decoder-only causal Transformer LM (GPT-2 architecture by default; tied embeddings).

  Initialisation follows GPT-2: N(0, 0.02) weights, and the projections that write into the
  residual stream scaled by 1/sqrt(2 * num_layers). Beyond GPT-2: grouped-query attention
  (``num_kv_heads``), sinusoidal or rotary positions, scan over layers, remat, and a KV cache
  (``init_cache`` / ``decode``, the causal_lm contract in seqgen_jax/registry.py).
  """

  vocab_size: int
  max_len: int
  num_layers: int
  num_heads: int
  d_model: int
  d_ff: int | None = None
  dropout: float = 0.0
  use_bias: bool = True
  dtype: jnp.dtype | None = None
  num_kv_heads: int | None = None
  positions: str = "learned"
  rotary_base: float = 10_000.0
  activation: str = "gelu_tanh"
  ln_eps: float = LN_EPS
  attention: str = "xla"
  scan_layers: bool = False
  remat: str = "none"

  def block_config(self) -> BlockConfig:
    _choice("positions", self.positions, POSITIONS)
    return BlockConfig(
        num_heads=self.num_heads, d_ff=self.d_ff or 4 * self.d_model,
        num_kv_heads=self.num_kv_heads, dropout=self.dropout, use_bias=self.use_bias,
        norm="pre", activation=self.activation, ln_eps=self.ln_eps, causal=True,
        rotary_base=self.rotary_base if self.positions == "rotary" else None,
        attention=self.attention, out_init_std=0.02 / math.sqrt(2 * self.num_layers),
        dtype=self.dtype)

  def setup(self):
    self.wte = nn.Embed(self.vocab_size, self.d_model,
                        embedding_init=nn.initializers.normal(0.02), dtype=self.dtype)
    if self.positions == "learned":
      self.wpe = LearnedPositions(self.max_len, self.d_model, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)
    self.decoder = Stack(self.block_config(), self.num_layers, scan=self.scan_layers,
                         remat=self.remat)
    self.ln_f = nn.LayerNorm(epsilon=self.ln_eps, use_bias=self.use_bias, dtype=self.dtype)

  def _embed(self, tokens_BT: jax.Array, positions_BT: jax.Array, train: bool) -> jax.Array:
    x_BTD = _add_positions(self.wte(tokens_BT), self.positions, positions_BT, self.max_len,
                           self.wpe if self.positions == "learned" else None)
    return self.drop(x_BTD, deterministic=not train)

  def _logits(self, x_BTD: jax.Array) -> jax.Array:
    return self.wte.attend(self.ln_f(x_BTD)).astype(jnp.float32)

  def embed(self, tokens_BT: jax.Array, *, train: bool = False) -> jax.Array:
    """Token plus position embeddings (with dropout): [B, T] ints -> [B, T, D]."""
    t = tokens_BT.shape[1]
    _check_len(t, self.max_len)
    return self._embed(tokens_BT, jnp.arange(t)[None, :], train)

  def logits_from_embeddings(self, x_BTD: jax.Array, *, train: bool = False) -> jax.Array:
    """The blocks, final LayerNorm and tied output projection; float32 logits [B, T, V]."""
    ctx = {"positions": jnp.arange(x_BTD.shape[1])[None, :]}
    x_BTD, _ = self.decoder(x_BTD, ctx, train=train)
    return self._logits(x_BTD)

  def __call__(self, tokens_BT: jax.Array, *, train: bool = False) -> jax.Array:
    return self.logits_from_embeddings(self.embed(tokens_BT, train=train), train=train)

  def init_cache(self, batch_size: int, max_len: int) -> dict:
    """An empty KV cache for ``max_len`` positions (needs no parameters)."""
    _check_len(max_len, self.max_len)
    return {"layers": _zero_kv_cache(self.block_config(), self.d_model, self.num_layers,
                                     self.scan_layers, batch_size, max_len)}

  def decode(self, tokens_BT: jax.Array, cache: dict, position: jax.Array
             ) -> tuple[jax.Array, dict]:
    """Logits of T new tokens that start at ``position``, and the cache with them added."""
    positions_BT = position + jnp.arange(tokens_BT.shape[1])[None, :]
    x_BTD = self._embed(tokens_BT, positions_BT, train=False)
    x_BTD, layers = self.decoder(x_BTD, {"position": position}, cache["layers"], mode="decode")
    return self._logits(x_BTD), {"layers": layers}


# ------------------------------------------------------------------------------ encoder-only


class Encoder(nn.Module):
  """Bidirectional Transformer encoder over tokens: embeddings, blocks, optional final LN.

  BERT is the default (post-LN, exact GELU, learned positions, LayerNorm on the embeddings,
  eps 1e-12); ``norm="pre"`` gives a pre-LN encoder with a final LayerNorm instead. BERT's
  segment embeddings are left out (single-segment inputs; the weight import folds segment 0's
  row into the position table).
  """

  vocab_size: int
  max_len: int
  num_layers: int
  num_heads: int
  d_model: int
  d_ff: int | None = None
  dropout: float = 0.0
  attention_dropout: float | None = None
  use_bias: bool = True
  norm: str = "post"
  positions: str = "learned"
  rotary_base: float = 10_000.0
  activation: str = "gelu"
  ln_eps: float = 1e-12
  embed_norm: bool | None = None  # None: True for post-LN (BERT), False for pre-LN
  scale_embeddings: bool = False  # multiply token embeddings by sqrt(D) (Vaswani et al.)
  num_kv_heads: int | None = None
  attention: str = "xla"
  scan_layers: bool = False
  remat: str = "none"
  dtype: jnp.dtype | None = None

  def block_config(self, **overrides: Any) -> BlockConfig:
    _choice("positions", self.positions, POSITIONS)
    kw = dict(num_heads=self.num_heads, d_ff=self.d_ff or 4 * self.d_model,
              num_kv_heads=self.num_kv_heads, dropout=self.dropout,
              attention_dropout=self.attention_dropout, use_bias=self.use_bias, norm=self.norm,
              activation=self.activation, ln_eps=self.ln_eps,
              rotary_base=self.rotary_base if self.positions == "rotary" else None,
              attention=self.attention, dtype=self.dtype)
    return BlockConfig(**{**kw, **overrides})

  def _embed_norm(self) -> bool:
    return self.norm == "post" if self.embed_norm is None else self.embed_norm

  def setup(self):
    self.token_embed = nn.Embed(self.vocab_size, self.d_model,
                                embedding_init=nn.initializers.normal(0.02), dtype=self.dtype)
    if self.positions == "learned":
      self.pos_embed = LearnedPositions(self.max_len, self.d_model, dtype=self.dtype)
    if self._embed_norm():
      self.embed_ln = nn.LayerNorm(epsilon=self.ln_eps, use_bias=self.use_bias, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)
    self.blocks = Stack(self.block_config(), self.num_layers, scan=self.scan_layers,
                        remat=self.remat)
    if self.norm == "pre":
      self.final_ln = nn.LayerNorm(epsilon=self.ln_eps, use_bias=self.use_bias, dtype=self.dtype)

  def embed(self, tokens_BT: jax.Array, positions_BT: jax.Array, *, train: bool = False
            ) -> jax.Array:
    """Scaled token embeddings plus positions, LayerNorm (BERT) and dropout: [B, T, D]."""
    x_BTD = self.token_embed(tokens_BT)
    if self.scale_embeddings:
      x_BTD = x_BTD * math.sqrt(self.d_model)
    x_BTD = _add_positions(x_BTD, self.positions, positions_BT, self.max_len,
                           self.pos_embed if self.positions == "learned" else None)
    if self._embed_norm():
      x_BTD = self.embed_ln(x_BTD)
    return self.drop(x_BTD, deterministic=not train)

  def __call__(self, tokens_BT: jax.Array, mask_BT: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """Hidden states [B, T, D]; ``mask_BT`` (True = real token) hides padding keys."""
    t = tokens_BT.shape[1]
    _check_len(t, self.max_len)
    positions_BT = jnp.arange(t)[None, :]
    x_BTD = self.embed(tokens_BT, positions_BT, train=train)
    ctx = {"positions": positions_BT,
           "mask": None if mask_BT is None else padding_mask(mask_BT)}
    x_BTD, _ = self.blocks(x_BTD, ctx, train=train)
    return self.final_ln(x_BTD) if self.norm == "pre" else x_BTD

  def attend(self, x_BTD: jax.Array) -> jax.Array:
    """Output projection tied to the token embeddings: [B, T, D] -> [B, T, V]."""
    return self.token_embed.attend(x_BTD)


class MaskedLM(nn.Module):
  """Encoder + BERT's masked-LM head: Dense -> activation -> LayerNorm -> tied output + bias."""

  encoder: Encoder

  @nn.compact
  def __call__(self, tokens_BT: jax.Array, mask_BT: jax.Array, *, train: bool = False
               ) -> jax.Array:
    enc = self.encoder
    h_BTD = enc(tokens_BT, mask_BT, train=train)
    h_BTD = nn.Dense(enc.d_model, dtype=enc.dtype, kernel_init=nn.initializers.normal(0.02),
                     name="mlm_dense")(h_BTD)
    h_BTD = nn.LayerNorm(epsilon=enc.ln_eps, dtype=enc.dtype, name="mlm_ln")(
        ACTIVATIONS[enc.activation](h_BTD))
    bias_V = self.param("mlm_bias", nn.initializers.zeros, (enc.vocab_size,))
    return (enc.attend(h_BTD) + bias_V).astype(jnp.float32)


class EncoderClassifier(nn.Module):
  """Encoder + pooling + linear head (the classifier contract).

  ``pooling="cls"``: BERT's pooler, tanh(Dense(h at position 0)) (the input must start with a
  classification token); ``"mean"``: the mean of the hidden states over real tokens.
  """

  encoder: Encoder
  num_classes: int
  pooling: str = "cls"
  dropout: float = 0.0

  @nn.compact
  def __call__(self, tokens_BT: jax.Array, mask_BT: jax.Array, *, train: bool = False
               ) -> jax.Array:
    enc = self.encoder
    h_BTD = enc(tokens_BT, mask_BT, train=train)
    if _choice("pooling", self.pooling, ("cls", "mean")) == "cls":
      pooled_BD = jnp.tanh(nn.Dense(enc.d_model, dtype=enc.dtype,
                                    kernel_init=nn.initializers.normal(0.02),
                                    name="pooler")(h_BTD[:, 0]))
    else:
      m_BT1 = jnp.asarray(mask_BT, jnp.float32)[..., None]
      pooled_BD = (jnp.sum(h_BTD.astype(jnp.float32) * m_BT1, axis=1)
                   / jnp.maximum(jnp.sum(m_BT1, axis=1), 1.0)).astype(h_BTD.dtype)
    pooled_BD = nn.Dropout(self.dropout)(pooled_BD, deterministic=not train)
    logits_BC = nn.Dense(self.num_classes, dtype=enc.dtype,
                         kernel_init=nn.initializers.normal(0.02), name="head")(pooled_BD)
    return logits_BC.astype(jnp.float32)


def with_encoder_from(params: dict, pretrained: dict) -> dict:
  """``params`` with its "encoder" subtree replaced by ``pretrained["encoder"]``.

  This is how a classifier starts from a masked-LM checkpoint: MaskedLM and EncoderClassifier
  both keep their encoder under the name "encoder", so the subtrees match when both models are
  built from the same encoder fields (and vocabulary / max_len). Raises a one-line ConfigError
  naming the first mismatch.
  """
  want = jax.tree_util.tree_flatten_with_path(params["encoder"])[0]
  have = dict(jax.tree_util.tree_flatten_with_path(pretrained.get("encoder", {}))[0])
  for path, leaf in want:
    name = jax.tree_util.keystr(path)
    if path not in have:
      raise ConfigError(f"pretrained params have no encoder parameter {name}")
    if have[path].shape != leaf.shape:
      raise ConfigError(f"pretrained encoder parameter {name} has shape {have[path].shape}, "
                        f"the model wants {leaf.shape}")
  if len(have) != len(want):
    raise ConfigError(f"pretrained encoder has {len(have)} parameters, the model {len(want)}")
  return {**params, "encoder": pretrained["encoder"]}


# ------------------------------------------------------------------------------ encoder-decoder


class EncoderDecoder(nn.Module):
  """The Transformer of Vaswani et al. (2017) for sequence-to-sequence tasks.

  Defaults follow the paper: post-LN, ReLU MLP, sinusoidal positions, embeddings scaled by
  sqrt(D), decoder output tied to the target embeddings. ``share_embeddings`` also ties source
  and target embeddings (needs one shared vocabulary). Follows the seq2seq contract:
  ``encode`` / ``init_cache`` (projects the memory to every layer's cross-attention keys and
  values once) / ``decode``.
  """

  src_vocab_size: int
  tgt_vocab_size: int
  max_len: int
  num_layers: int
  num_heads: int
  d_model: int
  num_decoder_layers: int | None = None  # None: = num_layers
  d_ff: int | None = None
  dropout: float = 0.0
  attention_dropout: float | None = None
  use_bias: bool = True
  norm: str = "post"
  positions: str = "sinusoidal"
  activation: str = "relu"
  ln_eps: float = 1e-6
  scale_embeddings: bool = True
  share_embeddings: bool = False
  num_kv_heads: int | None = None
  attention: str = "xla"
  scan_layers: bool = False
  remat: str = "none"
  dtype: jnp.dtype | None = None

  def setup(self):
    if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
      raise ConfigError(f"share_embeddings needs one vocabulary; got source "
                        f"{self.src_vocab_size} and target {self.tgt_vocab_size}")
    self.encoder = Encoder(
        self.src_vocab_size, self.max_len, self.num_layers, self.num_heads, self.d_model,
        d_ff=self.d_ff, dropout=self.dropout, attention_dropout=self.attention_dropout,
        use_bias=self.use_bias, norm=self.norm, positions=self.positions,
        activation=self.activation, ln_eps=self.ln_eps, embed_norm=False,
        scale_embeddings=self.scale_embeddings, num_kv_heads=self.num_kv_heads,
        attention=self.attention, scan_layers=self.scan_layers, remat=self.remat,
        dtype=self.dtype)
    if not self.share_embeddings:
      self.tgt_embed = nn.Embed(self.tgt_vocab_size, self.d_model,
                                embedding_init=nn.initializers.normal(0.02), dtype=self.dtype)
    if self.positions == "learned":
      self.tgt_pos_embed = LearnedPositions(self.max_len, self.d_model, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)
    self.decoder = Stack(self.decoder_block(), self._num_dec_layers(), scan=self.scan_layers,
                         remat=self.remat)
    if self.norm == "pre":
      self.dec_final_ln = nn.LayerNorm(epsilon=self.ln_eps, use_bias=self.use_bias,
                                       dtype=self.dtype)

  def _num_dec_layers(self) -> int:
    return self.num_decoder_layers or self.num_layers

  def decoder_block(self) -> BlockConfig:
    _choice("positions", self.positions, POSITIONS)
    return BlockConfig(
        num_heads=self.num_heads, d_ff=self.d_ff or 4 * self.d_model,
        num_kv_heads=self.num_kv_heads, dropout=self.dropout,
        attention_dropout=self.attention_dropout, use_bias=self.use_bias, norm=self.norm,
        activation=self.activation, ln_eps=self.ln_eps, causal=True, cross_attention=True,
        rotary_base=10_000.0 if self.positions == "rotary" else None, attention=self.attention,
        dtype=self.dtype)

  def _tgt_table(self) -> nn.Embed:
    return self.encoder.token_embed if self.share_embeddings else self.tgt_embed

  def _embed_tgt(self, tokens_BT: jax.Array, positions_BT: jax.Array, train: bool) -> jax.Array:
    x_BTD = self._tgt_table()(tokens_BT)
    if self.scale_embeddings:
      x_BTD = x_BTD * math.sqrt(self.d_model)
    x_BTD = _add_positions(x_BTD, self.positions, positions_BT, self.max_len,
                           self.tgt_pos_embed if self.positions == "learned" else None)
    return self.drop(x_BTD, deterministic=not train)

  def _logits(self, x_BTD: jax.Array) -> jax.Array:
    if self.norm == "pre":
      x_BTD = self.dec_final_ln(x_BTD)
    return self._tgt_table().attend(x_BTD).astype(jnp.float32)

  def encode(self, src_BS: jax.Array, src_mask_BS: jax.Array, *, train: bool = False
             ) -> jax.Array:
    """The encoder's output (the memory), [B, S, D]."""
    return self.encoder(src_BS, src_mask_BS, train=train)

  def __call__(self, src_BS: jax.Array, src_mask_BS: jax.Array, tgt_in_BT: jax.Array, *,
               train: bool = False) -> jax.Array:
    """Teacher-forced logits [B, T, V] of the target given the source."""
    memory_BSD = self.encode(src_BS, src_mask_BS, train=train)
    t = tgt_in_BT.shape[1]
    _check_len(t, self.max_len)
    positions_BT = jnp.arange(t)[None, :]
    ctx = {"positions": positions_BT, "memory": memory_BSD,
           "memory_mask": padding_mask(src_mask_BS)}
    x_BTD, _ = self.decoder(self._embed_tgt(tgt_in_BT, positions_BT, train), ctx, train=train)
    return self._logits(x_BTD)

  def init_cache(self, memory_BSD: jax.Array, src_mask_BS: jax.Array, max_len: int) -> dict:
    """Decoding cache: empty self-attention KV for ``max_len`` target positions, the memory's
    cross-attention keys/values for every layer, and the source mask."""
    _check_len(max_len, self.max_len)
    b = memory_BSD.shape[0]
    self_kv = _zero_kv_cache(self.decoder_block(), self.d_model, self._num_dec_layers(),
                             self.scan_layers, b, max_len)
    x_B1D = jnp.zeros((b, 1, self.d_model), memory_BSD.dtype)  # unused by "prime"
    _, cross = self.decoder(x_B1D, {"memory": memory_BSD}, mode="prime")
    if self.scan_layers:
      layers = {**self_kv, **cross}
    else:
      layers = tuple({**s, **x} for s, x in zip(self_kv, cross))
    return {"layers": layers, "src_mask": jnp.asarray(src_mask_BS, bool)}

  def decode(self, tokens_BT: jax.Array, cache: dict, position: jax.Array
             ) -> tuple[jax.Array, dict]:
    """Logits of T new target tokens starting at ``position``, and the updated cache."""
    positions_BT = position + jnp.arange(tokens_BT.shape[1])[None, :]
    ctx = {"position": position, "memory_mask": padding_mask(cache["src_mask"])}
    x_BTD, layers = self.decoder(self._embed_tgt(tokens_BT, positions_BT, False), ctx,
                                 cache["layers"], mode="decode")
    return self._logits(x_BTD), {**cache, "layers": layers}


# ------------------------------------------------------------------------------ ViT


class ViT(nn.Module):
  """Vision Transformer (Dosovitskiy et al. 2021): non-overlapping patches, linear patch
  embedding, learned positions, pre-LN encoder, class token or mean pooling, linear head."""

  num_classes: int
  image_shape: tuple[int, int, int]  # (H, W, C)
  patch_size: int
  num_layers: int
  num_heads: int
  d_model: int
  d_ff: int | None = None
  dropout: float = 0.0
  pooling: str = "cls"
  activation: str = "gelu"
  ln_eps: float = 1e-6
  attention: str = "xla"
  scan_layers: bool = False
  remat: str = "none"
  dtype: jnp.dtype | None = None

  def num_patches(self) -> int:
    h, w, _ = self.image_shape
    p = self.patch_size
    if h % p or w % p:
      raise ConfigError(f"image size {h}x{w} is not divisible by patch_size={p}")
    return (h // p) * (w // p)

  @nn.compact
  def __call__(self, images_BHWC: jax.Array, *, train: bool = False) -> jax.Array:
    if tuple(images_BHWC.shape[1:]) != tuple(self.image_shape):
      raise ValueError(f"images have shape {images_BHWC.shape[1:]}, the model was built for "
                       f"{tuple(self.image_shape)}")
    _choice("pooling", self.pooling, ("cls", "mean"))
    p, n = self.patch_size, self.num_patches()
    x = jnp.asarray(images_BHWC, self.dtype or jnp.float32)
    # A stride-p p x p convolution is exactly a linear map of each flattened patch.
    x_BhwD = nn.Conv(self.d_model, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                     name="patch_embed")(x)
    x_BPD = x_BhwD.reshape(x.shape[0], n, self.d_model)
    if self.pooling == "cls":
      cls_11D = self.param("cls", nn.initializers.zeros, (1, 1, self.d_model))
      cls_B1D = jnp.broadcast_to(cls_11D, (x.shape[0], 1, self.d_model)).astype(x_BPD.dtype)
      x_BPD = jnp.concatenate([cls_B1D, x_BPD], axis=1)
    x_BPD = LearnedPositions(x_BPD.shape[1], self.d_model, dtype=self.dtype, name="pos_embed")(
        jnp.arange(x_BPD.shape[1])[None, :]) + x_BPD
    x_BPD = nn.Dropout(self.dropout)(x_BPD, deterministic=not train)
    block = BlockConfig(num_heads=self.num_heads, d_ff=self.d_ff or 4 * self.d_model,
                        dropout=self.dropout, norm="pre", activation=self.activation,
                        ln_eps=self.ln_eps, attention=self.attention, dtype=self.dtype)
    x_BPD, _ = Stack(block, self.num_layers, scan=self.scan_layers, remat=self.remat,
                     name="blocks")(x_BPD, {}, train=train)
    x_BPD = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="final_ln")(x_BPD)
    pooled_BD = x_BPD[:, 0] if self.pooling == "cls" else jnp.mean(x_BPD, axis=1)
    # Zero-initialised head, as in the ViT paper's fine-tuning recipe.
    return nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                    name="head")(pooled_BD).astype(jnp.float32)


# ------------------------------------------------------------------------------ forecaster


class TransformerForecaster(nn.Module):
  """A Transformer encoder over the look-back window with a flatten-linear horizon head.

  Each time step's E features are projected to D, positions added, the (bidirectional, pre-LN)
  encoder runs over the W steps, and one Dense maps the flattened [W * D] states to the
  [Z, E] forecast. ``instance_norm`` standardises each series by its own look-back mean / std
  and undoes it on the output (RevIN without the affine part), the usual defence against the
  level shifts of ETT-style data.
  """

  num_features: int
  lookback: int
  horizon: int
  num_layers: int
  num_heads: int
  d_model: int
  d_ff: int | None = None
  dropout: float = 0.0
  positions: str = "learned"
  activation: str = "gelu"
  ln_eps: float = LN_EPS
  instance_norm: bool = True
  attention: str = "xla"
  scan_layers: bool = False
  remat: str = "none"
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x_BWE: jax.Array, *, train: bool = False) -> jax.Array:
    _choice("positions", self.positions, POSITIONS)
    b, w, e = x_BWE.shape
    if (w, e) != (self.lookback, self.num_features):
      raise ValueError(f"input has {w} steps x {e} features, the model was built for "
                       f"{self.lookback} x {self.num_features}")
    x_BWE = x_BWE.astype(jnp.float32)
    if self.instance_norm:
      mean_B1E = jnp.mean(x_BWE, axis=1, keepdims=True)
      std_B1E = jnp.sqrt(jnp.var(x_BWE, axis=1, keepdims=True) + 1e-5)
      x_BWE = (x_BWE - mean_B1E) / std_B1E
    h_BWD = nn.Dense(self.d_model, dtype=self.dtype, name="input_proj")(x_BWE)
    positions_BW = jnp.arange(w)[None, :]
    table = (LearnedPositions(w, self.d_model, dtype=self.dtype, name="pos_embed")
             if self.positions == "learned" else None)
    h_BWD = _add_positions(h_BWD, self.positions, positions_BW, w, table)
    h_BWD = nn.Dropout(self.dropout)(h_BWD, deterministic=not train)
    block = BlockConfig(num_heads=self.num_heads, d_ff=self.d_ff or 4 * self.d_model,
                        dropout=self.dropout, norm="pre", activation=self.activation,
                        ln_eps=self.ln_eps,
                        rotary_base=10_000.0 if self.positions == "rotary" else None,
                        attention=self.attention, dtype=self.dtype)
    h_BWD, _ = Stack(block, self.num_layers, scan=self.scan_layers, remat=self.remat,
                     name="blocks")(h_BWD, {"positions": positions_BW}, train=train)
    h_BWD = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="final_ln")(h_BWD)
    y_BZE = nn.Dense(self.horizon * e, dtype=self.dtype, name="head")(
        h_BWD.reshape(b, w * self.d_model)).reshape(b, self.horizon, e).astype(jnp.float32)
    if self.instance_norm:
      y_BZE = y_BZE * std_B1E + mean_B1E
    return y_BZE


# ------------------------------------------------------------------------------ layer layouts


def stack_layer_params(stack_params: dict) -> dict:
  """Unrolled ``layers_0..layers_{L-1}`` -> scanned ``layers`` (leaves get a leading L axis)."""
  n = sum(1 for k in stack_params if k.startswith("layers_"))
  if n == 0:
    raise ConfigError("no unrolled layers (layers_0, layers_1, ...) to stack")
  layers = [stack_params[f"layers_{i}"] for i in range(n)]
  rest = {k: v for k, v in stack_params.items() if not k.startswith("layers_")}
  return {**rest, "layers": jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}


def unstack_layer_params(stack_params: dict) -> dict:
  """Scanned ``layers`` (leading L axis) -> unrolled ``layers_0..layers_{L-1}``."""
  layers = stack_params["layers"]
  n = jax.tree.leaves(layers)[0].shape[0]
  rest = {k: v for k, v in stack_params.items() if k != "layers"}
  return {**rest, **{f"layers_{i}": jax.tree.map(lambda x, i=i: x[i], layers) for i in range(n)}}


# ------------------------------------------------------------------------------ builders
#
# Common ``config.model`` fields: num_layers, num_heads, d_model, d_ff (default 4 * d_model),
# dropout, num_kv_heads (grouped-query attention), attention ("xla" | "cudnn" | "auto"),
# scan_layers (bool), remat ("none" | "full" | "dots"). Each builder lists its own extras.


def _stack_kw(cfg: ml_collections.ConfigDict) -> dict:
  return dict(attention=cfg.get("attention", "xla"), scan_layers=cfg.get("scan_layers", False),
              remat=cfg.get("remat", "none"))


@MODELS.register("gpt", kind="causal_lm", family="transformer")
def build_gpt(cfg: ml_collections.ConfigDict, *, vocab_size: int, max_len: int,
              dtype: jnp.dtype | None = None) -> GPT:
  """GPT from ``config.model``: the common fields plus use_bias, positions ("learned" |
  "sinusoidal" | "rotary"), activation, ln_eps."""
  return GPT(vocab_size=vocab_size, max_len=max_len, num_layers=cfg.num_layers,
             num_heads=cfg.num_heads, d_model=cfg.d_model, d_ff=cfg.get("d_ff", None),
             dropout=cfg.get("dropout", 0.0), use_bias=cfg.get("use_bias", True), dtype=dtype,
             num_kv_heads=cfg.get("num_kv_heads", None),
             positions=_choice("positions", cfg.get("positions", "learned"), POSITIONS),
             activation=cfg.get("activation", "gelu_tanh"), ln_eps=cfg.get("ln_eps", LN_EPS),
             **_stack_kw(cfg))


def build_encoder(cfg: ml_collections.ConfigDict, *, vocab_size: int, max_len: int,
                  dtype: jnp.dtype | None = None, **defaults: Any) -> Encoder:
  """Encoder from ``config.model``; ``defaults`` are the family's values for unset fields."""
  get = lambda k, d=None: cfg.get(k, defaults.get(k, d))
  return Encoder(vocab_size=vocab_size, max_len=max_len, num_layers=cfg.num_layers,
                 num_heads=cfg.num_heads, d_model=cfg.d_model, d_ff=get("d_ff"),
                 dropout=get("dropout", 0.0), attention_dropout=get("attention_dropout"),
                 use_bias=get("use_bias", True), norm=_choice("norm", get("norm", "post"), NORMS),
                 positions=_choice("positions", get("positions", "learned"), POSITIONS),
                 activation=get("activation", "gelu"), ln_eps=get("ln_eps", 1e-12),
                 num_kv_heads=get("num_kv_heads"), dtype=dtype, **_stack_kw(cfg))


@MODELS.register("bert", kind="masked_lm", family="transformer")
def build_bert_mlm(cfg: ml_collections.ConfigDict, *, vocab_size: int, max_len: int,
                   dtype: jnp.dtype | None = None) -> MaskedLM:
  """BERT masked LM: the common fields plus norm (default "post"), positions, activation
  (default exact "gelu"), ln_eps (1e-12), attention_dropout."""
  return MaskedLM(build_encoder(cfg, vocab_size=vocab_size, max_len=max_len, dtype=dtype))


def _build_classifier(cfg, vocab_size, num_classes, max_len, dtype, **defaults):
  pooling = _choice("pooling", cfg.get("pooling", defaults.pop("pooling")), ("cls", "mean"))
  enc = build_encoder(cfg, vocab_size=vocab_size, max_len=max_len, dtype=dtype, **defaults)
  return EncoderClassifier(enc, num_classes=num_classes, pooling=pooling,
                           dropout=cfg.get("dropout", 0.0))


@MODELS.register("bert", kind="classifier", family="transformer")
def build_bert_classifier(cfg: ml_collections.ConfigDict, *, vocab_size: int, num_classes: int,
                          max_len: int, dtype: jnp.dtype | None = None) -> EncoderClassifier:
  """BERT classifier (post-LN encoder, pooling "cls" by default). Its params["encoder"] has the
  layout of the masked_lm "bert" built from the same fields: start from an MLM checkpoint with
  ``with_encoder_from(params, mlm_params)``."""
  return _build_classifier(cfg, vocab_size, num_classes, max_len, dtype, pooling="cls")


@MODELS.register("transformer", kind="classifier", family="transformer")
def build_transformer_classifier(cfg: ml_collections.ConfigDict, *, vocab_size: int,
                                 num_classes: int, max_len: int,
                                 dtype: jnp.dtype | None = None) -> EncoderClassifier:
  """Pre-LN encoder classifier with mean pooling by default (no [CLS] token needed); the same
  fields as "bert" with defaults norm="pre", pooling="mean", ln_eps=1e-5."""
  return _build_classifier(cfg, vocab_size, num_classes, max_len, dtype, pooling="mean",
                           norm="pre", ln_eps=LN_EPS)


@MODELS.register("transformer", kind="seq2seq", family="transformer")
def build_seq2seq(cfg: ml_collections.ConfigDict, *, src_vocab_size: int, tgt_vocab_size: int,
                  max_len: int, dtype: jnp.dtype | None = None) -> EncoderDecoder:
  """Encoder-decoder: the common fields plus num_decoder_layers, norm (default "post"),
  positions (default "sinusoidal"), activation (default "relu"), share_embeddings."""
  return EncoderDecoder(
      src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, max_len=max_len,
      num_layers=cfg.num_layers, num_heads=cfg.num_heads, d_model=cfg.d_model,
      num_decoder_layers=cfg.get("num_decoder_layers", None), d_ff=cfg.get("d_ff", None),
      dropout=cfg.get("dropout", 0.0), attention_dropout=cfg.get("attention_dropout", None),
      norm=_choice("norm", cfg.get("norm", "post"), NORMS),
      positions=_choice("positions", cfg.get("positions", "sinusoidal"), POSITIONS),
      activation=_choice("activation", cfg.get("activation", "relu"), tuple(ACTIVATIONS)),
      share_embeddings=cfg.get("share_embeddings", False),
      num_kv_heads=cfg.get("num_kv_heads", None), dtype=dtype, **_stack_kw(cfg))


@MODELS.register("vit", kind="image_classifier", family="transformer")
def build_vit(cfg: ml_collections.ConfigDict, *, image_shape: tuple[int, int, int],
              num_classes: int, dtype: jnp.dtype | None = None) -> ViT:
  """ViT: the common fields plus patch_size, pooling ("cls" | "mean")."""
  model = ViT(num_classes=num_classes, image_shape=tuple(image_shape),
              patch_size=cfg.patch_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
              d_model=cfg.d_model, d_ff=cfg.get("d_ff", None), dropout=cfg.get("dropout", 0.0),
              pooling=_choice("pooling", cfg.get("pooling", "cls"), ("cls", "mean")),
              attention=cfg.get("attention", "xla"), scan_layers=cfg.get("scan_layers", False),
              remat=cfg.get("remat", "none"), dtype=dtype)
  model.num_patches()  # a bad patch size fails here, before anything is built
  return model


@MODELS.register("transformer", kind="forecaster", family="transformer")
def build_forecaster(cfg: ml_collections.ConfigDict, *, num_features: int, lookback: int,
                     horizon: int, dtype: jnp.dtype | None = None) -> TransformerForecaster:
  """Forecasting encoder: the common fields plus positions, instance_norm (default True)."""
  return TransformerForecaster(
      num_features=num_features, lookback=lookback, horizon=horizon, num_layers=cfg.num_layers,
      num_heads=cfg.num_heads, d_model=cfg.d_model, d_ff=cfg.get("d_ff", None),
      dropout=cfg.get("dropout", 0.0),
      positions=_choice("positions", cfg.get("positions", "learned"), POSITIONS),
      instance_norm=cfg.get("instance_norm", True), dtype=dtype, **_stack_kw(cfg))
