"""The showdown's FLOP counts (XLA cost analysis) against hand counts, one small model of each
family: GPT, LSTM and minGRU train steps (showdown_steps.count_flops, scans unrolled) and a DiT
denoiser's forward pass.

The closed forms count the matrix multiplications only (2 FLOPs per multiply-add; a train step
is forward + the two backward products = 3x, so 6 per weight per token), plus attention's
QK^T and AV. XLA also counts the element-wise work (gates, softmax, GELU, LayerNorm, the loss,
AdamW), so its count must sit at or above the closed form and within the stated tolerance.
"""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from experiments import showdown, showdown_steps
from seqgen_jax.registry import MODELS
from seqgen_jax.train import loop

B, LENGTH, DELAY, ALPHABET = 8, 4, 24, 6  # copy task: T = 2 * 4 + 24 = 32 inputs per row
T, V = 2 * LENGTH + DELAY, ALPHABET + 2
D, H, LAYERS, HEADS, D_FF, MLP = 64, 128, 2, 4, 256, 4


def _config(model: str):
  s = showdown.preset("quick", "copy")
  s.batch_size = B
  s.model = dict(d_model=D, hidden_size=H, num_layers=LAYERS, num_heads=HEADS, d_ff=D_FF,
                 mlp_ratio=MLP, dropout=0.0)
  data = dict(name="copy", length=LENGTH, delay=DELAY, alphabet=ALPHABET)
  return showdown.make_config(s, "lm", model, data)


def test_gpt_train_step_flops():
  n_matmul = LAYERS * (4 * D * D + 2 * D * D_FF) + D * V  # q, k, v, out, MLP; tied head
  hand = B * T * (6 * n_matmul + 12 * LAYERS * T * D)  # + QK^T and AV, forward and backward
  xla = showdown_steps.count_flops(_config("gpt"))
  assert 1.0 <= xla / hand < 1.10, (xla, hand)


def test_lstm_train_step_flops_count_every_time_step():
  # Gates [i, f, g, o] = W_ih x + W_hh h: 4H x (input + H) per layer; head H -> V.
  n_matmul = 4 * H * (D + H) + (LAYERS - 1) * 4 * H * (H + H) + H * V
  hand = 6 * n_matmul * B * T
  config = _config("lstm")
  xla = showdown_steps.count_flops(config)
  assert 1.0 <= xla / hand < 1.15, (xla, hand)
  # Why the scan is unrolled for counting: the plain step's count has the recurrent part once.
  config.model.unroll = 1
  once = loop.step_flops(showdown_steps._build(config)[3], "jit")
  assert once < 0.6 * hand, (once, hand)


def test_mingru_train_step_flops():
  # Per block: proj D -> 2H (z and h~), out H -> D, MLP D -> 4D -> D; head D -> V.
  n_matmul = LAYERS * (2 * H * D + H * D + 2 * MLP * D * D) + D * V
  hand = 6 * n_matmul * B * T
  xla = showdown_steps.count_flops(_config("mingru"))
  assert 1.0 <= xla / hand < 1.15, (xla, hand)


def test_dit_forward_flops():
  img, p, c, d, depth, heads, freq = 16, 2, 3, 64, 2, 4, 256
  n = (img // p) ** 2
  cfg = ml_collections.ConfigDict(dict(patch_size=p, hidden_size=d, depth=depth,
                                       num_heads=heads, freq_dim=freq))
  model = MODELS.get("dit", kind="denoiser")(cfg, image_shape=(img, img, c))
  x = jnp.zeros((1, img, img, c))
  t = jnp.zeros((1,))
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t)
  xla = jax.jit(model.apply).lower(params, x, t).cost_analysis()["flops"]
  per_block = (2 * d * 6 * d  # adaLN modulation of c
               + 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d  # qkv, QK^T + AV, proj
               + 2 * 2 * n * d * 4 * d)  # MLP
  hand = (2 * n * p * p * c * d  # patch embedding
          + 2 * freq * d + 2 * d * d  # timestep MLP
          + depth * per_block
          + 2 * d * 2 * d + 2 * n * d * p * p * c)  # final adaLN and linear
  assert 1.0 <= xla / hand < 1.15, (xla, hand)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["rnn", "gru", "lru"])
def test_other_recurrent_counts_are_at_least_the_matmuls(model):
  """Looser: the count covers every time step (at least the matmul closed form)."""
  if model == "rnn":
    n_matmul = H * (D + H) + (LAYERS - 1) * H * 2 * H + H * V
  elif model == "gru":
    n_matmul = 3 * H * (D + H) + (LAYERS - 1) * 3 * H * 2 * H + H * V
  else:  # LRU: B (D -> N complex: 2 real products), C (N complex -> D: 2), MLP, head
    n_matmul = LAYERS * (2 * H * D + 2 * H * D + 2 * MLP * D * D) + D * V
  xla = showdown_steps.count_flops(_config(model))
  assert 1.0 <= xla / (6 * n_matmul * B * T) < 1.5, model
