"""``generate``: prompt tokens -> new tokens for any causal_lm model, compiled once per shape.

  from seqgen_jax.generate import generate
  out = generate(model, params, prompt_BP, max_new_tokens=20)                 # greedy
  out = generate(model, params, prompt_BP, 20, rng=key, temperature=0.8, top_k=40, top_p=0.95,
                 stop_token=eos_id, pad_id=pad)                               # sampling
  out.tokens   # [B, P + 20]: the prompt, the new tokens, pad_id after a row's first stop token
  out.lengths  # [B]: P + the tokens generated up to and including the stop token
  out.new_tokens  # [B, 20]

``model`` is any flax module with the causal_lm contract (seqgen_jax/registry.py): the "gpt"
Transformer decodes through its KV cache (``init_cache`` / ``decode``), the recurrent LMs (rnn,
lstm, gru, mingru, minlstm, lru) through their carried state; a model whose context
(``max_len``) is shorter than prompt + new tokens, or one without ``decode``, is run on a
sliding window of its last ``max_len`` tokens instead (a full forward pass per token).
``params`` are the module's parameters (``variables["params"]``, e.g. ``load_pretrained(...)
.params``). Greedy decoding without ``rng``; with ``rng``, sampling with temperature, then
top-k, then top-p (nucleus) filtering.

The whole generation is one ``jax.jit`` compilation per model, decoding options and shape
(batch, prompt length, ``max_new_tokens``); later calls with new prompts, params or keys reuse
it. ``generate_tokens`` is the same computation unjitted, for use inside a caller's own jit
(the lm task samples through it).

Axis key: B batch, P prompt length, N new tokens, L = P + N.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqgen_jax import decoding
from seqgen_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Generation:
  """The result of ``generate``: tokens [B, P + N] and row lengths [B] (see the module doc)."""

  tokens: jax.Array
  lengths: jax.Array
  prompt_len: int

  @property
  def new_tokens(self) -> jax.Array:
    """The generated part, [B, N] (``pad_id`` after a row's stop token)."""
    return self.tokens[:, self.prompt_len:]


def uses_cache(model: nn.Module, num_fed: int) -> bool:
  """Whether ``model`` generates through ``init_cache`` / ``decode``: it has them, and either no
  context limit (a recurrent state) or ``num_fed`` tokens within its ``max_len``."""
  if not hasattr(model, "decode"):
    return False
  max_len = getattr(model, "max_len", None)
  return max_len is None or num_fed <= max_len


def generate_tokens(model: nn.Module, params: Any, prompt_BP: jax.Array, max_new_tokens: int,
                    rng: jax.Array, *, greedy: bool = False, temperature: float = 1.0,
                    top_k: int | None = None, top_p: float | None = None,
                    stop_token: int | None = None, pad_id: int = 0, window: int | None = None
                    ) -> tuple[jax.Array, jax.Array]:
  """(tokens [B, P + N], lengths [B]): ``generate`` without the jit (traceable); ``window``:
  the sliding window's length when the cache is not used (default: the model's max_len)."""
  variables = {"params": params}
  b, p = prompt_BP.shape
  num_fed = p + max_new_tokens - 1  # the last new token is never fed back
  kw = dict(greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p,
            stop_id=stop_token, pad_id=pad_id)
  if uses_cache(model, num_fed):
    cache = model.apply(variables, b, num_fed, method="init_cache")
    step_fn = lambda tokens_BT, cache, position: model.apply(
        variables, tokens_BT, cache, position, method="decode")
    return decoding.generate_incremental(step_fn, cache, prompt_BP, max_new_tokens, rng, **kw)
  window = window or getattr(model, "max_len", None)
  if window is None:
    raise ConfigError(f"{type(model).__name__} has neither decode nor max_len: pass window")
  logits_fn = lambda tokens_BT: model.apply(variables, tokens_BT)
  return decoding.generate_full_context(logits_fn, prompt_BP, max_new_tokens, rng,
                                        window=window, **kw)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "options"))
def _generate_jit(model: nn.Module, params: Any, prompt_BP: jax.Array, rng: jax.Array,
                  max_new_tokens: int, options: tuple) -> tuple[jax.Array, jax.Array]:
  return generate_tokens(model, params, prompt_BP, max_new_tokens, rng, **dict(options))


def generate(model: nn.Module, params: Any, prompt_BP: Any, max_new_tokens: int, *,
             rng: jax.Array | None = None, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, stop_token: int | None = None, pad_id: int = 0
             ) -> Generation:
  """``max_new_tokens`` new tokens after ``prompt_BP`` ([B, P] ints): greedy without ``rng``,
  sampled (temperature, top-k, top-p) with it; stops each row at ``stop_token``."""
  prompt_BP = jnp.asarray(prompt_BP)
  if prompt_BP.ndim != 2 or prompt_BP.shape[1] < 1 or not jnp.issubdtype(prompt_BP.dtype,
                                                                          jnp.integer):
    raise ConfigError(f"the prompt must be integer tokens of shape [batch, length >= 1], got "
                      f"{prompt_BP.dtype} {tuple(prompt_BP.shape)}")
  if max_new_tokens < 1:
    raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  greedy = rng is None
  if greedy and (temperature != 1.0 or top_k is not None or top_p is not None):
    raise ConfigError("temperature / top_k / top_p apply to sampling: pass rng (without rng, "
                      "decoding is greedy)")
  if temperature <= 0:
    raise ConfigError(f"temperature must be > 0, got {temperature} (for greedy, omit rng)")
  if top_k is not None and top_k < 1:
    raise ConfigError(f"top_k must be >= 1, got {top_k}")
  if top_p is not None and not 0.0 < top_p <= 1.0:
    raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
  options = (("greedy", greedy), ("temperature", float(temperature)), ("top_k", top_k),
             ("top_p", top_p), ("stop_token", stop_token), ("pad_id", int(pad_id)))
  key = jax.random.PRNGKey(0) if rng is None else rng  # unused by greedy decoding
  tokens, lengths = _generate_jit(model, params, prompt_BP.astype(jnp.int32), key,
                                  max_new_tokens, options)
  return Generation(tokens, lengths, prompt_BP.shape[1])
