"""The shared Transformer machinery every Transformer model here is built from.

One ``Block`` (pre-LN or post-LN; self-attention, optional cross-attention, MLP) is stacked by
``Stack``, either unrolled (params ``layers_0``, ``layers_1``, ...) or as one ``nn.scan`` over
layers (params ``layers`` with a leading layer axis: one compiled block, so compile time does not
grow with depth), optionally rematerialised (``nn.remat``) to trade compute for activation
memory. ``stack_layer_params`` / ``unstack_layer_params`` convert between the two layouts.

KV caches (``zero_kv_cache``, the models' ``init_cache`` / ``decode``) are plain pytrees whose
every leaf has the batch as its leading axis, so generic decoders (seqgen_jax/decoding.py) can
tile and reorder them.

The models live one per file and register their own builders: gpt.py (decoder-only LM),
bert.py (encoder, masked LM, classifiers), encoder_decoder.py (Vaswani et al. 2017), vit.py,
transformer_forecaster.py, bidirectional_gpt.py (MDLM's backbone).

Axis key: B batch, T target / query positions, S source / key positions, D model width,
F MLP width, K key/value heads, H head width, L layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from seqgen_jax.errors import ConfigError
from seqgen_jax.nn.attention import IMPLEMENTATIONS, MultiHeadAttention
from seqgen_jax.nn.embeddings import sinusoidal_positions

LN_EPS = 1e-5  # GPT-2's LayerNorm epsilon
ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=False),  # exact erf form (BERT, ViT)
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),  # tanh approximation (GPT-2)
    "relu": nn.relu,  # the original Transformer
}
NORMS = ("pre", "post")
POSITIONS = ("learned", "sinusoidal", "rotary")
POOLINGS = ("cls", "mean")  # the state at a leading [CLS] token, or the mean over real tokens
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,  # recompute the whole block
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
}


def choice(field: str, value: Any, allowed: Sequence[Any]) -> Any:
  """Returns ``value`` if it is one of ``allowed``, else raises a one-line ConfigError."""
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
    choice("norm", self.norm, NORMS)
    choice("activation", self.activation, tuple(ACTIVATIONS))
    choice("attention implementation", self.attention, IMPLEMENTATIONS)


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
    """[B, T, D] -> [B, T, D]."""
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
    """(x_BTD after the block, the layer's cache or None); see the class docstring."""
    c, d = self.cfg, x_BTD.shape[-1]
    if self.mode == "prime":
      k_BSKH, v_BSKH = self._attention(d, self_attention=False, name="cross_attn").project_kv(
          ctx["memory"])
      return x_BTD, {"cross_k": k_BSKH, "cross_v": v_BSKH}
    drop = nn.Dropout(c.dropout, deterministic=self.deterministic)

    def residual(x_BTD, ln_name, f):
      ln = nn.LayerNorm(epsilon=c.ln_eps, use_bias=c.use_bias, dtype=c.dtype, name=ln_name)
      y_BTD, aux = f(ln(x_BTD) if c.norm == "pre" else x_BTD)
      x_BTD = x_BTD + drop(y_BTD)
      return (x_BTD if c.norm == "pre" else ln(x_BTD)), aux

    attn = self._attention(d, self_attention=True, name="attn")
    if self.mode == "decode":
      x_BTD, self_kv = residual(x_BTD, "ln1", lambda h_BTD: attn.decode(
          h_BTD, {"k": cache["k"], "v": cache["v"]}, ctx["position"]))
      cache = {**cache, **self_kv}
    else:
      x_BTD, _ = residual(x_BTD, "ln1", lambda h_BTD: (attn(
          h_BTD, mask=ctx.get("mask"), causal=c.causal, positions_BT=ctx.get("positions"),
          deterministic=self.deterministic), None))
    if c.cross_attention:
      xattn = self._attention(d, self_attention=False, name="cross_attn")
      if self.mode == "decode":
        k_BSKH, v_BSKH = cache["cross_k"], cache["cross_v"]
      else:
        k_BSKH, v_BSKH = xattn.project_kv(ctx["memory"])
      x_BTD, _ = residual(x_BTD, "ln_cross", lambda h_BTD: (xattn.cross(
          h_BTD, k_BSKH, v_BSKH, mask=ctx.get("memory_mask"), deterministic=self.deterministic),
          None))
    mlp = MLP(c.d_ff, use_bias=c.use_bias, init_std=c.init_std, out_init_std=c.out_init_std,
              activation=c.activation, dtype=c.dtype, name="mlp")
    x_BTD, _ = residual(x_BTD, "ln2", lambda h_BTD: (mlp(h_BTD), None))
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
    """(x_BTD after every layer, the caches or None); ``mode`` as in ``Block``."""
    choice("remat", self.remat, tuple(REMAT_POLICIES))
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


def zero_kv_cache(block: BlockConfig, d_model: int, num_layers: int, scan: bool,
                  batch_size: int, max_len: int) -> Any:
  """An empty self-attention KV cache for ``max_len`` positions in the layout ``Stack`` uses."""
  k = block.num_kv_heads or block.num_heads
  shape_BSKH = (batch_size, max_len, k, d_model // block.num_heads)
  dtype = block.dtype or jnp.float32
  if scan:
    shape_BLSKH = shape_BSKH[:1] + (num_layers,) + shape_BSKH[1:]
    return {"k": jnp.zeros(shape_BLSKH, dtype), "v": jnp.zeros(shape_BLSKH, dtype)}
  return tuple({"k": jnp.zeros(shape_BSKH, dtype), "v": jnp.zeros(shape_BSKH, dtype)}
               for _ in range(num_layers))


def add_positions(x_BTD: jax.Array, kind: str, positions_BT: jax.Array, max_len: int,
                  table: nn.Module | None) -> jax.Array:
  """Adds learned or sinusoidal position embeddings (rotary ones live in the attention)."""
  if kind == "learned":
    return x_BTD + table(positions_BT).astype(x_BTD.dtype)
  if kind == "sinusoidal":
    pe_TD = sinusoidal_positions(max_len, x_BTD.shape[-1])
    return x_BTD + jnp.take(pe_TD, positions_BT, axis=0).astype(x_BTD.dtype)
  return x_BTD


def check_len(t: int, max_len: int) -> None:
  """Raises a one-line ValueError when a sequence of length ``t`` exceeds ``max_len``."""
  if t > max_len:
    raise ValueError(f"sequence length {t} exceeds the model's max_len={max_len}")


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



# ------------------------------------------------------------------------------ builder helpers
#
# Common ``config.model`` fields of the Transformer builders: num_layers, num_heads, d_model,
# d_ff (default 4 * d_model), dropout, num_kv_heads (grouped-query attention), attention ("xla" |
# "blockwise" | "cudnn" | "auto"), scan_layers (bool), remat ("none" | "full" | "dots"). Each
# builder lists its own extras.


def stack_kw(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """The ``Stack`` fields every Transformer builder reads: attention, scan_layers, remat."""
  return dict(attention=cfg.get("attention", "xla"), scan_layers=cfg.get("scan_layers", False),
              remat=cfg.get("remat", "none"))
