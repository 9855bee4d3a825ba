"""generate(): token-identical to Hugging Face's greedy generate for an imported GPT-2 (with a
stop token), greedy == a plain Python loop of full forward passes for every registered causal_lm
model (KV cache or carried state), stop-token padding and lengths, sampling filters, one
compilation per shape."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import seqgen_jax.nn  # noqa: F401  (registers the models)
from seqgen_jax import generate as generation
from seqgen_jax.errors import ConfigError
from seqgen_jax.generate import generate
from seqgen_jax.nn.gpt import GPT
from seqgen_jax.registry import MODELS

V = 23


def _python_greedy(model, params, prompt, n, window=None):
  """Reference: a full forward pass over the (windowed) sequence per new token, argmax."""
  seq = np.asarray(prompt).tolist()
  fwd = jax.jit(lambda t: model.apply({"params": params}, t))
  for _ in range(n):
    for row in seq:
      ctx = row if window is None else row[-window:]
      row.append(int(np.argmax(np.asarray(fwd(jnp.array([ctx])))[0, -1])))
  return np.array(seq)


@pytest.fixture(scope="module")
def hf_gpt2():
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from seqgen_jax.convert import load_pretrained

  torch.manual_seed(3)
  cfg = transformers.GPT2Config(vocab_size=71, n_positions=40, n_embd=40, n_layer=2, n_head=5,
                                bos_token_id=0, eos_token_id=0)
  hf = transformers.GPT2LMHeadModel(cfg).eval()
  g = torch.Generator().manual_seed(4)
  with torch.no_grad():  # larger-than-init weights: a varied greedy continuation
    for p in hf.parameters():
      p.add_(0.3 * torch.randn(p.shape, generator=g))
  return hf, load_pretrained(hf)


def test_greedy_matches_hugging_face_generate_with_a_stop_token(hf_gpt2):
  """Greedy decoding of an imported GPT-2 through the KV cache is token-identical to
  GPT2LMHeadModel.generate(do_sample=False, eos_token_id, pad_token_id), rows that stop early
  included (HF pads them after the stop token, and ends when every row has stopped)."""
  import torch

  hf, imp = hf_gpt2
  prompt = np.random.default_rng(5).integers(1, 71, size=(3, 6))
  n, pad = 14, 70
  free = np.asarray(generate(imp.model, imp.params, prompt, n).tokens)
  stop = int(free[1, 6 + 4])  # row 1 stops at its 5th new token (others may stop earlier)
  out = generate(imp.model, imp.params, prompt, n, stop_token=stop, pad_id=pad)
  with torch.no_grad():
    ref = hf.generate(torch.tensor(prompt), attention_mask=torch.ones(prompt.shape, dtype=int),
                      max_new_tokens=n, do_sample=False, eos_token_id=stop,
                      pad_token_id=pad).numpy()
  ref = np.pad(ref, ((0, 0), (0, 6 + n - ref.shape[1])), constant_values=pad)
  np.testing.assert_array_equal(np.asarray(out.tokens), ref)
  lengths = [6 + (list(r[6:]).index(stop) + 1 if stop in r[6:] else n) for r in ref]
  np.testing.assert_array_equal(np.asarray(out.lengths), lengths)
  assert lengths[1] <= 6 + 5 and max(lengths) > lengths[1]  # the stop token really cut row 1
  with torch.no_grad():  # and without a stop token, all 14 tokens as HF
    ref = hf.generate(torch.tensor(prompt), attention_mask=torch.ones(prompt.shape, dtype=int),
                      max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                      pad_token_id=pad).numpy()
  np.testing.assert_array_equal(free, ref)


def _tiny(name):
  cfg = ml_collections.ConfigDict(dict(num_layers=2, num_heads=2, d_model=16, d_ff=32,
                                       hidden_size=16))
  model = MODELS.get(name, kind="causal_lm")(cfg, vocab_size=V, max_len=12)
  params = jax.jit(model.init)(jax.random.PRNGKey(1), jnp.zeros((1, 4), jnp.int32))["params"]
  # Larger weights than init, so greedy continuations vary instead of repeating one token.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  params = jax.tree.unflatten(tree, [
      x + (0.5 * jax.random.normal(k, x.shape) if jnp.issubdtype(x.dtype, jnp.floating) else 0)
      for x, k in zip(leaves, keys)])
  return model, params


@pytest.mark.parametrize("name", MODELS.names(kind="causal_lm"))
def test_greedy_equals_python_loop_for_every_causal_lm(name):
  """KV cache (gpt) or carried state (the recurrent LMs): the same tokens as re-running the
  full forward pass per token; with a stop token, the tokens after it become the pad id."""
  model, params = _tiny(name)
  prompt = np.random.default_rng(0).integers(0, V, size=(2, 3))
  n = 8
  out = generate(model, params, prompt, n)
  want = _python_greedy(model, params, prompt, n)
  np.testing.assert_array_equal(np.asarray(out.tokens), want)
  np.testing.assert_array_equal(np.asarray(out.lengths), [3 + n, 3 + n])
  stop = int(want[0, 3 + 2])
  got = np.asarray(generate(model, params, prompt, n, stop_token=stop, pad_id=V).tokens)
  for row, ref in zip(got, want):
    new = list(ref[3:])
    cut = new.index(stop) + 1 if stop in new else n
    np.testing.assert_array_equal(row, list(ref[:3 + cut]) + [V] * (n - cut))


def test_sliding_window_beyond_the_context():
  """A GPT of context 8 generating 10 tokens after a 5-token prompt runs on its last 8 tokens."""
  model = GPT(vocab_size=V, max_len=8, num_layers=1, num_heads=2, d_model=16)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
  prompt = np.random.default_rng(1).integers(0, V, size=(2, 5))
  assert not generation.uses_cache(model, 5 + 10 - 1)
  out = generate(model, params, prompt, 10)
  np.testing.assert_array_equal(np.asarray(out.tokens),
                                _python_greedy(model, params, prompt, 10, window=8))


def test_sampling_filters_keys_and_errors():
  model, params = _tiny("gpt")
  prompt = np.zeros((64, 2), np.int32)
  key = jax.random.PRNGKey(9)
  greedy = generate(model, params, prompt, 3).tokens
  np.testing.assert_array_equal(generate(model, params, prompt, 3, rng=key, top_k=1).tokens,
                                greedy)
  a = generate(model, params, prompt, 3, rng=key, temperature=0.7, top_p=0.9).tokens
  np.testing.assert_array_equal(a, generate(model, params, prompt, 3, rng=key, temperature=0.7,
                                            top_p=0.9).tokens)
  first = np.asarray(generate(model, params, prompt, 1, rng=key, top_k=3).new_tokens)[:, 0]
  logits = np.asarray(model.apply({"params": params}, jnp.asarray(prompt[:1])))[0, -1]
  assert set(first.tolist()) <= set(np.argsort(logits)[-3:].tolist()) and len(set(first)) > 1
  with pytest.raises(ConfigError, match="apply to sampling: pass rng"):
    generate(model, params, prompt, 3, temperature=0.5)
  with pytest.raises(ConfigError, match="max_new_tokens must be >= 1"):
    generate(model, params, prompt, 0)
  with pytest.raises(ConfigError, match=r"integer tokens of shape \[batch, length >= 1\]"):
    generate(model, params, prompt[0], 3)


def test_compiles_once_per_shape():
  """New prompts, keys and params of the same shapes reuse the compilation; a new batch size,
  prompt length or max_new_tokens compiles once more."""
  model, params = _tiny("lstm")
  rng = np.random.default_rng(2)
  fn = generation._generate_jit
  before = fn._cache_size()
  for seed in range(3):
    generate(model, jax.tree.map(lambda x, s=seed: x * (1 + s), params),
             rng.integers(0, V, size=(2, 4)), 5, rng=jax.random.PRNGKey(seed), top_k=4)
  assert fn._cache_size() == before + 1
  generate(model, params, rng.integers(0, V, size=(3, 4)), 5, rng=jax.random.PRNGKey(0), top_k=4)
  generate(model, params, rng.integers(0, V, size=(3, 5)), 5, rng=jax.random.PRNGKey(0), top_k=4)
  generate(model, params, rng.integers(0, V, size=(3, 5)), 6, rng=jax.random.PRNGKey(0), top_k=4)
  assert fn._cache_size() == before + 4
