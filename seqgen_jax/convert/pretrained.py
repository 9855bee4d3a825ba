"""``load_pretrained(source)``: one entry point for every supported pretrained architecture.

``source`` is a local checkpoint directory (what transformers' / diffusers' ``save_pretrained``
writes; a diffusers pipeline directory is read from its ``unet/`` or ``transformer/``) or an
in-memory transformers / diffusers model. The architecture is the model's class (a directory
records it in config.json: ``architectures`` for transformers, ``_class_name`` for diffusers):

  GPT2LMHeadModel, GPT2Model            -> causal_lm "gpt"
  BertForMaskedLM, BertForPreTraining   -> masked_lm "bert"
  BertForSequenceClassification         -> classifier "bert"
  BertModel                             -> classifier "bert" (new head: num_classes and rng)
  UNet2DModel                           -> denoiser "unet"
  DiTTransformer2DModel                 -> denoiser "dit"

``kind`` picks the other reading of a BERT checkpoint (e.g. ``kind="classifier"`` on a
BertForMaskedLM puts a fresh head on its encoder). The result is an ``Imported`` record whose
``config`` (the ``config.model`` fields) and ``build_kwargs`` rebuild the same module through
the model registry. Every problem is one line: a DataError naming the unsupported architecture,
config field or missing tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from seqgen_jax.convert.bert import bert_classifier_from_checkpoint, bert_mlm_from_checkpoint
from seqgen_jax.convert.diffusers_dit import dit_from_checkpoint
from seqgen_jax.convert.diffusers_unet import unet_from_checkpoint
from seqgen_jax.convert.gpt2 import gpt2_from_checkpoint
from seqgen_jax.convert.hf import Checkpoint, Imported, open_checkpoint
from seqgen_jax.errors import DataError

ARCHITECTURES = {  # class name -> (converter family, the kind it is read as by default)
    "GPT2LMHeadModel": ("gpt2", "causal_lm"), "GPT2Model": ("gpt2", "causal_lm"),
    "BertForMaskedLM": ("bert", "masked_lm"), "BertForPreTraining": ("bert", "masked_lm"),
    "BertForSequenceClassification": ("bert", "classifier"), "BertModel": ("bert", "classifier"),
    "UNet2DModel": ("unet", "denoiser"), "DiTTransformer2DModel": ("dit", "denoiser"),
}
KINDS = {"gpt2": ("causal_lm",), "bert": ("masked_lm", "classifier"), "unet": ("denoiser",),
         "dit": ("denoiser",)}


def _architecture(ckpt: Checkpoint) -> str:
  """The class name, or for an old checkpoint without one a guess from model_type + tensors."""
  if ckpt.architecture:
    return ckpt.architecture
  model_type = ckpt.config.get("model_type")
  if model_type == "gpt2":
    return "GPT2LMHeadModel"
  if model_type == "bert":
    if any(k.startswith("cls.predictions.") for k in ckpt.tensors):
      return "BertForMaskedLM"
    return "BertForSequenceClassification" if "classifier.weight" in ckpt.tensors else "BertModel"
  raise DataError(f"{ckpt.where} records no architecture (no 'architectures' / '_class_name', "
                  f"model_type {model_type!r}); supported: {', '.join(ARCHITECTURES)}")


def load_pretrained(source: Any, *, kind: str | None = None, dtype: Any = None,
                    scan_layers: bool = False, attention: str = "xla",
                    num_classes: int | None = None, rng: jax.Array | None = None) -> Imported:
  """The flax module, float32 params, ``config.model`` fields and kind of a pretrained model.

  ``source``: a checkpoint directory or an in-memory transformers / diffusers model. ``kind``:
  None (the architecture's own) or one it can be read as. ``dtype``: the module's compute
  dtype. ``scan_layers`` / ``attention``: Transformer options (GPT-2, BERT). ``num_classes`` /
  ``rng``: a BERT classifier's head (a checkpoint without one gets a fresh head from ``rng``).
  """
  ckpt = open_checkpoint(source)
  arch = _architecture(ckpt)
  if arch not in ARCHITECTURES:
    raise DataError(f"{ckpt.name} is a {arch}, which load_pretrained does not support; "
                    f"supported: {', '.join(ARCHITECTURES)}")
  family, default_kind = ARCHITECTURES[arch]
  kind = kind or default_kind
  if kind not in KINDS[family]:
    raise DataError(f"a {arch} cannot be loaded as a {kind!r} model; it can be: "
                    f"{', '.join(KINDS[family])}")
  if family != "bert" and (num_classes is not None or rng is not None):
    raise DataError(f"num_classes / rng apply to BERT classifiers, not to a {arch}")
  if family in ("unet", "dit") and (scan_layers or attention != "xla"):
    raise DataError(f"scan_layers / attention are options of GPT-2 and BERT, not of a {arch}")
  tf = dict(dtype=dtype, scan_layers=scan_layers, attention=attention)
  loaders: dict[tuple[str, str], Callable[[], Imported]] = {
      ("gpt2", "causal_lm"): lambda: gpt2_from_checkpoint(ckpt, **tf),
      ("bert", "masked_lm"): lambda: bert_mlm_from_checkpoint(ckpt, **tf),
      ("bert", "classifier"): lambda: bert_classifier_from_checkpoint(
          ckpt, num_classes=num_classes, rng=rng, **tf),
      ("unet", "denoiser"): lambda: unet_from_checkpoint(ckpt, dtype=dtype),
      ("dit", "denoiser"): lambda: dit_from_checkpoint(ckpt, dtype=dtype),
  }
  return loaders[(family, kind)]()
