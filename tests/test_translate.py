"""The "translate" task on real Multi30k: a tiny end-to-end run, BLEU against sacrebleu on the
written files and the raw reference file, beam size 1 == greedy through the task path, the
label-smoothed loss against optax, and one-line errors for bad input."""

import gzip
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import sacrebleu
from conftest import apply_overrides, read_jsonl

from seqgen_jax.errors import ConfigError
from seqgen_jax.tasks import build_task, translate
from seqgen_jax.train import loop
from seqgen_jax.train.defaults import default_config


def tiny_config(data_dir, model: str = "lstm", **overrides):
  """A tiny de->en run on the real data: 1-layer seq2seq, 1,000-piece vocabulary."""
  c = default_config()
  c.task = "translate"
  c.data.name = "multi30k"
  c.data.data_dir = str(data_dir)
  c.data.direction = "de-en"
  c.data.vocab_size = 1000
  c.data.src_len = 24
  c.data.tgt_len = 24
  c.model.name = model
  if model == "transformer":
    c.model.num_layers, c.model.num_heads, c.model.d_model, c.model.d_ff = 1, 2, 32, 64
    c.model.norm = "pre"
    c.model.share_embeddings = True
  else:
    c.model.d_model, c.model.hidden_size, c.model.attention_size = 32, 32, 32
    c.model.num_layers = 1
  c.optimizer.lr = 1e-2
  c.optimizer.warmup_steps = 5
  c.optimizer.weight_decay = 0.0
  c.train.num_steps = 40
  c.train.batch_size = 32
  c.train.label_smoothing = 0.1
  c.train.log_every = 10
  c.train.eval_every = 0
  c.train.checkpoint_every = 0
  c.eval.batch_size = 512
  c.eval.final_split = "test_2016"
  c.eval.beam_size = 4
  c.eval.length_penalty = 0.6
  c.eval.max_decode_len = 16
  c.eval.decode_batch_size = 504  # test_2016 (1,000 sentences): two batches, the last padded
  c.sample.num_sentences = 2
  return apply_overrides(c, **overrides)


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
  """A 40-step LSTM run through train_and_evaluate: (workdir, trained params, its task)."""
  wd = tmp_path_factory.mktemp("translate_run")
  config = tiny_config(data_dir)
  task = build_task(config)
  # The loop gets this task itself, so that the tests reuse it (its tokenizer and compiled
  # decoders) instead of training the tokenizer and compiling again.
  state = loop.train_and_evaluate(config, str(wd), lambda c: task)
  return wd, state.params, task


def _raw_lines(data_dir, name: str) -> list[str]:
  text = gzip.decompress((data_dir / "multi30k" / name).read_bytes()).decode("utf-8")
  return [ln.strip() for ln in text.split("\n")[:-1]]


def test_end_to_end_run_writes_bleu_and_translations(run):
  wd, _, _ = run
  final = json.loads((wd / "final_metrics.json").read_text())
  assert set(final) == {"step", "bleu_greedy", "bleu_beam4"} and final["step"] == 40
  rows = read_jsonl(wd / "metrics.jsonl")
  train = [r for r in rows if r["split"] == "train"]
  assert train[-1]["nll"] < train[0]["nll"] - 1.0  # the loss falls
  ev = [r for r in rows if r["split"] == "eval"][-1]  # the end-of-run eval, whole validation
  assert ev["perplexity"] == pytest.approx(np.exp(ev["loss"]), rel=1e-6)
  assert 0.0 < ev["accuracy"] < 1.0
  (text,) = [r["translations"] for r in rows if r["split"] == "text"]
  assert text.count("\nhyp: ") == 2 and text.startswith("src: Eine Gruppe von Männern")
  assert (wd / "tokenizer.model").is_file()
  for name in ("greedy", "beam4"):
    lines = (wd / f"translations_test_2016_{name}.txt").read_text("utf-8").split("\n")
    assert len(lines) == 1001 and lines[-1] == ""  # one line per sentence


def test_bleu_equals_sacrebleu_on_the_written_files(run, data_dir):
  wd, _, _ = run
  final = json.loads((wd / "final_metrics.json").read_text())
  refs = _raw_lines(data_dir, "test_2016_flickr.en.gz")  # independent of the loader
  assert len(refs) == 1000
  for name in ("greedy", "beam4"):
    hyps = (wd / f"translations_test_2016_{name}.txt").read_text("utf-8").split("\n")[:-1]
    want = sacrebleu.corpus_bleu(hyps, [refs]).score
    assert final[f"bleu_{name}"] == pytest.approx(want, abs=1e-9)
  assert final["bleu_greedy"] > 0.0  # trained for 40 steps: some n-grams match


def test_beam_size_1_equals_greedy_through_the_task_path(run):
  _, params, task = run
  batch = task.final_data().eval.batch(0, slice(0, 504))  # the shapes the run compiled for
  alpha, task.alpha = task.alpha, 0.0  # with a length penalty beam 1 may pick a longer one
  try:
    beam1 = np.asarray(task.decoder(1)(params, batch["src"], batch["src_mask"]))
  finally:
    task.alpha = alpha
  greedy = np.asarray(task.decoder(0)(params, batch["src"], batch["src_mask"]))
  eos = task.tokenizer.eos_id
  for g, b in zip(greedy, beam1):
    g_cut, b_cut = translate.cut_at_eos(g, eos), translate.cut_at_eos(b, eos)
    assert g_cut == b_cut
    if len(b_cut) < len(b):  # beam search pads after EOS
      assert b[len(b_cut)] == eos and not b[len(b_cut) + 1:].any()
  assert task.detokenize(greedy) == task.detokenize(beam1)
  assert any(eos in row for row in greedy)  # some hypotheses end before the length limit


def test_label_smoothed_loss_matches_optax_and_ignores_padding(run):
  _, params, task = run
  batch = jax.tree.map(jnp.asarray, task.data.train.batch(0, slice(0, 8)))
  logits_BTV = jax.jit(lambda p, b: task._logits(p, b, False))(params, batch)
  loss_fn = jax.jit(task.loss_fn)
  v = logits_BTV.shape[-1]
  eps = task.smoothing
  per_tok = optax.softmax_cross_entropy(
      logits_BTV, optax.smooth_labels(jax.nn.one_hot(batch["tgt_out"], v), eps))
  mask = np.asarray(batch["tgt_mask"], np.float64)
  want = float(np.sum(np.asarray(per_tok) * mask) / mask.sum())
  # loss_fn with train=True would apply dropout; the tiny model has none.
  loss, aux = loss_fn(params, batch, jax.random.PRNGKey(0))
  assert float(loss) == pytest.approx(want, rel=1e-5)
  assert float(aux["weight"]) == mask.sum()
  # Padding positions do not count: changing their targets leaves the loss unchanged.
  noisy = dict(batch, tgt_out=jnp.where(batch["tgt_mask"], batch["tgt_out"], 7))
  assert float(loss_fn(params, noisy, jax.random.PRNGKey(0))[0]) == pytest.approx(
      float(loss), rel=1e-6)


@pytest.mark.parametrize("override, message", [
    (dict(eval__final_split="test_2017"),
     r"^unknown final eval split 'test_2017'; choose one of: valid, test_2016$"),
    (dict(data__direction="de-fr"),
     r"^unknown direction 'de-fr'; choose one of: de-en, en-de$"),
    (dict(data__name="wmt14"), r"^unknown translation dataset 'wmt14'; choose one of: multi30k$"),
    (dict(model__name="gpt"), r"^unknown seq2seq model 'gpt'; choose one of: .*lstm.*transformer"),
])
def test_bad_config_is_one_line_and_writes_nothing(tmp_path, override, message):
  wd = tmp_path / "wd"
  with pytest.raises(ConfigError, match=message) as e:  # raised before any data is read
    loop.train_and_evaluate(tiny_config(tmp_path / "no_data", **override), str(wd), build_task)
  assert "\n" not in str(e.value)
  assert not wd.exists()
