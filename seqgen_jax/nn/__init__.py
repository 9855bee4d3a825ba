"""Pure model definitions (flax.linen). Importing this package registers every model."""

from seqgen_jax.nn import (  # noqa: F401  (importing a module registers its models)
    bidirectional_gpt,  # masked_lm "gpt_bidir" (MDLM's backbone)
    dit,  # registers the denoiser "dit"
    resnet,  # registers the image_classifier "resnet" (also the FID feature network)
    rnn_models,  # rnn, lstm, gru, mingru, minlstm, lru: causal_lm, classifier, forecaster
    rnn_seq2seq,  # rnn, lstm, gru: seq2seq
    transformer,  # gpt, bert, transformer (enc-dec), vit, ...
    unet,  # registers the denoiser "unet"
)
