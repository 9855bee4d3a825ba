"""Encoder-decoder RNN with additive attention (Bahdanau, Cho & Bengio 2015).

Encoder: embedding -> bidirectional ``StackedRNN`` (any cell) over the masked source; its outputs
h_j (forward ++ backward, 2H wide) are the memory. Decoder, per target step t, from the previous
state s_{t-1} (top layer's h):

  e_tj = v^T tanh(W_q s_{t-1} + W_k h_j)   (masked source positions get -inf)
  alpha_t = softmax_j(e_tj);   c_t = sum_j alpha_tj h_j
  s_t = stacked cells([E y_{t-1} ; c_t], s_{t-1})
  logits_t = W_o tanh(W_p [s_t ; c_t ; E y_{t-1}] + b_p) + b_o

The initial decoder state is s_0 = tanh(W_s [final forward ; final backward encoder state]) for
each decoder layer (Bahdanau et al. use the backward state only; LSTM cells start with c = 0).
Simplifications against the paper, named here: a tanh "deep output" layer in place of maxout,
computed from the new state s_t; dropout on the embeddings, between encoder layers and before the
output layer, not between decoder layers (it would have to live inside the scan).

The teacher-forced forward and cached decoding run the same ``lax.scan`` step, and the cache is
the memory, its projected keys, the source mask and the decoder state.

Axis key: B batch, S source position, T target position, E embedding width, H hidden units,
M memory width (2H), A attention width, V target vocabulary, L decoder layers, F = H + M + E
deep-output features.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from seqgen_jax.nn.rnn import CELLS, StackedRNN, check_choice, project_inputs
from seqgen_jax.registry import MODELS

f32 = jnp.float32
Cache = dict[str, Any]


class Seq2SeqRNN(nn.Module):
  """Bidirectional RNN encoder + attentional RNN decoder; see the module docstring."""

  src_vocab_size: int
  tgt_vocab_size: int
  cell: str = "gru"
  embed_size: int = 256
  hidden_size: int = 256
  num_layers: int = 1
  attention_size: int = 256
  dropout: float = 0.0
  unroll: int = 1
  dtype: Any = None

  def setup(self):
    h, a, m = self.hidden_size, self.attention_size, 2 * self.hidden_size
    self.src_embed = nn.Embed(self.src_vocab_size, self.embed_size, dtype=self.dtype)
    self.tgt_embed = nn.Embed(self.tgt_vocab_size, self.embed_size, dtype=self.dtype)
    self.encoder = StackedRNN(self.cell, h, num_layers=self.num_layers, bidirectional=True,
                              dropout=self.dropout, unroll=self.unroll, dtype=self.dtype)
    self.bridge = nn.Dense(self.num_layers * h, dtype=self.dtype)
    init = nn.initializers.lecun_normal()
    self.w_q = self.param("attn_w_q", init, (h, a))
    self.w_k = self.param("attn_w_k", init, (m, a))
    self.v = self.param("attn_v", nn.initializers.normal(1 / a ** 0.5), (a,))
    cls = CELLS[self.cell]
    self.dec_cells = [cls(h, self.embed_size + m if k == 0 else h, dtype=self.dtype)
                      for k in range(self.num_layers)]  # params: dec_cells_{k}
    self.pre_out = nn.Dense(self.embed_size, dtype=self.dtype)
    self.out = nn.Dense(self.tgt_vocab_size, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)

  # ---------------------------------------------------------------- encoder

  def encode(self, src_BS: jax.Array, src_mask_BS: jax.Array, *, train: bool = False
             ) -> dict[str, Any]:
    """Memory: the encoder outputs [B, S, M] and its final states."""
    x_BSE = self.drop(self.src_embed(src_BS), deterministic=not train)
    y_BSM, state = self.encoder(x_BSE, src_mask_BS, train=train)
    return {"outputs": y_BSM, "final": state}

  def init_cache(self, memory: dict[str, Any], src_mask_BS: jax.Array, max_len: int) -> Cache:
    """Projected keys, memory, mask and the initial decoder state (size independent of
    ``max_len``)."""
    del max_len
    y_BSM = memory["outputs"]
    b, h = y_BSM.shape[0], self.hidden_size
    top_BM = jnp.concatenate([memory["final"][0][-2], memory["final"][0][-1]], axis=-1)
    s0_BLH = jnp.tanh(self.bridge(top_BM).astype(f32)).reshape(b, self.num_layers, h)
    s0_LBH = s0_BLH.swapaxes(0, 1)
    state = tuple((s0_LBH[k],) + (jnp.zeros_like(s0_LBH[k]),) * (CELLS[self.cell].num_state - 1)
                  for k in range(self.num_layers))
    dt = self.dtype or f32
    keys_BSA = jnp.matmul(y_BSM.astype(dt), self.w_k.astype(dt)).astype(f32)
    return {"keys": keys_BSA, "values": y_BSM.astype(f32), "mask": src_mask_BS.astype(bool),
            "state": state}

  # ---------------------------------------------------------------- decoder

  def _decode(self, tokens_BT: jax.Array, cache: Cache, train: bool
              ) -> tuple[jax.Array, Cache]:
    dt = self.dtype or f32
    emb_BTE = self.drop(self.tgt_embed(tokens_BT), deterministic=not train)
    ws = [c.weights() for c in self.dec_cells]
    w_q_HA, v_A = self.w_q.astype(dt), self.v.astype(f32)
    step = CELLS[self.cell].step
    keys_BSA, values_BSM, mask_BS = cache["keys"], cache["values"], cache["mask"]

    def body(state, emb_BE):
      q_BA = jnp.matmul(state[-1][0].astype(dt), w_q_HA).astype(f32)
      e_BS = jnp.tanh(keys_BSA + q_BA[:, None]) @ v_A
      alpha_BS = jax.nn.softmax(jnp.where(mask_BS, e_BS, -jnp.inf), axis=-1)
      ctx_BM = jnp.einsum("bs,bsm->bm", alpha_BS, values_BSM)
      inp_BX = jnp.concatenate([emb_BE.astype(f32), ctx_BM], axis=-1)  # X = E + M, then H
      new_state = []
      for w, s in zip(ws, state):
        s = step(w, s, project_inputs(w, inp_BX))
        new_state.append(s)
        inp_BX = s[0]
      return tuple(new_state), (inp_BX, ctx_BM)

    state, (s_TBH, ctx_TBM) = jax.lax.scan(body, cache["state"], emb_BTE.swapaxes(0, 1),
                                           unroll=self.unroll)
    feats_BTF = jnp.concatenate([s_TBH.swapaxes(0, 1), ctx_TBM.swapaxes(0, 1),
                                 emb_BTE.astype(f32)], axis=-1).astype(dt)
    pre_BTE = jnp.tanh(self.pre_out(feats_BTF))
    logits_BTV = self.out(self.drop(pre_BTE, deterministic=not train)).astype(f32)
    return logits_BTV, {**cache, "state": state}

  def decode(self, tokens_BT: jax.Array, cache: Cache, position: jax.Array
             ) -> tuple[jax.Array, Cache]:
    """Logits for ``tokens_BT`` continuing from ``cache``; the updated cache."""
    del position  # the decoder state carries the history
    return self._decode(tokens_BT, cache, False)

  def __call__(self, src_BS: jax.Array, src_mask_BS: jax.Array, tgt_in_BT: jax.Array, *,
               train: bool = False) -> jax.Array:
    """Teacher-forced logits [B, T, V]."""
    memory = self.encode(src_BS, src_mask_BS, train=train)
    cache = self.init_cache(memory, src_mask_BS, tgt_in_BT.shape[1])
    return self._decode(tgt_in_BT, cache, train)[0]


def build_seq2seq(name: str, cfg: ml_collections.ConfigDict, *, src_vocab_size: int,
                  tgt_vocab_size: int, max_len: int, dtype: Any = None) -> Seq2SeqRNN:
  """``config.model``: d_model [256] (embeddings), hidden_size [256], num_layers [1],
  attention_size [hidden_size], dropout [0.0], unroll [1]."""
  del max_len
  check_choice("seq2seq RNN cell", name, tuple(CELLS))
  h = cfg.get("hidden_size", 256)
  return Seq2SeqRNN(src_vocab_size, tgt_vocab_size, cell=name, embed_size=cfg.get("d_model", 256),
                    hidden_size=h, num_layers=cfg.get("num_layers", 1),
                    attention_size=cfg.get("attention_size", h), dropout=cfg.get("dropout", 0.0),
                    unroll=cfg.get("unroll", 1), dtype=dtype)


for _name in CELLS:
  MODELS.register(_name, kind="seq2seq", family="recurrent", attention="additive")(
      functools.partial(build_seq2seq, _name))
