"""The classify task: whole-split dev accuracy against a per-sentence Python loop (padding rows
weighted out), the majority baseline against a count of the training labels, an end-to-end run,
every registered classifier, and a local Hugging Face BERT checkpoint matching PyTorch."""

import collections
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import tiny_lm_config

from seqgen_jax.data import builder, sentiment
from seqgen_jax.errors import ConfigError
from seqgen_jax.registry import MODELS
from seqgen_jax.tasks import build_task
from seqgen_jax.tasks.classify import ClassifyTask
from seqgen_jax.train.loop import train_and_evaluate

SUBSET = 300  # examples per split (the first 300 of each)


def _config(data_dir, prepared_dir, model="lstm", **model_fields):
  c = tiny_lm_config(task="classify", data__name="sst2", train__num_steps=30,
                     train__batch_size=32, train__log_every=5, train__eval_every=15,
                     train__checkpoint_every=0)
  c.data.data_dir, c.data.prepared_dir = str(data_dir), str(prepared_dir)
  c.data.max_examples = SUBSET
  c.data.seq_len, c.data.train_seq_len, c.data.min_count = 24, 12, 1
  c.model = ml_collections.ConfigDict(dict(
      name=model, d_model=16, hidden_size=16, num_layers=1, num_heads=2, d_ff=32, dropout=0.0,
      **model_fields))
  c.init = ml_collections.ConfigDict({"from_workdir": "", "hf_checkpoint": ""})
  c.eval.batch_size = 64  # 300 = 4 x 64 + 44: the last batch has 20 padding rows
  c.optimizer.lr = 1e-2
  return c


def _reference_metrics(task, params, split):
  """Accuracy and loss by a Python loop over the split's sentences, one at a time."""
  b = builder.prepare(sentiment.Sst2, builder.DataOptions.from_config(task.config.data))
  apply = jax.jit(lambda tokens, mask: task.model.apply({"params": params}, tokens, mask))
  correct, nll, rows = 0, 0.0, builder.SplitReader(b, split).all()
  for e in rows:
    ids = task.tokenizer.encode(e["sentence"].decode("utf-8"))[:task.seq_len]
    tokens = np.zeros((1, task.seq_len), np.int32)
    tokens[0, :len(ids)] = ids
    logits = np.asarray(apply(tokens, tokens != 0), np.float64)[0]
    logp = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
    correct += int(np.argmax(logits) == e["label"])
    nll -= logp[e["label"]]
  return correct / len(rows), nll / len(rows), len(rows)


@pytest.fixture(scope="module")
def trained(data_dir, prepared_dir, tmp_path_factory):
  wd = tmp_path_factory.mktemp("classify")
  state = train_and_evaluate(_config(data_dir, prepared_dir), str(wd), build_task)
  return wd, state


def test_end_to_end_and_whole_split_metrics_match_a_loop(trained, data_dir, prepared_dir):
  wd, state = trained
  logged = [json.loads(line) for line in open(wd / "metrics.jsonl")]
  losses = [m["loss"] for m in logged if m["split"] == "train"]
  assert losses[-1] < losses[0]
  final = json.load(open(wd / "final_metrics.json"))
  task = ClassifyTask(_config(data_dir, prepared_dir))
  for split, prefix in (("validation", "dev"), ("test", "test")):
    acc, loss, n = _reference_metrics(task, state.params, split)
    assert final[f"{prefix}_examples"] == n == SUBSET
    assert final[f"{prefix}_accuracy"] == pytest.approx(acc, abs=1e-9)
    assert final[f"{prefix}_loss"] == pytest.approx(loss, rel=1e-5)
  evals = [m for m in logged if m["split"] == "eval"]
  assert evals[-1]["accuracy"] == pytest.approx(final["dev_accuracy"])
  # Majority class of the training labels, and its accuracy on the dev split.
  b = builder.prepare(sentiment.Sst2, builder.DataOptions.from_config(task.config.data))
  train = collections.Counter(int(e["label"]) for e in builder.SplitReader(b, "train").all())
  majority = max(train, key=lambda c: (train[c], -c))
  dev = [int(e["label"]) for e in builder.SplitReader(b, "validation").all()]
  assert final["majority_class"] == majority
  assert final["dev_majority_accuracy"] == pytest.approx(np.mean(np.asarray(dev) == majority))
  assert (wd / "tokenizer.json").is_file()


# The LSTM trains end to end above and BERT runs in the HF test (and test_task_mlm.py); by
# default one more family here, every other classifier under -m slow (compilation dominates).
FAST = ("transformer",)


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow)
                                  for n in MODELS.names(kind="classifier")])
def test_every_classifier_gives_a_finite_loss_and_gradient(name, data_dir, prepared_dir):
  task = ClassifyTask(_config(data_dir, prepared_dir, name))
  batch = task.train_source().batch(0, slice(0, 8))
  assert batch["tokens"].shape == (8, 12)  # data.train_seq_len
  if name == "bert":  # [CLS] pooling: every input starts with the classification token
    assert (batch["tokens"][:, 0] == task.tokenizer.cls_id).all()
  params = task.init_params(jax.random.PRNGKey(0))
  loss, grads = jax.jit(jax.value_and_grad(
      lambda p: task.loss_fn(p, batch, jax.random.PRNGKey(1))[0]))(params)
  assert np.isfinite(float(loss)) and float(loss) > 0
  norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
  assert all(np.isfinite(norms)) and max(norms) > 0


def test_unknown_model_and_double_init_are_one_line_errors(data_dir, prepared_dir):
  with pytest.raises(ConfigError, match="unknown classifier model 'gpt'; choose one of: bert"):
    ClassifyTask(_config(data_dir, prepared_dir, "gpt"))
  c = _config(data_dir, prepared_dir, "bert")
  c.init.from_workdir, c.init.hf_checkpoint = "/a", "/b"
  with pytest.raises(ConfigError, match="at most one of"):
    ClassifyTask(c)


def test_hf_checkpoint_logits_match_pytorch(data_dir, prepared_dir, tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "film", "is", "good",
           "bad", "movie", "and", "it", ",", ".", "'s", "not", "of", "to"]
  (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
  torch.manual_seed(0)
  cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=32,
                                max_position_embeddings=32, num_labels=2)
  hf = transformers.BertForSequenceClassification(cfg).eval()
  with torch.no_grad():  # random LayerNorm / bias values so that a misplaced tensor shows
    for p in hf.parameters():
      p.add_(0.1 * torch.randn(p.shape))
  hf.save_pretrained(tmp_path)
  transformers.BertTokenizerFast(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
  c = _config(data_dir, prepared_dir, "bert")
  c.init.hf_checkpoint = str(tmp_path)
  task = ClassifyTask(c)
  batch = task.eval_source()[0].batch(0, slice(0, 8))
  tok = transformers.BertTokenizerFast.from_pretrained(tmp_path)
  sentences = task.data.eval_texts()[:8]
  enc = tok(sentences, padding="max_length", truncation=True, max_length=24,
            return_tensors="pt")
  np.testing.assert_array_equal(batch["tokens"], enc["input_ids"].numpy())
  params = jax.jit(task.init_params)(jax.random.PRNGKey(0))
  ours = np.asarray(task.model.apply({"params": params}, batch["tokens"], batch["mask"]))
  with torch.no_grad():
    ref = hf(**enc).logits.numpy()
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
