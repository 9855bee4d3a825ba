"""Small name -> builder registries for the parts a config swaps (models, tasks, optimizers, ...).

Only parts that a config selects by name live in a registry; everything else is imported directly.
A registered entry may carry tags (e.g. ``kind="causal_lm"``) so that callers such as the
showdown can list every model that fits a task without being edited when a model is added.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from seqgen_jax.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
  """Maps names to objects; unknown names raise a one-line error listing the known ones."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, T] = {}
    self._tags: dict[str, dict[str, Any]] = {}

  def register(self, name: str, **tags: Any) -> Callable[[T], T]:
    """Decorator: ``@MODELS.register("gpt", kind="causal_lm")``."""

    def deco(obj: T) -> T:
      if name in self._entries and self._entries[name] is not obj:
        raise ValueError(f"{self.kind} '{name}' is registered twice")
      self._entries[name] = obj
      self._tags[name] = dict(tags)
      return obj

    return deco

  def get(self, name: str) -> T:
    """Returns the entry called ``name`` or raises ConfigError naming the allowed ones."""
    if name not in self._entries:
      raise ConfigError(
          f"unknown {self.kind} '{name}'; choose one of: {', '.join(sorted(self._entries))}")
    return self._entries[name]

  def tags(self, name: str) -> dict[str, Any]:
    self.get(name)
    return dict(self._tags[name])

  def names(self, **match: Any) -> list[str]:
    """Sorted names whose tags match every ``key=value`` (a list-valued tag: membership)."""
    out = []
    for name, tags in self._tags.items():
      ok = True
      for k, v in match.items():
        t = tags.get(k)
        if isinstance(t, (tuple, list, set, frozenset)):
          ok &= v in t
        else:
          ok &= t == v
      if ok:
        out.append(name)
    return sorted(out)

  def __contains__(self, name: str) -> bool:
    return name in self._entries


class ModelRegistry:
  """Models, keyed by (kind, name): one name (e.g. "lstm") can serve several task kinds.

  ``kind`` says which interface the built module has (see the contracts below); a task asks for
  the kinds it can use, so the error for an unknown name lists exactly the models that fit.
  """

  def __init__(self):
    self._by_kind: dict[str, Registry] = {}

  def register(self, name: str, *, kind: str, **tags: Any) -> Callable[[T], T]:
    """Decorator: ``@MODELS.register("gpt", kind="causal_lm", family="transformer")``."""
    reg = self._by_kind.setdefault(kind, Registry(f"{kind} model"))
    return reg.register(name, kind=kind, **tags)

  def get(self, name: str, *, kind: str) -> Callable[..., Any]:
    """The builder of model ``name`` for ``kind``; ConfigError listing the ``kind`` models."""
    if kind not in self._by_kind:
      raise ConfigError(f"no models of kind '{kind}' are registered; kinds: "
                        f"{', '.join(sorted(self._by_kind))}")
    return self._by_kind[kind].get(name)

  def tags(self, name: str, *, kind: str) -> dict[str, Any]:
    self.get(name, kind=kind)
    return self._by_kind[kind].tags(name)

  def names(self, *, kind: str, **match: Any) -> list[str]:
    """Names of the models of ``kind`` whose tags match ``match``."""
    reg = self._by_kind.get(kind)
    return reg.names(**match) if reg is not None else []

  def kinds(self) -> list[str]:
    return sorted(self._by_kind)


# The registries a config selects from. Models register where they are defined (seqgen_jax/nn),
# tasks in seqgen_jax/tasks; importing those packages fills these.
#
# Every model registers a builder ``build(cfg, **task_kwargs) -> flax.linen.Module`` (``cfg`` is
# ``config.model``) with a ``kind`` tag that says which interface the module has; tasks accept
# every model of the kinds they need, so a new model is usable without editing any task.
#
#   kind="causal_lm"        build(cfg, *, vocab_size, max_len, dtype)
#       __call__(tokens_BT, *, train) -> logits_BTV (float32)
#       optional, for cached generation (see seqgen_jax/decoding.py):
#       init_cache(batch_size, max_len) -> cache;
#       decode(tokens_BT, cache, position) -> (logits_BTV, cache)
#   kind="classifier"       build(cfg, *, vocab_size, num_classes, max_len, dtype)
#       __call__(tokens_BT, mask_BT, *, train) -> logits_BC       (mask: True = real token)
#   kind="forecaster"       build(cfg, *, num_features, lookback, horizon, dtype)
#       __call__(x_BLF, *, train) -> y_BHF
#   kind="seq2seq"          build(cfg, *, src_vocab_size, tgt_vocab_size, max_len, dtype)
#       __call__(src_BS, src_mask_BS, tgt_in_BT, *, train) -> logits_BTV
#       encode(src_BS, src_mask_BS) -> memory; init_cache(memory, src_mask_BS, max_len) -> cache;
#       decode(tokens_BT, cache, position) -> (logits_BTV, cache)
#   kind="image_classifier" build(cfg, *, image_shape, num_classes, dtype)
#       __call__(images_BHWC, *, train) -> logits_BC
#       (images float32 in [-1, 1]: the image_classify task scales the uint8 pixels; optional
#       features(images_BHWC) -> [B, D], the penultimate activations, for FID: eval/fid.py)
#   kind="masked_lm"        build(cfg, *, vocab_size, max_len, dtype)
#       __call__(tokens_BT, mask_BT, *, train) -> logits_BTV
#   kind="denoiser"         build(cfg, *, image_shape, num_classes, dtype)
#       __call__(x_BHWC, t_B, *, cond=None, train) -> same shape as x (eps / x0 / v prediction)
#       (2x the channels with cfg.learn_sigma: [prediction, variance interpolation]). t_B: the
#       integer step or a float, embedded as t * cfg.time_scale. cond: a dict; "label" int [B]
#       (id num_classes = the null class of CFG, also used when absent), "text_tokens" /
#       "text_mask" [B, S] (seqgen_jax.data.captions; absent = the null caption), and for a
#       super-resolution model (required) "low_res" [B, h, w, C'] and "low_res_t" [B]. Details:
#       seqgen_jax/nn/unet.py ("unet"), seqgen_jax/nn/dit.py ("dit").
MODELS = ModelRegistry()
TASKS: Registry = Registry("task")
