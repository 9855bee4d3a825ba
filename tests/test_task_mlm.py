"""The mlm task: BERT masking statistics on a large sample, special tokens never selected, and
fine-tuning (classify with init.from_workdir) starting from exactly the pre-trained encoder with
the pre-training run's tokenizer; one-line errors for a missing checkpoint or a foreign
tokenizer."""

import collections
import json

import jax
import ml_collections
import numpy as np
import pytest
from conftest import tiny_lm_config

from seqgen_jax.errors import ConfigError
from seqgen_jax.tasks import build_task, classify, mlm
from seqgen_jax.train.loop import train_and_evaluate

SUBSET = 300


def _mlm_config(data_dir, prepared_dir):
  c = tiny_lm_config(task="mlm", data__name="sst2", train__num_steps=4,
                     train__checkpoint_every=0, train__eval_every=0, train__log_every=2)
  c.data.data_dir, c.data.prepared_dir = str(data_dir), str(prepared_dir)
  c.data.max_examples = SUBSET
  c.data.corpus = "sst2"
  c.data.seq_len, c.data.max_len = 12, 16
  c.data.min_count, c.data.max_vocab, c.data.mask_rate = 1, 0, 0.15
  c.model = ml_collections.ConfigDict(dict(
      name="bert", num_layers=1, num_heads=2, d_model=16, d_ff=32, dropout=0.0))
  c.eval.batch_size = 64
  return c


def test_masking_statistics_on_a_large_sample():
  rng = np.random.default_rng(0)
  b, t, vocab, mask_id = 1000, 500, 50, 4
  specials = (0, 2, 3, mask_id)  # pad, [CLS], [SEP], [MASK]
  tokens = rng.integers(1, vocab, size=(b, t))  # includes <unk> (1), which may be chosen
  lengths = rng.integers(3, t, size=b)
  real = np.arange(t)[None, :] < lengths[:, None]
  tokens[:, 0] = 2
  tokens[np.arange(b), lengths - 1] = 3
  tokens[~real] = 0
  out = mlm.mask_tokens(tokens, real, np.random.default_rng(1), mask_id=mask_id,
                        vocab_size=vocab, special_ids=specials)
  sel = out["weights"] > 0
  special = np.isin(tokens, specials)
  eligible = real & ~special
  # Special and padding positions are never selected and never changed.
  assert not sel[special | ~real].any()
  np.testing.assert_array_equal(out["inputs"][~sel], tokens[~sel])
  np.testing.assert_array_equal(out["targets"], tokens)
  n, k = eligible.sum(), sel.sum()
  assert n > 200_000
  # 15% of the eligible positions, within 5 binomial standard deviations.
  assert abs(k / n - 0.15) < 5 * np.sqrt(0.15 * 0.85 / n)
  inp, tgt = out["inputs"][sel], tokens[sel]
  is_mask, same = inp == mask_id, inp == tgt
  is_random = ~is_mask & ~same
  q = 1 / (vocab - len(specials))  # a random word equals the original with this probability
  for frac, p in ((is_mask.mean(), 0.8), (is_random.mean(), 0.1 * (1 - q)),
                  (same.mean(), 0.1 + 0.1 * q)):
    assert abs(frac - p) < 5 * np.sqrt(p * (1 - p) / k), (frac, p)
  assert not np.isin(inp[is_random], specials).any()  # replacements are ordinary words
  counts = np.bincount(inp[is_random], minlength=vocab)[[i for i in range(vocab)
                                                        if i not in specials]]
  assert counts.min() > 0.5 * counts.mean()  # spread over the whole vocabulary


@pytest.fixture(scope="module")
def mlm_run(data_dir, prepared_dir, tmp_path_factory):
  wd = tmp_path_factory.mktemp("mlm")
  state = train_and_evaluate(_mlm_config(data_dir, prepared_dir), str(wd), build_task)
  return wd, state


def test_mlm_batches_mask_only_words(mlm_run, data_dir, prepared_dir):
  task = mlm.MaskedLMTask(_mlm_config(data_dir, prepared_dir))
  tok = task.tokenizer
  assert tok.words.vocab[tok.mask_id] == mlm.MASK_WORD
  batch = task.train_source().batch(3, slice(0, 16))
  tokens, real, w = batch["targets"], batch["mask"], batch["weights"]
  assert (tokens[:, 0] == tok.cls_id).all()
  last = real.sum(axis=1) - 1
  assert (tokens[np.arange(16), last] == tok.sep_id).all()
  assert not w[(tokens == tok.cls_id) | (tokens == tok.sep_id) | ~real].any()
  ev = task.eval_source()[0]
  np.testing.assert_array_equal(ev.batch(0, slice(0, 64))["inputs"],
                                ev.batch(0, slice(0, 64))["inputs"])  # fixed eval masks
  wd, _ = mlm_run
  evals = [json.loads(line) for line in open(wd / "metrics.jsonl")]
  evals = [m for m in evals if m["split"] == "eval"]
  assert evals and 0.0 <= evals[-1]["masked_accuracy"] <= 1.0 and evals[-1]["loss"] > 0
  # Every masked token of the whole dev split (the subset) is counted, padding rows excluded.
  want = sum(ev.batch(i, slice(0, 64))["weights"].sum() for i in range(ev.num_batches))
  assert evals[-1]["masked_tokens"] == want > 0
  # final_eval: the same whole-split numbers, and the unigram baseline from a word count.
  final = json.load(open(wd / "final_metrics.json"))
  assert final["dev_masked_accuracy"] == pytest.approx(evals[-1]["masked_accuracy"])
  counts = collections.Counter(w for s in task.train.sentences for w in s.lower().split())
  top = tok.words.vocab.index(max(counts, key=counts.get))
  hits = sum(float(np.sum((b["targets"] == top) * b["weights"]))
             for b in (ev.batch(i, slice(0, 64)) for i in range(ev.num_batches)))
  assert final["dev_unigram_accuracy"] == pytest.approx(hits / want)
  assert final["dev_unigram_loss"] > 0


def _finetune_config(data_dir, prepared_dir, from_workdir):
  c = _mlm_config(data_dir, prepared_dir)
  c.task = "classify"
  c.data.seq_len = 16
  c.model.pooling = "cls"
  c.init = ml_collections.ConfigDict({"from_workdir": str(from_workdir),
                                               "hf_checkpoint": ""})
  return c


def test_finetune_starts_from_the_pretrained_encoder(mlm_run, data_dir, prepared_dir):
  wd, state = mlm_run
  task = classify.ClassifyTask(_finetune_config(data_dir, prepared_dir, wd))
  saved = json.load(open(wd / "tokenizer.json"))
  assert task.tokenizer.words.vocab[4:] == saved["vocab"]  # the mlm run's tokenizer
  ids = task.data.eval.batch(0, slice(0, 4))["tokens"]
  assert (ids[:, 0] == task.tokenizer.cls_id).all()
  params = jax.jit(task.init_params)(jax.random.PRNGKey(7))
  want = jax.tree_util.tree_flatten_with_path(state.params["encoder"])[0]
  got = dict(jax.tree_util.tree_flatten_with_path(params["encoder"])[0])
  assert len(got) == len(want)
  for path, leaf in want:
    np.testing.assert_array_equal(np.asarray(got[path]), np.asarray(leaf))
  assert set(params) == {"encoder", "pooler", "head"}
  assert params["encoder"]["pos_embed"]["embedding"].shape[0] == 16  # data.max_len


def test_finetune_errors(mlm_run, data_dir, prepared_dir, tmp_path):
  wd, _ = mlm_run
  with pytest.raises(ConfigError, match="has no tokenizer.json"):
    classify.ClassifyTask(_finetune_config(data_dir, prepared_dir, tmp_path))
  (tmp_path / "tokenizer.json").write_text((wd / "tokenizer.json").read_text())
  with pytest.raises(ConfigError, match="has no checkpoint"):
    classify.ClassifyTask(_finetune_config(data_dir, prepared_dir, tmp_path))
  # A tokenizer that is not the one the checkpoint was trained with.
  other = tmp_path / "other"
  other.mkdir()
  (other / "checkpoints").symlink_to(wd / "checkpoints")
  d = json.load(open(wd / "tokenizer.json"))
  d["vocab"] = d["vocab"][:-3]
  (other / "tokenizer.json").write_text(json.dumps(d))
  with pytest.raises(ConfigError, match="do not belong together"):
    classify.ClassifyTask(_finetune_config(data_dir, prepared_dir, other))
  c = _finetune_config(data_dir, prepared_dir, wd)
  c.model.name, c.model.pooling = "lstm", "final"
  with pytest.raises(ConfigError, match="does not fit model.name=lstm: pretrained params have "
                     "no encoder parameter"):
    classify.ClassifyTask(c)
  c = _finetune_config(data_dir, prepared_dir, wd)
  c.model.d_ff = 64
  with pytest.raises(ConfigError, match=r"does not fit model.name=bert: .*has shape \(32,\), "
                                        r"the model wants \(64,\)"):
    classify.ClassifyTask(c)
  d["vocab"] = [w for w in json.load(open(wd / "tokenizer.json"))["vocab"] if w != "<mask>"]
  (other / "tokenizer.json").write_text(json.dumps(d))
  with pytest.raises(ConfigError, match="not an mlm run's tokenizer"):
    classify.ClassifyTask(_finetune_config(data_dir, prepared_dir, other))


def test_init_from_pretrained_continues_a_bert_checkpoint(data_dir, prepared_dir, tmp_path):
  """init.from_pretrained: a BertForMaskedLM of this tokenizer's vocabulary becomes the model
  (its fields in config.model) and its weights the initial params, with transformers' logits;
  a checkpoint of another vocabulary is a one-line error."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  vocab = build_task(_mlm_config(data_dir, prepared_dir)).tokenizer.vocab_size
  for name, v in (("fits", vocab), ("other", vocab + 3)):
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=v, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=40, max_position_embeddings=20)).eval()
    hf.save_pretrained(tmp_path / name)
  c = _mlm_config(data_dir, prepared_dir)
  c.init.from_pretrained = str(tmp_path / "fits")
  task = build_task(c)
  assert c.model.d_model == 24 and c.model.num_layers == 1
  batch = task.eval.batch(0, slice(0, 4))
  logits = task.model.apply({"params": task.initial_params()}, batch["inputs"], batch["mask"])
  with torch.no_grad():
    hf = transformers.BertForMaskedLM.from_pretrained(tmp_path / "fits").eval()
    ref = hf(input_ids=torch.tensor(np.asarray(batch["inputs"])),
             attention_mask=torch.tensor(np.asarray(batch["mask"]).astype(int))).logits.numpy()
  real = np.asarray(batch["mask"], bool)
  np.testing.assert_allclose(np.asarray(logits)[real], ref[real], rtol=1e-4, atol=1e-5)
  c = _mlm_config(data_dir, prepared_dir)
  c.init.from_pretrained = str(tmp_path / "other")
  with pytest.raises(ConfigError, match=f"has vocab_size={vocab + 3}, the task needs "
                                        f"vocab_size={vocab}"):
    build_task(c)
