"""Caption builder, word-level tokenizer and the small text encoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqgen_jax.caption_ids import BOS_ID, PAD_ID, UNK_ID
from seqgen_jax.data.captions import (
    LABEL_NAMES,
    TEMPLATES,
    CaptionBuilder,
    caption,
    caption_tokenizer,
)
from seqgen_jax.errors import ConfigError
from seqgen_jax.nn.text_encoder import TextEncoder


def test_captions_name_the_class_with_several_templates():
  assert caption("mnist", 7, 0) == "a handwritten seven"
  assert caption("cifar10", 8, 0) == "a photo of a ship"
  assert caption("cifar10", 0, 0) == "a photo of an airplane"  # article fits the next word
  builder = CaptionBuilder("fashion_mnist")
  labels = np.repeat(np.arange(10), 20)
  texts = builder.captions(labels, np.random.default_rng(0))
  for y, text in zip(labels, texts):
    assert LABEL_NAMES["fashion_mnist"][y] in text
  for y in range(10):  # 20 draws per class hit several of the 5 templates
    assert len({t for t, lab in zip(texts, labels) if lab == y}) >= 3
  with pytest.raises(ConfigError, match="choose one of: cifar10, fashion_mnist, mnist"):
    CaptionBuilder("imagenet")


def test_tokenizer_round_trip_and_special_ids():
  tok = caption_tokenizer()
  assert tok.vocab[:3] == ["<pad>", "<bos>", "<unk>"] and (PAD_ID, BOS_ID, UNK_ID) == (0, 1, 2)
  for d in LABEL_NAMES:
    for y in range(len(LABEL_NAMES[d])):
      for k in range(len(TEMPLATES[d])):
        ids, mask = tok.encode(caption(d, y, k))
        assert ids[0] == BOS_ID and UNK_ID not in ids and mask.sum() == (ids != PAD_ID).sum()
        assert tok.decode(ids) == caption(d, y, k)
  ids, _ = tok.encode("a photo of a unicorn")
  assert ids[5] == UNK_ID
  null_ids, null_mask = CaptionBuilder("mnist", tok).null_tokens(3)
  assert (null_ids[:, 0] == BOS_ID).all() and null_mask.sum() == 3
  with pytest.raises(ConfigError, match="at most"):
    tok.encode(" ".join(["cat"] * tok.max_len))


def test_text_encoder_is_padding_invariant():
  """Outputs at real tokens and the pooled vector ignore how much padding follows and what ids
  it holds; a different caption changes them."""
  tok = caption_tokenizer()
  enc = TextEncoder(tok.vocab_size, max_len=16, width=32, num_layers=2, num_heads=4)
  ids, mask = CaptionBuilder("cifar10", tok).tokens(np.array([3, 5]), np.random.default_rng(0))
  params = jax.jit(enc.init)(jax.random.key(0), ids, mask)
  run = jax.jit(enc.apply)
  h, pooled = run(params, ids, mask)
  length = ids.shape[1]
  longer = np.random.RandomState(1).randint(0, tok.vocab_size, (2, 16))  # junk in every pad slot
  longer[:, :length] = np.where(mask, ids, longer[:, :length])
  h2, pooled2 = run(params, longer, np.pad(mask, ((0, 0), (0, 16 - length))))
  real = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(h2)[:, :length][real], np.asarray(h)[real],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(pooled2, pooled, rtol=1e-5, atol=1e-5)
  other, other_mask = CaptionBuilder("cifar10", tok).tokens(np.array([4, 6]),
                                                            np.random.default_rng(0))
  assert np.abs(run(params, other, other_mask)[1] - pooled).max() > 1e-3
  with pytest.raises(ValueError, match="max_len"):
    enc.apply(params, jnp.zeros((1, 17), jnp.int32), jnp.ones((1, 17), bool))
