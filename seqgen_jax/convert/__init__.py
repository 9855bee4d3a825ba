"""Weight import from Hugging Face transformers / diffusers models (nothing is downloaded).

One entry point, ``load_pretrained(source)``, reads a local checkpoint directory or an in-memory
transformers / diffusers model of a supported architecture (GPT-2, BERT for masked LM or
classification, diffusers' UNet2DModel and DiTTransformer2DModel) and returns an ``Imported``
record: the flax module, its float32 params, the ``config.model`` fields (``config.name`` is the
registry name) plus ``build_kwargs`` that rebuild the module through the registry, and its
``kind`` (causal_lm, masked_lm, classifier, denoiser). See seqgen_jax/convert/pretrained.py.

The per-architecture loaders (``load_gpt2``, ``load_bert_mlm``, ``load_bert_classifier``,
``load_diffusers_unet``, ``load_diffusers_dit``) take the same sources and return the same record.
A transformers checkpoint directory holds ``config.json`` and ``model.safetensors`` or
``pytorch_model.bin`` (or their sharded ``*.index.json`` forms); a diffusers one
``diffusion_pytorch_model.safetensors`` / ``.bin``.
"""

from seqgen_jax.convert.bert import load_bert_classifier, load_bert_mlm
from seqgen_jax.convert.diffusers_dit import load_diffusers_dit
from seqgen_jax.convert.diffusers_unet import load_diffusers_unet
from seqgen_jax.convert.gpt2 import load_gpt2
from seqgen_jax.convert.hf import Imported, read_checkpoint
from seqgen_jax.convert.pretrained import ARCHITECTURES, load_pretrained

__all__ = ["ARCHITECTURES", "Imported", "load_bert_classifier", "load_bert_mlm",
           "load_diffusers_dit", "load_diffusers_unet", "load_gpt2", "load_pretrained",
           "read_checkpoint"]
