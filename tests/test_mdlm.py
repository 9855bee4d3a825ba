"""MDLM (masked diffusion LM): the NELBO estimator against the exact bound by enumeration, the
SUBS output, the iterative-unmasking sampler, and the task end to end through the loop.

The reference: with the log-linear schedule alpha_t = 1 - t a sequence of length L has mask set M
with probability t^|M| (1 - t)^(L - |M|), so the continuous-time bound

    NELBO = int_0^1 (1/t) E_M [ sum_{l in M} -log p(x^l | z_M) ] dt
          = sum_M B(|M|, L - |M| + 1) * sum_{l in M} -log p(x^l | z_M)

(B the Beta function) is a finite sum over the 2^L mask sets, computed here with itertools and
scipy, independently of the Monte-Carlo estimator under test.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import read_jsonl, tiny_lm_config
from scipy import special

from seqgen_jax.registry import MODELS
from seqgen_jax.tasks import build_task, mdlm

V_DATA, L = 3, 4
MASK = V_DATA


@pytest.fixture(scope="module")
def tiny_denoiser():
  cfg = ml_collections.ConfigDict(dict(num_layers=1, num_heads=2, d_model=16))
  model = MODELS.get("gpt_bidir", kind="masked_lm")(cfg, vocab_size=V_DATA + 1, max_len=L)
  z = jnp.zeros((1, L), jnp.int32)
  params = model.init(jax.random.PRNGKey(3), z, jnp.ones_like(z, bool))
  # Larger random weights than the N(0, 0.02) init, so predictions depend strongly on context.
  params = jax.tree.map(lambda p: p * 25.0, params)
  logits_fn = jax.jit(lambda z_BT: model.apply(params, z_BT, jnp.ones(z_BT.shape, bool)))
  return logits_fn


def exact_nelbo(logits_fn, x) -> float:
  """The bound by enumeration of every mask set (see the module docstring)."""
  total = 0.0
  for k in range(1, L + 1):
    weight = special.beta(k, L - k + 1)
    for masked in itertools.combinations(range(L), k):
      z = np.array(x)
      z[list(masked)] = MASK
      logits = np.asarray(logits_fn(jnp.asarray(z)[None]))[0, :, :V_DATA].astype(np.float64)
      logp = logits - special.logsumexp(logits, axis=-1, keepdims=True)
      total += weight * sum(-logp[pos, x[pos]] for pos in masked)
  return total


def test_enumeration_reference_gives_l_log_v_for_a_uniform_model():
  uniform = lambda z_BT: jnp.zeros((*z_BT.shape, V_DATA + 1))
  assert exact_nelbo(uniform, [0, 1, 2, 0]) == pytest.approx(L * math.log(V_DATA), rel=1e-12)


def test_nelbo_estimator_matches_the_exact_bound(tiny_denoiser):
  x = [0, 2, 1, 1]
  exact = exact_nelbo(tiny_denoiser, x)
  n = 16384
  x_BT = jnp.tile(jnp.asarray(x, jnp.int32), (n, 1))
  t_B = mdlm.antithetic_times(jax.random.PRNGKey(0), n)
  nelbo_B, masked_B, _ = mdlm.nelbo_per_sequence(tiny_denoiser, x_BT, t_B,
                                                 jax.random.PRNGKey(1), MASK)
  est = float(jnp.mean(nelbo_B))
  se = float(jnp.std(nelbo_B)) / math.sqrt(n)
  assert abs(est - exact) < 4 * se, (est, exact, se)
  assert se < 0.02 * exact  # the check has power: 4 se is under 8% of the bound
  # The model is far from uniform, so the check is not the trivial L log V.
  assert abs(exact - L * math.log(V_DATA)) > 10 * se
  # Masking probability is t: the mean masked fraction is E[t] = 1/2.
  assert float(jnp.mean(masked_B)) / L == pytest.approx(0.5, abs=0.01)


def test_antithetic_times_are_stratified_in_0_1():
  t = np.sort(np.asarray(mdlm.antithetic_times(jax.random.PRNGKey(5), 8)))
  assert t.min() > 0 and t.max() <= 1
  np.testing.assert_allclose(np.diff(t), 1 / 8, atol=1e-6)


def test_subs_gives_the_mask_token_zero_probability():
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, V_DATA + 1))
  p = np.exp(np.asarray(mdlm.subs_log_probs(logits, MASK)))
  assert np.all(p[..., MASK] == 0)
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("steps", [1, 16])
def test_sampling_unmasks_everything_and_never_emits_the_mask(tiny_denoiser, steps):
  out = np.asarray(mdlm.ancestral_sample(tiny_denoiser, 64, L, MASK, steps,
                                         jax.random.PRNGKey(steps)))
  assert out.shape == (64, L) and out.min() >= 0 and out.max() < V_DATA


def test_sampler_reveals_at_the_ancestral_rate_and_keeps_revealed_tokens():
  """With a model that always predicts token 0 at step 1 of 4 and token 1 later, the share of
  zeros is the share revealed at step 1: P = (1 - 3/4) / 1 = 1/4; revealed tokens stay."""
  calls = []

  def logits_fn(z_BT):
    first = jnp.all(z_BT == MASK)  # nothing revealed yet
    calls.append(1)
    tok = jnp.where(first, 0, 1)
    return jnp.where(jnp.arange(V_DATA + 1) == tok, 10.0, -10.0) * jnp.ones((*z_BT.shape, 1))

  # Every row starts all-mask, so "first" must be per row: run rows separately via vmap.
  per_row = jax.vmap(lambda key: mdlm.ancestral_sample(logits_fn, 1, 256, MASK, 4, key)[0])
  out = np.asarray(per_row(jax.random.split(jax.random.PRNGKey(0), 64)))
  assert set(np.unique(out)) <= {0, 1}
  assert np.mean(out == 0) == pytest.approx(0.25, abs=0.02)


@pytest.mark.slow
def test_mdlm_task_trains_through_the_loop(tmp_path):
  from seqgen_jax.train import loop

  c = tiny_lm_config(task="mdlm", model__name="gpt_bidir", train__num_steps=30,
                     train__log_every=10, train__eval_every=30, train__checkpoint_every=0,
                     data__delay=2)
  c.mdlm = dict(eval_t_samples=2, sample_steps=4)
  loop.train_and_evaluate(c, str(tmp_path), build_task)
  rows = read_jsonl(tmp_path / "metrics.jsonl")
  train = [r["loss"] for r in rows if r["split"] == "train"]
  assert train[-1] < train[0]
  ev = [r for r in rows if r["split"] == "eval"][-1]
  assert ev["bits_per_token"] == pytest.approx(ev["loss"] / math.log(2))
  sample = [r["sample"] for r in rows if r["split"] == "text"][-1]
  tokens = [int(v) for v in sample.split()]
  assert len(tokens) == 2 * 4 + 2 and max(tokens) < 8  # alphabet 6 + 2: no mask token (8)
