"""Recurrent cells (Elman RNN, LSTM, GRU) and the layer that runs them over time.

Cells follow the PyTorch / cuDNN equations and gate order, so weights copy over unchanged:

  Elman:  h' = tanh(W_ih x + b_ih + W_hh h + b_hh)     (or relu: ``nonlinearity="relu"``)
  LSTM:   i, f, g, o = split(W_ih x + b_ih + W_hh h + b_hh)       (gate order i, f, g, o)
          c' = sigmoid(f) * c + sigmoid(i) * tanh(g);   h' = sigmoid(o) * tanh(c')
  GRU:    r, z, n gates (order r, z, n):
          r = sigmoid(W_ir x + b_ir + W_hr h + b_hr);   z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
          n = tanh(W_in x + b_in + r * (W_hn h + b_hn));   h' = (1 - z) * n + z * h

The GRU is the cuDNN / PyTorch variant. Cho et al. (2014) apply the reset gate *before* the
recurrent matmul, n = tanh(W_in x + U_n (r * h)), and have one bias per gate. Here r scales the
already-computed W_hn h + b_hn, so all three recurrent products come from one [H, 3H] matmul
before r is known (one GEMM per step instead of two), at the cost of a second bias vector. The two
are different functions of the same weights (they agree only in special cases, e.g. a diagonal
U_n with no hidden bias), so weights do not transfer between them. The update itself,
h' = (1 - z) * n + z * h, is the same in both.

Parameter layout (one cell per layer and direction, named as PyTorch names its tensors):
``params["l{k}"]`` (forward) and ``params["l{k}_reverse"]`` (backward) hold
``w_ih [I, G*H] = weight_ih_l{k}.T``, ``w_hh [H, G*H] = weight_hh_l{k}.T``,
``b_ih = bias_ih_l{k}``, ``b_hh = bias_hh_l{k}`` (G = 1, 4, 3 gates); ``params_from_torch`` does
the copy and ``stacked_rnn_from_torch`` also builds the matching layer (a torch.nn.RNN's
nonlinearity, tanh or relu, is not in its state_dict: it is read from the module). States are
tuples of [N, B, H] arrays with N = num_layers * num_directions in PyTorch's order (layer 0
forward, layer 0 backward, layer 1 forward, ...): ``(h,)`` for the Elman RNN and the GRU,
``(h, c)`` for the LSTM, so ``state[0]`` is always h.

``StackedRNN`` runs the cells with ``jax.lax.scan``. The input projection W_ih x + b_ih of all
steps is one matmul before the scan (as cuDNN does); only the recurrent product is inside it.
Both directions of a bidirectional layer share one scan (vmapped over the direction). Padding:
a step whose mask is False leaves the state unchanged and outputs zeros, so the final state is the
one after each sequence's own last real token and the backward direction starts at it. With
``impl="cudnn"`` an LSTM runs as one fused cuDNN kernel per call (``jax.experimental.rnn.lstm``)
on a GPU and falls back to the scan elsewhere.

Gates and states are computed in float32 whatever the compute dtype (the matmuls use it).

Axis key: B batch, T time, I input features (of the layer at hand), H hidden units, G gates * H,
N layers * directions, d direction.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from absl import logging

from seqgen_jax.errors import ConfigError

State = tuple[jax.Array, ...]
Weights = dict[str, jax.Array]
Precision = jax.lax.PrecisionLike
f32 = jnp.float32

RNN_IMPLS = ("scan", "cudnn")
NONLINEARITIES = {"tanh": jnp.tanh, "relu": jax.nn.relu}  # of the Elman cell, as torch.nn.RNN


def check_choice(what: str, value: Any, allowed: Sequence[Any]) -> None:
  """Raises a one-line ConfigError unless ``value`` is one of ``allowed``."""
  if value not in allowed:
    raise ConfigError(f"unknown {what} {value!r}; choose one of: "
                      f"{', '.join(str(a) for a in allowed)}")


# ------------------------------------------------------------------------------ pure step math


def project_inputs(w: Weights, x_BTI: jax.Array, precision: Precision = None) -> jax.Array:
  """W_ih x + b_ih for every step at once: [..., I] -> [..., G*H]."""
  x_BTI = x_BTI.astype(w["w_ih"].dtype)
  return jnp.matmul(x_BTI, w["w_ih"], precision=precision) + w["b_ih"]


def _recurrent(w: Weights, h_BH: jax.Array, precision: Precision) -> jax.Array:
  hp_BG = jnp.matmul(h_BH.astype(w["w_hh"].dtype), w["w_hh"], precision=precision) + w["b_hh"]
  return hp_BG.astype(f32)


def rnn_step(w: Weights, carry: State, xp_BG: jax.Array, precision: Precision = None,
             nonlinearity: str = "tanh") -> State:
  """Elman step: h' = tanh(xp + W_hh h + b_hh) (or relu)."""
  (h_BH,) = carry
  return (NONLINEARITIES[nonlinearity](xp_BG.astype(f32) + _recurrent(w, h_BH, precision)),)


def lstm_step(w: Weights, carry: State, xp_BG: jax.Array, precision: Precision = None) -> State:
  """LSTM step (gate order i, f, g, o); carry (h, c)."""
  h_BH, c_BH = carry
  z_BG = xp_BG.astype(f32) + _recurrent(w, h_BH, precision)
  i_BH, f_BH, g_BH, o_BH = jnp.split(z_BG, 4, axis=-1)
  c_BH = jax.nn.sigmoid(f_BH) * c_BH + jax.nn.sigmoid(i_BH) * jnp.tanh(g_BH)
  return jax.nn.sigmoid(o_BH) * jnp.tanh(c_BH), c_BH


def gru_step(w: Weights, carry: State, xp_BG: jax.Array, precision: Precision = None) -> State:
  """GRU step, cuDNN form: the reset gate scales (W_hn h + b_hn)."""
  (h_BH,) = carry
  xr_BH, xz_BH, xn_BH = jnp.split(xp_BG.astype(f32), 3, axis=-1)
  hr_BH, hz_BH, hn_BH = jnp.split(_recurrent(w, h_BH, precision), 3, axis=-1)
  r_BH = jax.nn.sigmoid(xr_BH + hr_BH)
  z_BH = jax.nn.sigmoid(xz_BH + hz_BH)
  n_BH = jnp.tanh(xn_BH + r_BH * hn_BH)
  return ((1.0 - z_BH) * n_BH + z_BH * h_BH,)


# ------------------------------------------------------------------------------ cells


def _blockwise_orthogonal(num_gates: int):
  """One orthogonal [H, H] block per gate, side by side: [H, num_gates * H]."""

  def init(key, shape, dtype=f32):
    keys = jax.random.split(key, num_gates)
    blocks = [nn.initializers.orthogonal()(k, (shape[0], shape[0]), dtype) for k in keys]
    return jnp.concatenate(blocks, axis=1)

  return init


class _Cell(nn.Module):
  """One recurrent step with PyTorch-layout weights; subclasses fix the gates and the math.

  Calling the cell runs one step: ``cell(carry, x_BI) -> (carry, h_BH)``. Layers instead read
  ``weights()`` once and scan the pure ``step`` function over time.
  """

  hidden_size: int
  input_size: int
  dtype: Any = None  # compute dtype of the matmuls; None: float32
  param_dtype: Any = f32
  precision: Any = None

  num_gates: ClassVar[int] = 1
  num_state: ClassVar[int] = 1
  step: ClassVar[Callable[..., State]]

  @nn.nowrap
  def _bias_init(self, key, shape, dtype=f32):
    return jnp.zeros(shape, dtype)

  def setup(self):
    g = self.num_gates * self.hidden_size
    self.w_ih = self.param("w_ih", nn.initializers.lecun_normal(), (self.input_size, g),
                           self.param_dtype)
    self.w_hh = self.param("w_hh", _blockwise_orthogonal(self.num_gates), (self.hidden_size, g),
                           self.param_dtype)
    self.b_ih = self.param("b_ih", self._bias_init, (g,), self.param_dtype)
    self.b_hh = self.param("b_hh", nn.initializers.zeros, (g,), self.param_dtype)

  def weights(self) -> Weights:
    """The four weight arrays, cast to the compute dtype."""
    dt = self.dtype or f32
    return {"w_ih": self.w_ih.astype(dt), "w_hh": self.w_hh.astype(dt),
            "b_ih": self.b_ih.astype(dt), "b_hh": self.b_hh.astype(dt)}

  def initial_state(self, batch_size: int) -> State:
    """Zeros: a tuple of ``num_state`` [B, H] float32 arrays."""
    return tuple(jnp.zeros((batch_size, self.hidden_size), f32) for _ in range(self.num_state))

  def __call__(self, carry: State, x_BI: jax.Array) -> tuple[State, jax.Array]:
    """One step on input ``x_BI``: (the new carry, its h [B, H])."""
    w = self.weights()
    carry = self.step_fn()(w, carry, project_inputs(w, x_BI, self.precision), self.precision)
    return carry, carry[0]

  @nn.nowrap
  def step_fn(self) -> Callable[..., State]:
    """The pure step function this cell applies."""
    return type(self).step


class SimpleRNNCell(_Cell):
  """Elman RNN cell with tanh (torch.nn.RNN's default nonlinearity) or relu."""

  nonlinearity: str = "tanh"
  step = staticmethod(rnn_step)

  @nn.nowrap
  def step_fn(self) -> Callable[..., State]:
    """``rnn_step`` with this cell's nonlinearity."""
    return cell_step("rnn", self.nonlinearity)


class LSTMCell(_Cell):
  """LSTM cell (Hochreiter & Schmidhuber 1997, with forget gate); carry (h, c).

  ``forget_bias`` initialises the forget-gate slice of b_ih (1.0 as recommended by Jozefowicz et
  al. 2015, so that the cell remembers by default early in training); it is an ordinary trained
  parameter, so the cell stays exactly PyTorch's / cuDNN's LSTM.
  """

  forget_bias: float = 1.0
  num_gates: ClassVar[int] = 4
  num_state: ClassVar[int] = 2
  step = staticmethod(lstm_step)

  @nn.nowrap
  def _bias_init(self, key, shape, dtype=f32):
    h = self.hidden_size
    return jnp.zeros(shape, dtype).at[h:2 * h].set(self.forget_bias)


class GRUCell(_Cell):
  """GRU cell in the cuDNN / PyTorch formulation (see the module docstring)."""

  num_gates: ClassVar[int] = 3
  step = staticmethod(gru_step)


CELLS: dict[str, type[_Cell]] = {"rnn": SimpleRNNCell, "lstm": LSTMCell, "gru": GRUCell}


def cell_step(cell: str, nonlinearity: str = "tanh") -> Callable[..., State]:
  """The pure step function of ``cell``; ``nonlinearity`` (tanh | relu) is the Elman cell's."""
  check_choice("RNN cell", cell, tuple(CELLS))
  check_choice("nonlinearity", nonlinearity, tuple(NONLINEARITIES))
  if cell == "rnn":
    return functools.partial(rnn_step, nonlinearity=nonlinearity)
  if nonlinearity != "tanh":
    raise ConfigError(f"nonlinearity={nonlinearity!r} applies only to the 'rnn' cell, not "
                      f"'{cell}'")
  return CELLS[cell].step


def cell_name(layer: int, direction: int) -> str:
  """PyTorch's suffix for a layer and direction: l0, l0_reverse, l1, ..."""
  return f"l{layer}" + ("_reverse" if direction else "")


# ------------------------------------------------------------------------------ the scan


def _masked_step(step: Callable[..., State], precision: Precision, w: Weights, carry: State,
                 xp_BG: jax.Array, m_B: jax.Array) -> tuple[State, jax.Array]:
  new = step(w, carry, xp_BG, precision)
  carry = tuple(jnp.where(m_B[:, None], n, c) for n, c in zip(new, carry))
  return carry, jnp.where(m_B[:, None], carry[0], 0.0)


def scan_directions(step: Callable[..., State], ws: list[Weights], xps_BTG: list[jax.Array],
                    mask_BT: jax.Array, carries: list[State], *, unroll: int = 1,
                    precision: Precision = None) -> tuple[list[jax.Array], list[State]]:
  """Runs one layer's directions (1: forward, 2: forward and backward) in a single lax.scan.

  The backward direction reads the sequence reversed in time. Masked steps leave the state
  unchanged, so with any padding the backward direction starts at the last real token.
  Returns the per-direction outputs [B, T, H] (zeros at masked steps) and final states.
  """
  m_TB = mask_BT.T
  if len(ws) == 1:
    body = lambda c, xs: _masked_step(step, precision, ws[0], c, *xs)
    carry, y_TBH = jax.lax.scan(body, carries[0], (xps_BTG[0].swapaxes(0, 1), m_TB),
                                unroll=unroll)
    return [y_TBH.swapaxes(0, 1)], [carry]
  w_d = jax.tree.map(lambda *a: jnp.stack(a), *ws)
  carry_d = jax.tree.map(lambda *a: jnp.stack(a), *carries)
  x_TdBG = jnp.stack([xps_BTG[0].swapaxes(0, 1), xps_BTG[1].swapaxes(0, 1)[::-1]], axis=1)
  m_TdB = jnp.stack([m_TB, m_TB[::-1]], axis=1)
  vstep = jax.vmap(lambda w, c, x, m: _masked_step(step, precision, w, c, x, m))
  carry_d, y_TdBH = jax.lax.scan(lambda c, xs: vstep(w_d, c, *xs), carry_d, (x_TdBG, m_TdB),
                                 unroll=unroll)
  ys_BTH = [y_TdBH[:, 0].swapaxes(0, 1), y_TdBH[::-1, 1].swapaxes(0, 1)]
  return ys_BTH, [tuple(s[0] for s in carry_d), tuple(s[1] for s in carry_d)]


# ------------------------------------------------------------------------------ fused cuDNN LSTM

_fallback_logged = False


def cudnn_lstm_available() -> bool:
  """True on a CUDA GPU, where ``jax.experimental.rnn.lstm`` lowers to cuDNN's fused LSTM.

  (ROCm has a MIOpen lowering, but with its own gate order; it is not wired up here.)
  """
  if jax.default_backend() != "gpu":
    return False
  return "rocm" not in jax.extend.backend.get_backend().platform_version.lower()


def _log_cudnn_fallback_once() -> None:
  global _fallback_logged
  if not _fallback_logged:
    _fallback_logged = True
    logging.warning("lstm_impl='cudnn' needs a CUDA GPU (JAX backend is '%s'); running the "
                    "lax.scan LSTM instead (same parameters, same results)",
                    jax.default_backend())


def pack_cudnn_lstm_weights(ws: Sequence[Weights]) -> jax.Array:
  """Our per-(layer, direction) LSTM weights -> cuDNN's flat float32 vector.

  ``ws`` is in pseudo-layer order (layer 0 forward, layer 0 backward, layer 1 forward, ...).
  Layout (see jax.experimental.rnn): every pseudo-layer's W_ih [4H, I] then W_hh [4H, H], then
  every pseudo-layer's b_ih then b_hh; the gate order i, f, g, o is the same as ours.
  """
  mats = [m for w in ws for m in (w["w_ih"].T, w["w_hh"].T)]
  biases = [b for w in ws for b in (w["b_ih"], w["b_hh"])]
  return jnp.concatenate([a.astype(f32).reshape(-1) for a in mats + biases])


def fused_lstm(ws: Sequence[Weights], x_BTI: jax.Array, lengths_B: jax.Array, h0_NBH: jax.Array,
               c0_NBH: jax.Array, *, num_layers: int, bidirectional: bool,
               precision: Precision = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``num_layers`` LSTM layers as one cuDNN call (float32, right-padded ``lengths_B``)."""
  from jax.experimental import rnn as jrnn

  hidden = ws[0]["w_hh"].shape[0]
  return jrnn.lstm(x_BTI.astype(f32), h0_NBH, c0_NBH, pack_cudnn_lstm_weights(ws),
                   lengths_B.astype(jnp.int32), input_size=x_BTI.shape[-1], hidden_size=hidden,
                   num_layers=num_layers, dropout=0.0, bidirectional=bidirectional,
                   precision=precision)


# ------------------------------------------------------------------------------ the layer


class StackedRNN(nn.Module):
  """Multi-layer, optionally bidirectional Elman RNN / LSTM / GRU over [B, T, I] inputs.

  ``__call__(x_BTI, mask_BT=None, initial_state=None, *, train) -> (y_BTO, final_state)`` with
  O = num_directions * H (directions concatenated, forward first) and states as described in the
  module docstring. Dropout (PyTorch semantics) is applied to each layer's output except the
  last. ``unroll`` is passed to lax.scan. ``impl="cudnn"`` (LSTM only) uses the fused cuDNN
  kernel on a GPU; it needs right-padded masks (it reads lengths = mask.sum(1)), runs in float32
  and falls back to the scan elsewhere.
  """

  cell: str
  hidden_size: int
  num_layers: int = 1
  bidirectional: bool = False
  dropout: float = 0.0
  unroll: int = 1
  forget_bias: float = 1.0
  impl: str = "scan"
  dtype: Any = None
  param_dtype: Any = f32
  precision: Any = None
  nonlinearity: str = "tanh"  # the Elman cell's: tanh | relu

  @property
  def num_directions(self) -> int:
    """2 for a bidirectional layer stack, else 1."""
    return 2 if self.bidirectional else 1

  def initial_state(self, batch_size: int) -> State:
    """Zeros: a tuple of [N, B, H] float32 arrays."""
    n = self.num_layers * self.num_directions
    return tuple(jnp.zeros((n, batch_size, self.hidden_size), f32)
                 for _ in range(CELLS[self.cell].num_state))

  def _cells(self, input_size: int) -> list[list[_Cell]]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
    if self.cell == "lstm":
      kw["forget_bias"] = self.forget_bias
    if self.cell == "rnn":
      kw["nonlinearity"] = self.nonlinearity
    cls = CELLS[self.cell]
    out = []
    for layer in range(self.num_layers):
      size = input_size if layer == 0 else self.num_directions * self.hidden_size
      out.append([cls(self.hidden_size, size, name=cell_name(layer, d), **kw)
                  for d in range(self.num_directions)])
    return out

  @nn.compact
  def __call__(self, x_BTI: jax.Array, mask_BT: jax.Array | None = None,
               initial_state: State | None = None, *, train: bool = False
               ) -> tuple[jax.Array, State]:
    """(outputs [B, T, num_directions * H], final state); see the class docstring."""
    step = cell_step(self.cell, self.nonlinearity)
    check_choice("lstm_impl", self.impl, RNN_IMPLS)
    if self.impl == "cudnn" and self.cell != "lstm":
      raise ConfigError(f"lstm_impl='cudnn' applies only to the 'lstm' cell, not '{self.cell}'")
    b, t, _ = x_BTI.shape
    mask_BT = jnp.ones((b, t), bool) if mask_BT is None else mask_BT.astype(bool)
    state = self.initial_state(b) if initial_state is None else initial_state
    state = tuple(jnp.asarray(s, f32) for s in state)
    cells = self._cells(x_BTI.shape[-1])
    drop = nn.Dropout(self.dropout, deterministic=not train)
    out_dtype = self.dtype or f32

    if self.impl == "cudnn":
      if cudnn_lstm_available():
        return self._fused(cells, x_BTI, mask_BT, state, drop, out_dtype)
      _log_cudnn_fallback_once()

    nd = self.num_directions
    finals: list[State] = []
    for layer in range(self.num_layers):  # x_BTI: this layer's input
      ws = [c.weights() for c in cells[layer]]
      xps_BTG = [project_inputs(w, x_BTI, self.precision) for w in ws]
      carries = [tuple(s[layer * nd + d] for s in state) for d in range(nd)]
      ys_BTH, carries = scan_directions(step, ws, xps_BTG, mask_BT, carries, unroll=self.unroll,
                                        precision=self.precision)
      finals.extend(carries)
      x_BTI = jnp.concatenate(ys_BTH, axis=-1).astype(out_dtype)
      if layer < self.num_layers - 1:
        x_BTI = drop(x_BTI)
    return x_BTI, tuple(jnp.stack(parts) for parts in zip(*finals))

  def _fused(self, cells, x_BTI, mask_BT, state, drop, out_dtype) -> tuple[jax.Array, State]:
    """cuDNN path: all layers in one call, or one call per layer when dropout is active."""
    lengths_B = jnp.sum(mask_BT, axis=1).astype(jnp.int32)
    h0_NBH, c0_NBH = state
    nd = self.num_directions
    groups = ([[k] for k in range(self.num_layers)] if self.dropout > 0 and not drop.deterministic
              else [list(range(self.num_layers))])
    hs_NBH, cs_NBH = [], []
    for gi, layers in enumerate(groups):  # x_BTI: this group's input
      ws = [c.weights() for layer in layers for c in cells[layer]]
      rows = slice(layers[0] * nd, (layers[-1] + 1) * nd)
      x_BTI, h_NBH, c_NBH = fused_lstm(ws, x_BTI, lengths_B, h0_NBH[rows], c0_NBH[rows],
                                       num_layers=len(layers), bidirectional=self.bidirectional,
                                       precision=self.precision)
      hs_NBH.append(h_NBH)
      cs_NBH.append(c_NBH)
      x_BTI = x_BTI.astype(out_dtype)
      if gi < len(groups) - 1:
        x_BTI = drop(x_BTI)
    return x_BTI, (jnp.concatenate(hs_NBH), jnp.concatenate(cs_NBH))


# ------------------------------------------------------------------------------ PyTorch weights

_TORCH_KEY = re.compile(r"(weight|bias)_(ih|hh)_(l\d+(?:_reverse)?)")
_TORCH_CELLS = {"RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}


def _torch_nonlinearity(source: Any, state_dict: Mapping[str, Any],
                        nonlinearity: str | None) -> str:
  """The Elman nonlinearity: the module's, else the caller's; a state_dict alone cannot say."""
  is_module = hasattr(source, "state_dict")
  elman = not is_module and any(
      k.startswith("weight_hh") and v.shape[0] == v.shape[1] for k, v in state_dict.items())
  if is_module and type(source).__name__ == "RNN":
    own = source.nonlinearity
    if nonlinearity not in (None, own):
      raise ConfigError(f"the torch.nn.RNN uses nonlinearity={own!r}, not {nonlinearity!r}")
    return own
  if elman and nonlinearity is None:
    raise ConfigError("a torch.nn.RNN state_dict does not record its nonlinearity (tanh or "
                      "relu): pass the module itself, or nonlinearity='tanh' / 'relu'")
  return nonlinearity or "tanh"


def params_from_torch(source: Any, *, nonlinearity: str | None = None
                      ) -> dict[str, dict[str, np.ndarray]]:
  """A torch.nn.RNN / LSTM / GRU (the module, or its state_dict) -> ``StackedRNN`` params.

  ``weight_ih_l{k}[_reverse]`` -> ``params["l{k}[_reverse]"]["w_ih"]`` (transposed), likewise
  ``weight_hh``; biases are copied as they are (zeros for a module with ``bias=False``). An
  Elman RNN's nonlinearity is not in its state_dict: pass the module, or state it with
  ``nonlinearity``; a ReLU RNN needs ``StackedRNN(..., nonlinearity="relu")``
  (``stacked_rnn_from_torch`` builds it), and the result is refused if the module says
  otherwise.
  """
  state_dict = source.state_dict() if hasattr(source, "state_dict") else source
  _torch_nonlinearity(source, state_dict, nonlinearity)
  if getattr(source, "proj_size", 0):
    raise ConfigError("an LSTM with proj_size > 0 (projected hidden state) is not supported")
  out: dict[str, dict[str, np.ndarray]] = {}
  for key, value in state_dict.items():
    m = _TORCH_KEY.fullmatch(key)
    if m is None:
      raise ValueError(f"unexpected key {key!r} in an RNN state_dict")
    kind, which, cell = m.groups()
    arr = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    out.setdefault(cell, {})[("w_" if kind == "weight" else "b_") + which] = (
        arr.T if kind == "weight" else arr)
  for w in out.values():  # bias=False: zero biases are the same function
    for which in ("ih", "hh"):
      w.setdefault(f"b_{which}", np.zeros(w[f"w_{which}"].shape[1], w[f"w_{which}"].dtype))
  return out


def stacked_rnn_from_torch(module: Any, **kwargs: Any) -> tuple[StackedRNN, dict]:
  """(``StackedRNN`` equal to a torch.nn.RNN / LSTM / GRU module, its params); ``kwargs`` go to
  StackedRNN (e.g. dtype, unroll). Inputs are batch-first [B, T, I] whatever ``batch_first``."""
  cell = _TORCH_CELLS.get(type(module).__name__)
  if cell is None:
    raise ConfigError(f"stacked_rnn_from_torch reads torch.nn.RNN / LSTM / GRU, not "
                      f"{type(module).__name__}")
  extra = {"nonlinearity": module.nonlinearity} if cell == "rnn" else {}
  layer = StackedRNN(cell, module.hidden_size, num_layers=module.num_layers,
                     bidirectional=module.bidirectional, dropout=module.dropout,
                     **extra, **kwargs)
  return layer, params_from_torch(module)
