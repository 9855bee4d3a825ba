"""Weight import: tiny random-initialised Hugging Face GPT-2 / BERT models (built here, nothing
downloaded), saved to disk, imported, and compared logit for logit with PyTorch.

Tolerance: relative error max|ours - HF| / max|HF| <= 1e-5 in float32 (both sides compute in
float32; the difference is summation order inside matmuls and softmax).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from seqgen_jax import convert  # noqa: E402
from seqgen_jax.errors import ConfigError, DataError  # noqa: E402
from seqgen_jax.nn.bert import with_encoder_from  # noqa: E402
from seqgen_jax.registry import MODELS  # noqa: E402

RTOL = 1e-5
V, T = 61, 12


def _rel_err(ours, ref) -> float:
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def _perturb(model, seed):
  """Random-initialised HF models have LayerNorm = (1, 0) and zero biases; noise on every
  parameter makes a swapped or misplaced tensor show up in the logits."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn(p.shape, generator=g))
  return model.eval()


def _save(model, path, fmt):
  if fmt == "safetensors":
    model.save_pretrained(path)
  else:  # the pre-safetensors layout: config.json + a pickled state dict
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")
  return path


def _tokens(seed, b=2):
  return np.random.default_rng(seed).integers(0, V, size=(b, T))


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
  torch.manual_seed(0)
  cfg = transformers.GPT2Config(vocab_size=V, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                                bos_token_id=0, eos_token_id=0)
  return _perturb(transformers.GPT2LMHeadModel(cfg), 1), tmp_path_factory.mktemp("gpt2")


@pytest.fixture(scope="module")
def bert_cfg():
  return transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=48,
                                 max_position_embeddings=16, num_labels=3)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_gpt2_logits_match_hugging_face(gpt2, fmt):
  hf, root = gpt2
  imp = convert.load_gpt2(_save(hf, root / fmt, fmt))
  assert imp.model.activation == "gelu_tanh"  # GPT-2's gelu_new
  toks = _tokens(0)
  with torch.no_grad():
    ref = hf(torch.tensor(toks)).logits.numpy()
  ours = jax.jit(imp.model.apply)({"params": imp.params}, jnp.asarray(toks))
  assert _rel_err(ours, ref) <= RTOL


def test_gpt2_import_into_scanned_layers_and_rebuild_by_name(gpt2):
  hf, root = gpt2
  path = _save(hf, root / "scan", "safetensors")
  imp = convert.load_gpt2(path, scan_layers=True)
  assert imp.params["decoder"]["layers"]["ln1"]["scale"].shape == (2, 32)
  toks = _tokens(1)
  with torch.no_grad():
    ref = hf(torch.tensor(toks)).logits.numpy()
  model = MODELS.get(imp.config.name, kind=imp.kind)(imp.config, **imp.build_kwargs)
  assert _rel_err(jax.jit(model.apply)({"params": imp.params}, jnp.asarray(toks)), ref) <= RTOL


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_bert_mlm_logits_match_hugging_face_with_padding(bert_cfg, tmp_path, fmt):
  torch.manual_seed(2)
  hf = _perturb(transformers.BertForMaskedLM(bert_cfg), 3)
  imp = convert.load_bert_mlm(_save(hf, tmp_path / fmt, fmt))
  assert imp.model.encoder.activation == "gelu"  # BERT's exact erf GELU
  toks = _tokens(2)
  mask = np.ones((2, T), bool)
  mask[1, 7:] = False  # the second row is padded after 7 tokens
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(toks), attention_mask=torch.tensor(mask.astype(np.int64))
             ).logits.numpy()
  ours = jax.jit(imp.model.apply)({"params": imp.params}, jnp.asarray(toks), jnp.asarray(mask))
  assert _rel_err(ours, ref) <= RTOL


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_bert_classifier_logits_match_hugging_face(bert_cfg, tmp_path, fmt):
  torch.manual_seed(4)
  hf = _perturb(transformers.BertForSequenceClassification(bert_cfg), 5)
  imp = convert.load_bert_classifier(_save(hf, tmp_path / fmt, fmt))
  assert imp.build_kwargs["num_classes"] == 3
  toks = _tokens(3, b=3)
  mask = np.arange(T)[None, :] < np.array([[T], [5], [9]])
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(toks), attention_mask=torch.tensor(mask.astype(np.int64))
             ).logits.numpy()
  ours = jax.jit(imp.model.apply)({"params": imp.params}, jnp.asarray(toks), jnp.asarray(mask))
  assert ours.shape == (3, 3)
  assert _rel_err(ours, ref) <= RTOL


def test_classifier_from_mlm_checkpoint_shares_the_encoder(bert_cfg, tmp_path):
  torch.manual_seed(6)
  hf = _perturb(transformers.BertForMaskedLM(bert_cfg), 7)
  path = _save(hf, tmp_path / "mlm", "safetensors")
  with pytest.raises(DataError, match="no classification head; pass num_classes and rng"):
    convert.load_bert_classifier(path)
  clf = convert.load_bert_classifier(path, num_classes=2, rng=jax.random.PRNGKey(0))
  mlm = convert.load_bert_mlm(path)
  # The encoder subtree is interchangeable, and with_encoder_from moves it into a fresh model.
  toks, mask = jnp.asarray(_tokens(4)), jnp.ones((2, T), bool)
  fresh = jax.eval_shape(MODELS.get("bert", kind="classifier")(
      clf.config, vocab_size=V, num_classes=2, max_len=16).init,
      jax.random.PRNGKey(1), toks, mask)["params"]  # shapes are all with_encoder_from needs
  moved = with_encoder_from(fresh, mlm.params)
  with pytest.raises(ConfigError, match=r"pretrained encoder parameter \['blocks'\]\['layers_0'\]"
                                        r"\['mlp'\]\['fc'\]\['kernel'\] has shape"):
    bad = jax.tree.map(lambda x: x, mlm.params)
    bad["encoder"]["blocks"]["layers_0"]["mlp"]["fc"]["kernel"] = np.zeros((32, 7))
    with_encoder_from(fresh, bad)
  enc_fn = jax.jit(clf.model.encoder.apply)
  enc = lambda m, p: enc_fn({"params": p["encoder"]}, toks, mask)
  np.testing.assert_array_equal(enc(clf.model.encoder, moved), enc(mlm.model.encoder, mlm.params))
  with torch.no_grad():
    ref_h = hf.bert(input_ids=torch.tensor(np.asarray(toks))).last_hidden_state.numpy()
  assert _rel_err(enc(clf.model.encoder, clf.params), ref_h) <= RTOL


def test_clear_errors_for_bad_checkpoints(gpt2, bert_cfg, tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    convert.load_gpt2(tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="config.json not found"):
    convert.load_gpt2(tmp_path / "empty")
  (tmp_path / "empty" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  with pytest.raises(DataError, match="no weights in .*expected one of model.safetensors"):
    convert.load_gpt2(tmp_path / "empty")
  hf, root = gpt2
  path = _save(hf, root / "errors", "safetensors")
  with pytest.raises(DataError, match="model_type 'gpt2'; this loader reads 'bert'"):
    convert.load_bert_mlm(path)
  cfg = json.loads((path / "config.json").read_text())
  (path / "config.json").write_text(json.dumps({**cfg, "activation_function": "swish"}))
  with pytest.raises(DataError, match="activation_function='swish', which is not supported"):
    convert.load_gpt2(path)
  clf = _save(transformers.BertForSequenceClassification(bert_cfg), tmp_path / "clf",
              "safetensors")
  with pytest.raises(DataError, match="no masked-LM head"):
    convert.load_bert_mlm(clf)
  (clf / "model.safetensors").write_bytes(b"not a safetensors file")
  with pytest.raises(DataError, match="cannot read weights from"):
    convert.load_bert_classifier(clf)


# ------------------------------------------------------------------------------ load_pretrained


@pytest.mark.parametrize("arch", ["GPT2LMHeadModel", "BertForMaskedLM",
                                  "BertForSequenceClassification"])
def test_load_pretrained_directory_and_in_memory(tmp_path, arch):
  """One entry point for both sources, at shapes the tests above do not use (3 layers, 3 heads
  of 8, vocabulary 45): same params either way, the record rebuilds the module by name, and
  the logits match transformers' (max |ours - HF| / max |HF| <= 1e-5; measured <= 6e-7)."""
  torch.manual_seed(8)
  if arch.startswith("GPT2"):
    cfg = transformers.GPT2Config(vocab_size=45, n_positions=20, n_embd=24, n_layer=3, n_head=3,
                                  layer_norm_epsilon=1e-4, activation_function="gelu",
                                  bos_token_id=0, eos_token_id=0)
  else:
    cfg = transformers.BertConfig(vocab_size=45, hidden_size=24, num_hidden_layers=3,
                                  num_attention_heads=3, intermediate_size=40,
                                  max_position_embeddings=20, num_labels=4, hidden_act="gelu_new")
  hf = _perturb(getattr(transformers, arch)(cfg), 9)
  hf.save_pretrained(tmp_path)
  imp, mem = convert.load_pretrained(tmp_path), convert.load_pretrained(hf)
  jax.tree.map(np.testing.assert_array_equal, imp.params, mem.params)
  assert imp.kind == {"GPT2LMHeadModel": "causal_lm", "BertForMaskedLM": "masked_lm",
                      "BertForSequenceClassification": "classifier"}[arch]
  model = MODELS.get(imp.config.name, kind=imp.kind)(imp.config, **imp.build_kwargs)
  toks = np.random.default_rng(10).integers(0, 45, size=(3, 9))
  mask = np.arange(9)[None, :] < np.array([[9], [4], [7]])
  args = (toks,) if imp.kind == "causal_lm" else (toks, mask)
  with torch.no_grad():
    kw = {} if imp.kind == "causal_lm" else {"attention_mask": torch.tensor(mask.astype(int))}
    ref = hf(input_ids=torch.tensor(toks), **kw).logits.numpy()
  ours = jax.jit(model.apply)({"params": imp.params}, *map(jnp.asarray, args))
  if imp.kind == "masked_lm":  # padded positions are not compared
    ours, ref = np.asarray(ours)[mask], ref[mask]
  assert _rel_err(ours, ref) <= RTOL


def test_load_pretrained_kinds_and_errors(bert_cfg, tmp_path):
  torch.manual_seed(12)
  mlm = _perturb(transformers.BertForMaskedLM(bert_cfg), 13)
  clf = convert.load_pretrained(mlm, kind="classifier", num_classes=5, rng=jax.random.PRNGKey(0))
  assert clf.kind == "classifier" and clf.build_kwargs["num_classes"] == 5
  with pytest.raises(DataError, match="a BertForMaskedLM cannot be loaded as a 'denoiser'"):
    convert.load_pretrained(mlm, kind="denoiser")
  with pytest.raises(DataError, match="BertForTokenClassification, which load_pretrained does "
                                      "not support; supported: GPT2LMHeadModel"):
    convert.load_pretrained(transformers.BertForTokenClassification(bert_cfg))
  gpt = transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=V, n_positions=16, n_embd=32, n_layer=1, n_head=4,
      scale_attn_by_inverse_layer_idx=True))
  with pytest.raises(DataError, match="in-memory GPT2LMHeadModel's config sets "
                                      "scale_attn_by_inverse_layer_idx=True, which is not"):
    convert.load_pretrained(gpt)
  with pytest.raises(DataError, match="cannot load pretrained weights from a dict"):
    convert.load_pretrained({"wte": 1})
  with pytest.raises(DataError, match="num_classes / rng apply to BERT classifiers"):
    convert.load_pretrained(gpt, num_classes=3)
