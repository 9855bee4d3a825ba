"""BERT checkpoints -> the masked_lm "bert" and the classifier "bert".

Segment (token-type) embeddings: our encoder takes single-segment input, so row 0 of BERT's
token_type_embeddings is added into the position table, which gives identical embeddings for
token_type_ids = 0 (what BertForSequenceClassification sees for one sentence).

Axis key: D model width, N heads, H head width, Q = 3D fused query / key / value width,
V vocabulary, P positions.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seqgen_jax.convert.hf import (
  Checkpoint,
  Imported,
  Tensors,
  check_shapes,
  expect_model_type,
  layer_norm,
  linear,
  open_checkpoint,
  unsupported,
)
from seqgen_jax.errors import DataError
from seqgen_jax.nn.bert import EncoderClassifier, MaskedLM, build_encoder
from seqgen_jax.nn.transformer import stack_layer_params

BERT_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                    "relu": "relu"}


def bert_model_config(hf: dict, where: str | pathlib.Path = "checkpoint"
                      ) -> ml_collections.ConfigDict:
  """The ``config.model`` fields of the "bert" builders that reproduce a BERT config.json."""
  expect_model_type(hf, "bert", where)
  act = hf.get("hidden_act", "gelu")
  if act not in BERT_ACTIVATIONS:
    raise unsupported(where, "hidden_act", act, ", ".join(BERT_ACTIVATIONS))
  pos = hf.get("position_embedding_type", "absolute")
  if pos != "absolute":
    raise unsupported(where, "position_embedding_type", pos, "absolute")
  if hf.get("is_decoder", False):
    raise unsupported(where, "is_decoder", True, "false")
  d = hf["hidden_size"]
  return ml_collections.ConfigDict(dict(
      name="bert", num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
      d_model=d, d_ff=hf["intermediate_size"], dropout=hf.get("hidden_dropout_prob", 0.0),
      attention_dropout=hf.get("attention_probs_dropout_prob", 0.0), norm="post",
      positions="learned", activation=BERT_ACTIVATIONS[act],
      ln_eps=hf.get("layer_norm_eps", 1e-12)))


def _rename_legacy(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Old TF-converted checkpoints call LayerNorm weights gamma / beta."""
  out = {}
  for k, v in sd.items():
    if k.endswith("LayerNorm.gamma"):
      k = k[:-len("gamma")] + "weight"
    elif k.endswith("LayerNorm.beta"):
      k = k[:-len("beta")] + "bias"
    out[k] = v
  return out


def _encoder_params(t: Tensors, cfg: ml_collections.ConfigDict, scan_layers: bool) -> dict:
  d, n = cfg.d_model, cfg.num_heads
  h = d // n
  layers = {}
  for i in range(cfg.num_layers):
    p = f"encoder.layer.{i}."
    a = p + "attention.self."
    qkv_w_DQ = np.concatenate([t(a + x + ".weight").T for x in ("query", "key", "value")],
                              axis=1)
    qkv_b_Q = np.concatenate([t(a + x + ".bias") for x in ("query", "key", "value")])
    layers[f"layers_{i}"] = {
        "attn": {"qkv": {"kernel": qkv_w_DQ.reshape(d, 3 * n, h),
                         "bias": qkv_b_Q.reshape(3 * n, h)},
                 "out": {"kernel": t(p + "attention.output.dense.weight").T.reshape(n, h, d),
                         "bias": t(p + "attention.output.dense.bias")}},
        "ln1": layer_norm(t, p + "attention.output.LayerNorm"),
        "mlp": {"fc": linear(t(p + "intermediate.dense.weight"), t(p + "intermediate.dense.bias")),
                "proj": linear(t(p + "output.dense.weight"), t(p + "output.dense.bias"))},
        "ln2": layer_norm(t, p + "output.LayerNorm")}
  pos_PD = t("embeddings.position_embeddings.weight")
  if t.has("embeddings.token_type_embeddings.weight"):
    pos_PD = pos_PD + t("embeddings.token_type_embeddings.weight")[0]
  return {"token_embed": {"embedding": t("embeddings.word_embeddings.weight")},
          "pos_embed": {"embedding": pos_PD},
          "embed_ln": layer_norm(t, "embeddings.LayerNorm"),
          "blocks": stack_layer_params(layers) if scan_layers else layers}


def _read(ckpt: Checkpoint, scan_layers: bool, attention: str):
  hf, sd = ckpt.config, _rename_legacy(ckpt.tensors)
  cfg = bert_model_config(hf, ckpt.where)
  cfg.scan_layers, cfg.attention = scan_layers, attention
  prefix = "bert." if any(k.startswith("bert.") for k in sd) else ""
  enc = Tensors(sd, ckpt.name, prefix)
  kwargs = dict(vocab_size=hf["vocab_size"], max_len=hf["max_position_embeddings"])
  return sd, cfg, enc, kwargs


def _example():
  return jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2), bool)


def bert_mlm_from_checkpoint(ckpt: Checkpoint, *, dtype: jnp.dtype | None = None,
                             scan_layers: bool = False, attention: str = "xla") -> Imported:
  """A BertForMaskedLM / BertForPreTraining ``Checkpoint`` as the masked_lm "bert"."""
  sd, cfg, enc, kwargs = _read(ckpt, scan_layers, attention)
  head = Tensors(sd, ckpt.name, "cls.predictions.")
  if not head.has("transform.dense.weight"):
    raise DataError(f"checkpoint {ckpt.name} has no masked-LM head (cls.predictions.*); load "
                    "it as a classifier, or use a BertForMaskedLM checkpoint")
  word_VD = enc("embeddings.word_embeddings.weight")
  if head.has("decoder.weight") and not np.array_equal(head("decoder.weight"), word_VD):
    raise DataError(f"checkpoint {ckpt.name} has an MLM decoder that is not tied to the word "
                    "embeddings; the bert masked_lm ties them")
  bias_V = head("bias") if head.has("bias") else head("decoder.bias")
  params = {"encoder": _encoder_params(enc, cfg, scan_layers),
            "mlm_dense": linear(head("transform.dense.weight"), head("transform.dense.bias")),
            "mlm_ln": layer_norm(head, "transform.LayerNorm"), "mlm_bias": bias_V}
  model = MaskedLM(build_encoder(cfg, **kwargs, dtype=dtype))
  check_shapes(model, params, *_example())
  return Imported(model, params, cfg, "masked_lm", kwargs)


def bert_classifier_from_checkpoint(ckpt: Checkpoint, *, num_classes: int | None = None,
                                    rng: jax.Array | None = None, dtype: jnp.dtype | None = None,
                                    scan_layers: bool = False, attention: str = "xla"
                                    ) -> Imported:
  """A BERT ``Checkpoint`` as the classifier "bert" (see ``load_bert_classifier``)."""
  sd, cfg, enc, kwargs = _read(ckpt, scan_layers, attention)
  has_head = "classifier.weight" in sd
  if has_head:
    ckpt_classes = sd["classifier.weight"].shape[0]
    if num_classes not in (None, ckpt_classes):
      raise DataError(f"checkpoint {ckpt.name} classifies into {ckpt_classes} classes, "
                      f"num_classes={num_classes} was asked for")
    num_classes = ckpt_classes
  elif num_classes is None or rng is None:
    raise DataError(f"checkpoint {ckpt.name} has no classification head; pass num_classes and "
                    "rng to initialise one")
  cfg.pooling = "cls"
  kwargs = dict(kwargs, num_classes=num_classes)
  model = EncoderClassifier(build_encoder(cfg, vocab_size=kwargs["vocab_size"],
                                          max_len=kwargs["max_len"], dtype=dtype),
                            num_classes=num_classes, pooling="cls", dropout=cfg.dropout)
  fresh = {}
  if not (has_head and enc.has("pooler.dense.weight")):
    fresh = jax.jit(model.init)(rng, *_example())["params"]
  params = {"encoder": _encoder_params(enc, cfg, scan_layers)}
  params["pooler"] = (linear(enc("pooler.dense.weight"), enc("pooler.dense.bias"))
                      if enc.has("pooler.dense.weight") else fresh["pooler"])
  params["head"] = (linear(np.asarray(sd["classifier.weight"], np.float32),
                           np.asarray(sd["classifier.bias"], np.float32))
                    if has_head else fresh["head"])
  check_shapes(model, params, *_example())
  return Imported(model, params, cfg, "classifier", kwargs)


def load_bert_mlm(source: Any, *, dtype: jnp.dtype | None = None, scan_layers: bool = False,
                  attention: str = "xla") -> Imported:
  """A BertForMaskedLM / BertForPreTraining checkpoint directory (or in-memory model) as the
  masked_lm "bert"."""
  return bert_mlm_from_checkpoint(open_checkpoint(source), dtype=dtype, scan_layers=scan_layers,
                                  attention=attention)


def load_bert_classifier(source: Any, *, num_classes: int | None = None,
                         rng: jax.Array | None = None, dtype: jnp.dtype | None = None,
                         scan_layers: bool = False, attention: str = "xla") -> Imported:
  """A BERT checkpoint directory (or in-memory model) as the classifier "bert" (pooler + head on
  the [CLS] position).

  With a BertForSequenceClassification checkpoint everything is imported (``num_classes``, if
  given, must match). Without a classification head (e.g. a pre-training checkpoint) the head,
  and the pooler if it is missing too, are initialised from ``rng`` for ``num_classes``.
  """
  return bert_classifier_from_checkpoint(open_checkpoint(source), num_classes=num_classes,
                                         rng=rng, dtype=dtype, scan_layers=scan_layers,
                                         attention=attention)
