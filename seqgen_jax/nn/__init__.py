"""Pure model definitions (flax.linen). Importing this package registers every model."""

from seqgen_jax.nn import (  # noqa: F401  (importing a module registers its models)
    bert,  # masked_lm "bert"; classifiers "bert" (post-LN) and "transformer" (pre-LN)
    bidirectional_gpt,  # masked_lm "gpt_bidir" (MDLM's backbone)
    dit,  # denoiser "dit"
    encoder_decoder,  # seq2seq "transformer"
    gpt,  # causal_lm "gpt"
    resnet,  # image_classifier "resnet" (also the FID feature network)
    rnn_models,  # rnn, lstm, gru, mingru, minlstm, lru: causal_lm, classifier, forecaster
    rnn_seq2seq,  # rnn, lstm, gru: seq2seq
    transformer_forecaster,  # forecaster "transformer"
    unet,  # denoiser "unet"
    vit,  # image_classifier "vit"
)
