"""Token ids of the caption vocabulary, shared by the tokenizer that writes them
(seqgen_jax/data/captions.py) and the text encoder that reads them (seqgen_jax/nn/text_encoder.py).

0 = padding, 1 = BOS, which starts every caption (so the empty "null" caption of classifier-free
guidance is the single token [BOS]), 2 = an unknown word. A module of its own because neither
side may import the other: models never import data, data never imports models.
"""

PAD_ID = 0
BOS_ID = 1
UNK_ID = 2
