"""A Transformer encoder for time-series forecasting: registers the forecaster "transformer".

Axis key: B batch, W look-back window, Z forecast horizon, E input features, D model width.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from seqgen_jax.nn.embeddings import LearnedPositions
from seqgen_jax.nn.transformer import (
    LN_EPS,
    POSITIONS,
    BlockConfig,
    Stack,
    add_positions,
    choice,
    stack_kw,
)
from seqgen_jax.registry import MODELS


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
    """The float32 forecast [B, Z, E] of the look-back window ``x_BWE``."""
    choice("positions", self.positions, POSITIONS)
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
    h_BWD = add_positions(h_BWD, self.positions, positions_BW, w, table)
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

@MODELS.register("transformer", kind="forecaster", family="transformer")
def build_forecaster(cfg: ml_collections.ConfigDict, *, num_features: int, lookback: int,
                     horizon: int, dtype: jnp.dtype | None = None) -> TransformerForecaster:
  """Forecasting encoder: the common fields plus positions, instance_norm (default True)."""
  return TransformerForecaster(
      num_features=num_features, lookback=lookback, horizon=horizon, num_layers=cfg.num_layers,
      num_heads=cfg.num_heads, d_model=cfg.d_model, d_ff=cfg.get("d_ff", None),
      dropout=cfg.get("dropout", 0.0),
      positions=choice("positions", cfg.get("positions", "learned"), POSITIONS),
      instance_norm=cfg.get("instance_norm", True), dtype=dtype, **stack_kw(cfg))
