"""Causality by gradient, for every registered causal_lm model and every seq2seq decoder.

The logits at position t of a causal model must not depend on its inputs after t. The check
adds a perturbation x_TD to the output of the embedding that reads the tokens under test (an
``nn.intercept_methods`` hook on that ``nn.Embed`` call), so it needs nothing from a model
beyond its registry contract, and differentiates the logits with respect to it: d out[t] / d x[s]
must be exactly zero for every s > t (not merely small) and nonzero for every s <= t (the model
does read its past). One compilation per model: init and Jacobian in one jitted function. The
last tests show that the check does fail on models that look ahead.

Axis key: T positions, D embedding width, V vocabulary.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import seqgen_jax.nn  # noqa: F401  (registers the models)
from seqgen_jax.registry import MODELS

V, T = 13, 10


def _cfg(**kw) -> ml_collections.ConfigDict:
  """One tiny config that every Transformer and recurrent builder accepts."""
  return ml_collections.ConfigDict(dict(num_layers=2, num_heads=4, d_model=16, d_ff=32,
                                        hidden_size=12, mlp_ratio=2, **kw))


def influence(model: nn.Module, args_fn, tokens_1T: jax.Array) -> np.ndarray:
  """[T, T]: sum over d of |d (logits[0, t] @ proj_V) / d x[s, d]|, x added to the embeddings.

  ``args_fn(tokens_1T)`` gives the positional arguments of ``model.init`` / ``model.apply``; the
  hook perturbs the one ``nn.Embed`` call whose input is ``tokens_1T`` itself.
  """
  proj_V = jax.random.normal(jax.random.PRNGKey(2), (V,))

  def logits_with(params, x_1TD, hits):
    def hook(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if (isinstance(context.module, nn.Embed) and context.method_name == "__call__"
          and args and args[0] is tokens_1T):
        hits.append(out.shape)
        out = out + x_1TD.astype(out.dtype)
      return out

    with nn.intercept_methods(hook):
      return model.apply(params, *args_fn(tokens_1T))

  init = lambda: model.init(jax.random.PRNGKey(0), *args_fn(tokens_1T))
  hits = []
  jax.eval_shape(lambda: logits_with(init(), jnp.zeros(()), hits))
  assert len(hits) == 1, f"expected one embedding lookup of the tokens under test, saw {hits}"
  x_1TD = jnp.zeros(hits[0])

  @jax.jit
  def jacobian_TTD():
    params = init()
    f_T = lambda x_TD: logits_with(params, x_TD[None], [])[0] @ proj_V
    return jax.jacrev(f_T)(x_1TD[0])

  return np.asarray(jnp.abs(jacobian_TTD()).sum(-1))


def future_leaks(influence_TT: np.ndarray) -> list[tuple[int, int]]:
  """(t, s) pairs with s > t whose influence is not exactly zero."""
  return [(t, s) for t, s in zip(*np.nonzero(np.triu(influence_TT, k=1)))]


def ignored_past(influence_TT: np.ndarray) -> list[tuple[int, int]]:
  """(t, s) pairs with s <= t whose influence is exactly zero."""
  return [(t, s) for t, s in zip(*np.nonzero(np.tril(influence_TT == 0.0)))]


def _lm_args(tokens_1T):
  return (tokens_1T,)


_SRC_1S = jax.random.randint(jax.random.PRNGKey(3), (1, 7), 1, V)


def _seq2seq_args(tgt_1T):
  return _SRC_1S, jnp.ones(_SRC_1S.shape, bool), tgt_1T


CASES = (
    [("causal_lm", name, {}) for name in MODELS.names(kind="causal_lm")]
    + [("causal_lm", "gpt", dict(num_kv_heads=2, positions="rotary"))]
    + [("seq2seq", name, {}) for name in MODELS.names(kind="seq2seq")]
    + [("seq2seq", "transformer", dict(norm="pre", num_kv_heads=2, scan_layers=True))])


@pytest.mark.parametrize("kind, name, overrides", CASES, ids=[
    f"{kind}-{name}" + "".join(f"-{k}={v}" for k, v in kw.items()) for kind, name, kw in CASES])
def test_outputs_at_t_do_not_depend_on_inputs_after_t(kind, name, overrides):
  build = MODELS.get(name, kind=kind)
  if kind == "causal_lm":
    model, args_fn = build(_cfg(**overrides), vocab_size=V, max_len=T), _lm_args
  else:
    model = build(_cfg(**overrides), src_vocab_size=V, tgt_vocab_size=V, max_len=T)
    args_fn = _seq2seq_args
  tokens_1T = jax.random.randint(jax.random.PRNGKey(1), (1, T), 1, V)
  influence_TT = influence(model, args_fn, tokens_1T)
  assert future_leaks(influence_TT) == []
  assert ignored_past(influence_TT) == []


# ------------------------------------------------------------------------------ the check fails


class OneLeakLM(nn.Module):
  """Causal (prefix sums of the embeddings) except that position 2 also reads position 3."""

  @nn.compact
  def __call__(self, tokens_BT: jax.Array) -> jax.Array:
    x_BTD = nn.Embed(V, 8)(tokens_BT)
    h_BTD = jnp.cumsum(x_BTD, axis=1).at[:, 2].add(x_BTD[:, 3])
    return nn.Dense(V)(jnp.tanh(h_BTD))


def test_the_check_finds_a_single_look_ahead():
  tokens_1T = jax.random.randint(jax.random.PRNGKey(1), (1, T), 1, V)
  influence_TT = influence(OneLeakLM(), _lm_args, tokens_1T)
  assert future_leaks(influence_TT) == [(2, 3)]
  assert ignored_past(influence_TT) == []


def test_the_check_finds_that_a_bidirectional_model_sees_the_future():
  """MDLM's backbone is GPT without the causal mask: every future position leaks."""
  model = MODELS.get("gpt_bidir", kind="masked_lm")(_cfg(), vocab_size=V, max_len=T)
  tokens_1T = jax.random.randint(jax.random.PRNGKey(1), (1, T), 1, V)
  influence_TT = influence(model, _lm_args, tokens_1T)
  assert len(future_leaks(influence_TT)) == T * (T - 1) // 2
