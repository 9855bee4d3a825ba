"""RNN / LSTM / GRU cells and StackedRNN: golden equality with PyTorch given the same weights,
scan == a plain Python loop over the cell, padding, the cuDNN weight packing (checked against
jax.experimental.rnn's reference LSTM on CPU) and the fused path (GPU only)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from seqgen_jax.errors import ConfigError
from seqgen_jax.nn import rnn

TORCH = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
B, T, IN, H = 3, 7, 5, 6


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _data(num_dirs_layers: int, num_state: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(B, T, IN)).astype(np.float32)
  h0 = [rng.normal(size=(num_dirs_layers, B, H)).astype(np.float32) for _ in range(num_state)]
  return x, h0


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers, bidirectional, lengths", [
    (1, False, None), (2, True, None), (2, True, [7, 3, 5])])
def test_matches_pytorch_outputs_states_and_input_gradients(cell, num_layers, bidirectional,
                                                            lengths):
  """Same weights in torch.nn.RNN/LSTM/GRU and StackedRNN, with an initial state; lengths:
  right-padded batch vs torch's pack_padded_sequence."""
  torch.manual_seed(0)
  nd = 2 if bidirectional else 1
  tm = TORCH[cell](IN, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
  ns = 2 if cell == "lstm" else 1
  x, h0 = _data(num_layers * nd, ns)
  r = np.random.default_rng(1)
  gy = r.normal(size=(B, T, nd * H)).astype(np.float32)  # random cotangents
  gs = [r.normal(size=h.shape).astype(np.float32) for h in h0]
  mask = None if lengths is None else np.arange(T)[None] < np.array(lengths)[:, None]

  # PyTorch
  tx = torch.tensor(x, requires_grad=True)
  th0 = [torch.tensor(h, requires_grad=True) for h in h0]
  inp = tx if lengths is None else torch.nn.utils.rnn.pack_padded_sequence(
      tx, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
  ty, tstate = tm(inp, tuple(th0) if ns == 2 else th0[0])
  if lengths is not None:
    ty, _ = torch.nn.utils.rnn.pad_packed_sequence(ty, batch_first=True, total_length=T)
  tstate = tstate if ns == 2 else (tstate,)
  loss = (ty * torch.tensor(gy)).sum() + sum((s * torch.tensor(g)).sum()
                                             for s, g in zip(tstate, gs))
  loss.backward()

  # Ours, from the same state_dict
  model = rnn.StackedRNN(cell, H, num_layers=num_layers, bidirectional=bidirectional)
  params = rnn.params_from_torch(tm)

  def f(x, h0):
    y, state = model.apply({"params": params}, x, mask, tuple(h0))
    return jnp.sum(y * gy) + sum(jnp.sum(s * g) for s, g in zip(state, gs)), (y, state)

  (_, (y, state)), (dx, dh0) = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(
      jnp.asarray(x), [jnp.asarray(h) for h in h0])
  assert _rel(y, ty.detach().numpy()) <= 1e-5
  for ours, theirs in zip(state, tstate):
    assert _rel(ours, theirs.detach().numpy()) <= 1e-5
  assert _rel(dx, tx.grad.numpy()) <= 1e-5
  for ours, theirs in zip(dh0, th0):
    assert _rel(ours, theirs.grad.numpy()) <= 1e-5


@pytest.mark.parametrize("bias", [True, False])
def test_relu_rnn_matches_pytorch(bias):
  """A ReLU torch.nn.RNN (3 layers, bidirectional, batch_first=False, shapes no other test
  uses) through stacked_rnn_from_torch: outputs, final states and input gradients agree
  (relative max error <= 1e-5; measured <= 2.6e-7); read as tanh it would not. A bare state_dict
  of an Elman RNN is refused unless the nonlinearity is stated, and a stated one must match."""
  torch.manual_seed(5)
  b, t, i, h = 2, 9, 4, 5
  tm = torch.nn.RNN(i, h, num_layers=3, nonlinearity="relu", bias=bias, bidirectional=True)
  x = np.random.default_rng(6).normal(size=(b, t, i)).astype(np.float32)
  h0 = np.random.default_rng(7).normal(size=(6, b, h)).astype(np.float32)
  tx = torch.tensor(x.transpose(1, 0, 2), requires_grad=True)  # time-major: batch_first=False
  ty, th = tm(tx, torch.tensor(h0))
  ty.sum().backward()
  layer, params = rnn.stacked_rnn_from_torch(tm)
  assert layer.nonlinearity == "relu" and layer.num_layers == 3 and layer.bidirectional
  f = jax.jit(lambda p, x: layer.apply({"params": p}, x, None, (jnp.asarray(h0),)))
  y, (hn,) = f(params, x)
  dx = jax.grad(lambda x: jnp.sum(f(params, x)[0]))(jnp.asarray(x))
  assert _rel(y, ty.detach().numpy().transpose(1, 0, 2)) <= 1e-5
  assert _rel(hn, th.detach().numpy()) <= 1e-5
  assert _rel(dx, tx.grad.numpy().transpose(1, 0, 2)) <= 1e-5
  as_tanh = layer.clone(nonlinearity="tanh").apply({"params": params}, x, None,
                                                   (jnp.asarray(h0),))[0]
  assert _rel(as_tanh, ty.detach().numpy().transpose(1, 0, 2)) > 0.1
  with pytest.raises(ConfigError, match="state_dict does not record its nonlinearity"):
    rnn.params_from_torch(tm.state_dict())
  jax.tree.map(np.testing.assert_array_equal, params,
               rnn.params_from_torch(tm.state_dict(), nonlinearity="relu"))
  with pytest.raises(ConfigError, match="uses nonlinearity='relu', not 'tanh'"):
    rnn.params_from_torch(tm, nonlinearity="tanh")
  with pytest.raises(ConfigError, match="nonlinearity='relu' applies only to the 'rnn' cell"):
    rnn.StackedRNN("gru", h, nonlinearity="relu").init(jax.random.PRNGKey(0), x)


def _loop_reference(cell, params, x, mask, h0, num_layers, nd):
  """Plain Python loop calling the one-step cell module; masked steps keep the state."""
  cls = rnn.CELLS[cell]
  inp = np.asarray(x)
  finals = []
  for layer in range(num_layers):
    outs = []
    for d in range(nd):
      name = rnn.cell_name(layer, d)
      c = cls(H, inp.shape[-1])
      step = jax.jit(lambda p, carry, x_t, c=c: c.apply({"params": p}, carry, x_t))
      carry = tuple(jnp.asarray(h[layer * nd + d]) for h in h0)
      y = np.zeros((B, T, H), np.float32)
      for t in (range(T - 1, -1, -1) if d else range(T)):
        new, _ = step(params[name], carry, jnp.asarray(inp[:, t]))
        m = mask[:, t][:, None]
        carry = tuple(jnp.where(m, n, o) for n, o in zip(new, carry))
        y[:, t] = np.where(m, np.asarray(carry[0]), 0.0)
      outs.append(y)
      finals.append(carry)
    inp = np.concatenate(outs, axis=-1)
  return inp, [np.stack([np.asarray(f[k]) for f in finals]) for k in range(len(h0))]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_scan_equals_python_loop_over_the_cell(cell):
  nd, num_layers = 2, 2
  model = rnn.StackedRNN(cell, H, num_layers=num_layers, bidirectional=True, unroll=3)
  x, h0 = _data(num_layers * nd, 2 if cell == "lstm" else 1, seed=2)
  mask = np.random.default_rng(3).random((B, T)) > 0.3  # holes anywhere, not only padding
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x)["params"]
  y, state = jax.jit(model.apply)({"params": params}, x, mask, tuple(h0))
  y_ref, state_ref = _loop_reference(cell, params, x, mask, h0, num_layers, nd)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
  for a, b in zip(state, state_ref):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell, bidirectional", [("lstm", True), ("gru", False)])
def test_padded_batch_equals_each_sequence_alone(cell, bidirectional):
  model = rnn.StackedRNN(cell, H, num_layers=2, bidirectional=bidirectional)
  x, _ = _data(1, 1, seed=4)
  lengths = [7, 3, 7]
  mask = np.arange(T)[None] < np.array(lengths)[:, None]
  x_padded = np.where(mask[..., None], x, 99.0)  # garbage in the padding must not leak
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x)["params"]
  apply = jax.jit(lambda x, m: model.apply({"params": params}, x, m))
  y, state = apply(x_padded, mask)
  for i, n in enumerate(lengths):
    y_i, state_i = apply(x[i:i + 1, :n], np.ones((1, n), bool))
    np.testing.assert_allclose(y[i, :n], y_i[0], rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(y[i, n:]) == 0.0)
    for a, b in zip(state, state_i):
      np.testing.assert_allclose(a[:, i], b[:, 0], rtol=1e-5, atol=1e-6)


def test_cudnn_weight_packing_matches_jax_reference_lstm():
  """Our params packed into cuDNN's flat layout, unpacked by jax.experimental.rnn and run by its
  reference LSTM (which pads like cuDNN), equal our scan: 2 layers, bidirectional, ragged."""
  from jax.experimental import rnn as jrnn

  num_layers = 2
  model = rnn.StackedRNN("lstm", H, num_layers=num_layers, bidirectional=True)
  x, h0 = _data(2 * num_layers, 2, seed=5)
  lengths = np.array([7, 4, 1], np.int32)
  mask = np.arange(T)[None] < lengths[:, None]
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x)["params"]
  y, (h, c) = model.apply({"params": params}, x, mask, tuple(h0))
  ws = [params[rnn.cell_name(k, d)] for k in range(num_layers) for d in range(2)]
  flat = rnn.pack_cudnn_lstm_weights(ws)
  assert flat.shape == (jrnn.get_num_params_in_lstm(IN, H, num_layers, True),)
  w_ih, w_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(flat, IN, H, num_layers, True)
  y_ref, h_ref, c_ref = jrnn.lstm_ref(jnp.asarray(x), *map(jnp.asarray, h0), w_ih, w_hh, b_ih,
                                      b_hh, jnp.asarray(lengths), IN, H, num_layers, 0.0, True)
  for ours, ref in ((y, y_ref), (h, h_ref), (c, c_ref)):
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_cudnn_impl_falls_back_to_the_scan_off_gpu_with_one_log_line(caplog, monkeypatch):
  monkeypatch.setattr(rnn, "cudnn_lstm_available", lambda: False)
  monkeypatch.setattr(rnn, "_fallback_logged", False)
  x, _ = _data(1, 1)
  scan = rnn.StackedRNN("lstm", H)
  fused = rnn.StackedRNN("lstm", H, impl="cudnn")
  params = jax.jit(scan.init)(jax.random.PRNGKey(0), x)
  with caplog.at_level("WARNING"):
    a = jax.jit(fused.apply)(params, x)
    jax.jit(fused.apply)(params, x[:2])  # traced again: no second line
  np.testing.assert_array_equal(a[0], jax.jit(scan.apply)(params, x)[0])
  lines = [r.getMessage() for r in caplog.records if "lstm_impl='cudnn'" in r.getMessage()]
  assert len(lines) == 1 and "running the lax.scan LSTM instead" in lines[0]


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() != "gpu",
                    reason="the fused cuDNN LSTM (jax.experimental.rnn) runs only on a GPU")
def test_fused_cudnn_lstm_equals_scan_on_gpu():
  num_layers = 2
  hi = jax.lax.Precision.HIGHEST
  kw = dict(num_layers=num_layers, bidirectional=True, precision=hi)
  scan = rnn.StackedRNN("lstm", H, **kw)
  fused = rnn.StackedRNN("lstm", H, impl="cudnn", **kw)
  x, h0 = _data(2 * num_layers, 2, seed=6)
  mask = np.arange(T)[None] < np.array([7, 4, 2])[:, None]
  params = jax.jit(scan.init)(jax.random.PRNGKey(0), x)

  def loss(m, p, x):
    y, (h, c) = m.apply(p, x, mask, tuple(h0))
    return jnp.sum(y ** 2) + jnp.sum(h * c), (y, h, c)

  (_, out_s), g_s = jax.jit(jax.value_and_grad(lambda p, x: loss(scan, p, x), (0, 1),
                                               has_aux=True))(params, x)
  (_, out_f), g_f = jax.jit(jax.value_and_grad(lambda p, x: loss(fused, p, x), (0, 1),
                                               has_aux=True))(params, x)
  for a, b in zip(jax.tree.leaves((out_f, g_f)), jax.tree.leaves((out_s, g_s))):
    assert _rel(a, b) <= 1e-4


def test_forget_bias_initialisation_and_dropout_between_layers():
  x, _ = _data(1, 1)
  p = jax.jit(rnn.StackedRNN("lstm", H, forget_bias=1.0).init)(jax.random.PRNGKey(0), x)["params"]
  np.testing.assert_array_equal(p["l0"]["b_ih"], np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
  assert not np.any(p["l0"]["b_hh"])
  m = rnn.StackedRNN("gru", H, num_layers=2, dropout=0.5)
  p = jax.jit(m.init)(jax.random.PRNGKey(0), x)
  rngs = {"dropout": jax.random.PRNGKey(1)}
  f = jax.jit(lambda p, train: m.apply(p, x, train=train, rngs=rngs)[0], static_argnums=1)
  assert not np.allclose(f(p, True), f(p, False))


@pytest.mark.parametrize("kw, message", [
    (dict(cell="elman"), r"unknown RNN cell 'elman'; choose one of: rnn, lstm, gru"),
    (dict(cell="lstm", impl="fused"), r"unknown lstm_impl 'fused'; choose one of: scan, cudnn"),
    (dict(cell="gru", impl="cudnn"), r"lstm_impl='cudnn' applies only to the 'lstm' cell"),
])
def test_bad_settings_are_one_line_config_errors(kw, message):
  x, _ = _data(1, 1)
  with pytest.raises(ConfigError, match=message) as e:
    rnn.StackedRNN(hidden_size=H, **kw).init(jax.random.PRNGKey(0), x)
  assert "\n" not in str(e.value)
