"""Weight import from Hugging Face checkpoints on local disk (nothing is downloaded).

  * ``load_gpt2(path)``: GPT2LMHeadModel / GPT2Model -> the causal_lm "gpt".
  * ``load_bert_mlm(path)``: BertForMaskedLM (or BertForPreTraining) -> the masked_lm "bert".
  * ``load_bert_classifier(path)``: BertForSequenceClassification -> the classifier "bert"; a
    checkpoint without a classification head (e.g. bert-base-uncased) gets a fresh one.

A checkpoint directory holds ``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``
(or their sharded ``*.index.json`` forms). Each loader returns an ``Imported`` record: the flax
module, its params, and the ``config.model`` fields that rebuild the module through the
registry.

``convert.diffusers_unet`` / ``convert.diffusers_dit`` convert diffusers ``UNet2DModel`` (e.g. the
DDPM CIFAR-10 layout) and ``DiTTransformer2DModel`` state dicts into the denoisers "unet" / "dit".
"""

from seqgen_jax.convert.bert import load_bert_classifier, load_bert_mlm
from seqgen_jax.convert.gpt2 import load_gpt2
from seqgen_jax.convert.hf import Imported, read_checkpoint

__all__ = ["Imported", "load_bert_classifier", "load_bert_mlm", "load_gpt2", "read_checkpoint"]
