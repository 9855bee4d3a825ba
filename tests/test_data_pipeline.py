"""Input pipelines and tokenizers: shuffling, epochs, host shards, exact-once evaluation,
resumption, batch layouts per family, ETT splits and scaling against plain NumPy."""

import collections
import gzip

import numpy as np
import pytest

from seqgen_jax.data import (
  builder,
  images,
  multi30k,
  sentiment,
  shakespeare,
  text,
  timeseries,
  tokenizers,
)
from seqgen_jax.data.pipeline import (
  EvalSampler,
  ExampleSource,
  ShuffledSampler,
  StepIterator,
  pad_sequences,
)
from seqgen_jax.errors import ConfigError

SUBSET = 300


@pytest.fixture(scope="module")
def options(data_dir, prepared_dir):
  return builder.DataOptions(data_dir=str(data_dir), prepared_dir=str(prepared_dir),
                             max_examples=SUBSET)


def _host_slices(batch, hosts):
  per = batch // hosts
  return [slice(h * per, (h + 1) * per) for h in range(hosts)]


# ---------------------------------------------------------------------- samplers


def test_shuffled_epochs_are_permutations_and_depend_only_on_the_seed():
  n, b = 37, 8
  s = ShuffledSampler(n, b, seed=3)
  stream = np.concatenate([s.sample(i, slice(0, b))[0] for i in range(15)])  # 120 positions
  for e in range(3):  # each epoch visits every example exactly once
    assert sorted(stream[e * n:(e + 1) * n].tolist()) == list(range(n))
  assert not np.array_equal(stream[:n], stream[n:2 * n])  # a fresh order per epoch
  assert not np.array_equal(stream[:n], np.arange(n))
  again = ShuffledSampler(n, b, seed=3)
  for i in (14, 0, 7):  # any index, any order of requests: same rows
    np.testing.assert_array_equal(again.sample(i, slice(0, b))[0], stream[i * b:(i + 1) * b])
  other = np.concatenate([ShuffledSampler(n, b, seed=4).sample(i, slice(0, b))[0]
                          for i in range(5)])
  assert not np.array_equal(other, stream[:40])
  plain = np.concatenate([ShuffledSampler(n, b, 3, shuffle=False).sample(i, slice(0, b))[0]
                          for i in range(5)])
  np.testing.assert_array_equal(plain, np.arange(40) % n)


@pytest.mark.parametrize("hosts", [1, 2, 4, 8])
def test_host_rows_are_disjoint_and_cover_the_global_batch(hosts):
  b = 16
  for sampler in (ShuffledSampler(50, b, seed=0), EvalSampler(50, b)):
    for index in (0, 3):
      full_ids, full_w = sampler.sample(index, slice(0, b))
      parts = [sampler.sample(index, rows) for rows in _host_slices(b, hosts)]
      np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), full_ids)
      np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), full_w)
  # Shuffled training: the hosts' examples of one epoch never overlap.
  sampler = ShuffledSampler(48, b, seed=1)
  seen = [np.concatenate([sampler.sample(i, rows)[0] for i in range(3)])
          for rows in _host_slices(b, hosts)]
  assert sum(len(s) for s in seen) == 48 and len(set(np.concatenate(seen).tolist())) == 48


@pytest.mark.parametrize("n, b", [(37, 8), (40, 8), (5, 8)])
def test_eval_covers_every_example_exactly_once(n, b):
  ev = EvalSampler(n, b)
  assert ev.num_batches == -(-n // b)
  counts = collections.Counter()
  for i in range(ev.num_batches):
    for rows in _host_slices(b, 2):
      ids, w = ev.sample(i, rows)
      counts.update(ids[w > 0].tolist())
      assert set(w.tolist()) <= {0.0, 1.0}
  assert counts == collections.Counter(range(n))
  _, w_last = ev.sample(ev.num_batches - 1, slice(0, b))
  assert w_last.sum() == n - (ev.num_batches - 1) * b


def test_pad_sequences_truncates_and_masks():
  seqs = [np.array([5, 6, 7]), np.array([], np.int32), np.array([1, 2, 3, 4, 5, 6])]
  ids, mask = pad_sequences(seqs, 4, pad_id=9)
  want = [[5, 6, 7, 9], [9, 9, 9, 9], [1, 2, 3, 4]]
  np.testing.assert_array_equal(ids, want)
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
  assert ids.dtype == np.int32 and mask.dtype == bool


# ---------------------------------------------------------------------- real data through sources


def test_mnist_batches_shard_resume_and_evaluate_exactly(data_dir, options):
  b = builder.prepare(images.Mnist, options)
  data = images.from_builder(b, batch_size=64, eval_batch_size=64, seed=5)
  with gzip.open(data_dir / "mnist" / "train-labels-idx1-ubyte.gz") as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)[:SUBSET]
  # Hosts: two halves of the global batch are its two halves.
  full = data.train.batch(7, slice(0, 64))
  halves = [data.train.batch(7, rows) for rows in _host_slices(64, 2)]
  for k in full:
    np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), full[k])
  # Resume across an epoch boundary (300 examples, 64 per batch): a fresh source and iterator
  # restored from the saved position give the batches the uninterrupted one gave.
  it = StepIterator(data.train)
  straight = [next(it) for _ in range(10)]
  fresh = images.from_builder(b, batch_size=64, eval_batch_size=64, seed=5)
  it2 = StepIterator(fresh.train)
  for _ in range(3):
    next(it2)
  state = it2.get_state()
  it3 = StepIterator(images.from_builder(b, batch_size=64, eval_batch_size=64, seed=5).train)
  it3.set_state(state)
  for want in straight[3:]:
    got = next(it3)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
  assert data.train.sampler.epoch(9) == 1  # really crossed into the second epoch
  # Exact evaluation: weighted sums over the padded eval stream equal sums over the split.
  test_labels = np.frombuffer(gzip.open(data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read(),
                              np.uint8, offset=8)[:SUBSET]
  total, count = 0.0, 0.0
  for i in range(data.eval_batches):
    batch = data.eval.batch(i, slice(0, 64))
    total += float(np.sum(batch["label"] * batch["weight"]))
    count += float(np.sum(batch["weight"]))
  assert (count, total) == (SUBSET, float(test_labels.sum()))
  assert labels.shape == (SUBSET,)


def test_char_lm_through_the_builder_equals_the_plain_file_path(data_dir, options):
  """Tiny Shakespeare via TFDS gives exactly the batches of the original file-based loader."""
  data = shakespeare.load(options, seq_len=32, batch_size=8, eval_batch_size=8, seed=0,
                          eval_seed=7)
  corpus = text.load_tiny_shakespeare(str(data_dir))
  tok = text.CharTokenizer.from_text(corpus)
  train_ids, val_ids = text.split_train_val(tok.encode(corpus))
  assert data.tokenizer.vocab == tok.vocab
  for got, ref in ((data.train, text.RandomWindows(train_ids, 32, 8, 0)),
                   (data.eval, text.RandomWindows(val_ids, 32, 8, 7))):
    for i in (0, 11):
      for k, v in ref.batch(i, slice(0, 8)).items():
        np.testing.assert_array_equal(got.batch(i, slice(0, 8))[k], v)


def test_text_classification_batches(options):
  data = sentiment.load("sst2", options, seq_len=12, batch_size=8, eval_batch_size=8, seed=0,
                        min_count=2)
  train = builder.SplitReader(builder.prepare(sentiment.Sst2, options), "train").all()
  counts = collections.Counter(w for e in train for w in e["sentence"].decode().lower().split())
  kept = sorted((w for w, c in counts.items() if c >= 2), key=lambda w: (-counts[w], w))
  assert data.tokenizer.vocab[4:] == kept and data.vocab_size == len(kept) + 4
  ids, _ = data.train.example_ids(2, slice(0, 8))
  batch = data.train.batch(2, slice(0, 8))
  for row, i in enumerate(ids):
    words = train[i]["sentence"].decode().lower().split()[:12]
    want = [w if counts[w] >= 2 else "<unk>" for w in words]
    got = [data.tokenizer.vocab[t] for t in batch["tokens"][row][batch["mask"][row]]]
    assert got == want and batch["label"][row] == train[i]["label"]
  assert batch["tokens"].dtype == np.int32 and batch["weight"].tolist() == [1.0] * 8
  assert len(data.eval_texts()) == SUBSET
  rt = sentiment.load("rt_polarity", options, seq_len=12, batch_size=8, eval_batch_size=8,
                      seed=0, fold=3)
  assert rt.train.num_examples + rt.eval.num_examples == SUBSET
  assert len(np.intersect1d(rt.train.keys, rt.eval.keys)) == 0
  with pytest.raises(ConfigError, match="fold 10 is out of range"):
    sentiment.load("rt_polarity", options, seq_len=12, batch_size=8, eval_batch_size=8, seed=0,
                   fold=10)


def test_translation_batches_and_references(options):
  data = multi30k.load(options, batch_size=8, eval_batch_size=16, seed=0, vocab_size=600,
                       src_len=128, tgt_len=128)
  tok = data.tokenizer
  ids, _ = data.eval.example_ids(0, slice(0, 16))
  batch = data.eval.batch(0, slice(0, 16))
  for row, i in enumerate(ids):
    src_n, tgt_n = batch["src_mask"][row].sum(), batch["tgt_mask"][row].sum()
    assert src_n < 128 and tgt_n < 128  # nothing cut
    assert batch["src"][row][src_n - 1] == tok.eos_id
    assert batch["tgt_in"][row][0] == tok.bos_id
    assert batch["tgt_out"][row][tgt_n - 1] == tok.eos_id
    np.testing.assert_array_equal(batch["tgt_in"][row][1:tgt_n], batch["tgt_out"][row][:tgt_n - 1])
    assert tok.decode(batch["tgt_out"][row][:tgt_n]) == " ".join(data.references[i].split())
    assert tok.decode(batch["src"][row][:src_n]) == " ".join(data.sources[i].split())
  assert len(data.references) == SUBSET
  last = data.eval_batches - 1
  refs = data.eval_references(last, slice(0, 16))
  assert refs[:SUBSET - 16 * last] == data.references[16 * last:] and refs[-1] is None


# ---------------------------------------------------------------------- tokenizers


def test_word_tokenizer_cutoff_round_trip_and_save(tmp_path):
  texts = ["the cat sat", "the dog sat", "a cat ran", "The end"]
  tok = tokenizers.WordTokenizer.build(texts, min_count=2, lowercase=True)
  assert tok.vocab == ["<pad>", "<unk>", "<bos>", "<eos>", "the", "cat", "sat"]
  np.testing.assert_array_equal(tok.encode("The cat flew"), [4, 5, 1])
  assert tok.decode(tok.encode("the cat sat")) == "the cat sat"
  assert tok.decode([4, 0, 0]) == "the"
  path = tokenizers.save_tokenizer(str(tmp_path), tok)
  back = tokenizers.load_tokenizer(str(tmp_path))
  assert path.endswith("tokenizer.json") and isinstance(back, tokenizers.WordTokenizer)
  assert back.vocab == tok.vocab and back.lowercase
  capped = tokenizers.WordTokenizer.build(texts, max_size=6)
  assert capped.vocab_size == 6 and capped.vocab[4:] == ["cat", "sat"]


def test_sentencepiece_is_deterministic_lossless_and_reloads(data_dir, tmp_path):
  with gzip.open(data_dir / "multi30k" / "train.de.gz", "rt") as f:
    lines = [next(f).strip() for _ in range(2000)]
  a = tokenizers.SentencePieceTokenizer.train(lines, vocab_size=400)
  b = tokenizers.SentencePieceTokenizer.train(lines, vocab_size=400)
  assert a.model_proto == b.model_proto  # same model on every machine / host
  assert a.vocab_size == 400
  # Lossless up to whitespace runs, which sentencepiece's normalisation collapses.
  assert all(a.decode(a.encode(s)) == " ".join(s.split()) for s in lines)
  tokenizers.save_tokenizer(str(tmp_path), a)
  back = tokenizers.load_tokenizer(str(tmp_path / "tokenizer.model"))
  np.testing.assert_array_equal(back.encode(lines[5]), a.encode(lines[5]))
  chars = text.CharTokenizer.from_text("abc")
  chars.save(str(tmp_path / "c.json"))
  assert tokenizers.load_tokenizer(str(tmp_path / "c.json")).vocab == "abc"


# ---------------------------------------------------------------------- forecasting


def _ett_numpy(data_dir):
  with gzip.open(data_dir / "ett" / "ETTh1.csv.gz", "rt") as f:
    return np.loadtxt(f, delimiter=",", skiprows=1, usecols=range(1, 8))


def test_ett_splits_and_normalisation_match_numpy(data_dir, options):
  data = timeseries.load("etth1", options, lookback=96, horizon=96, batch_size=32,
                         eval_batch_size=64, seed=0)
  values = _ett_numpy(data_dir)
  assert values.shape == (17_420, 7)
  train = values[:12 * 30 * 24]
  np.testing.assert_allclose(data.scaler.mean, train.mean(axis=0), rtol=1e-12)
  np.testing.assert_allclose(data.scaler.std, train.std(axis=0), rtol=1e-12)
  # Informer / Autoformer window counts for ETTh1 at look-back 96, horizon 96.
  assert (data.train.num_examples, data.eval.num_examples, data.test.num_examples) == (
      8449, 2785, 2785)
  assert data.borders == {"train": (0, 8640), "validation": (8544, 11520),
                          "test": (11424, 14400)}
  ids, _ = data.train.example_ids(4, slice(0, 32))
  batch = data.train.batch(4, slice(0, 32))
  scaled = (values - train.mean(axis=0)) / train.std(axis=0)
  for row, s in enumerate(ids):
    np.testing.assert_allclose(batch["x"][row], scaled[s:s + 96], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(batch["y"][row], scaled[s + 96:s + 192], rtol=1e-6, atol=1e-6)
  assert batch["x"].dtype == np.float32 and batch["x"].shape == (32, 96, 7)
  ev = [data.test.batch(i, slice(0, 64)) for i in range(data.test.num_batches)]
  assert sum(b["weight"].sum() for b in ev) == 2785
  np.testing.assert_allclose(ev[0]["x"][0], scaled[11424:11520], rtol=1e-6, atol=1e-6)
  single = timeseries.load("etth1", options, lookback=96, horizon=24, batch_size=4,
                           eval_batch_size=4, seed=0, target_only=True)
  assert single.columns == ["OT"] and single.train.batch(0, slice(0, 4))["y"].shape == (4, 24, 1)


def test_small_series_use_the_70_10_20_split(options, tmp_path):
  ex = timeseries.load("exchange_rate", options, lookback=96, horizon=96, batch_size=4,
                       eval_batch_size=4, seed=0)
  assert (ex.train.num_examples, ex.eval.num_examples, ex.test.num_examples) == (5120, 665, 1422)
  air = timeseries.load("airline_passengers", options, lookback=24, horizon=12, batch_size=4,
                        eval_batch_size=4, seed=0)
  # 144 rows: int(0.7 * 144) = 100 train, int(0.2 * 144) = 28 test, 16 validation.
  assert air.borders == {"train": (0, 100), "validation": (76, 116), "test": (92, 144)}
  assert str(np.datetime64(int(air.time[0]), "s")) == "1949-01-01T00:00:00"
  air.scaler.save(str(tmp_path / "scaler.json"))
  back = timeseries.Scaler.load(str(tmp_path / "scaler.json"))
  x = np.array([[112.0], [500.0]])
  np.testing.assert_allclose(back.inverse_transform(air.scaler.transform(x)), x)
  with pytest.raises(ConfigError, match="too short for look-back 96"):
    timeseries.load("airline_passengers", options, lookback=96, horizon=96, batch_size=4,
                    eval_batch_size=4, seed=0)


def test_example_source_maps_ids_through_keys():
  class Reader:
    def get(self, keys):
      return [{"v": int(k)} for k in keys]

  src = ExampleSource(Reader(), EvalSampler(3, 4),
                      lambda ex, w: {"v": np.array([e["v"] for e in ex]), "weight": w},
                      keys=np.array([10, 20, 30]))
  batch = src.batch(0, slice(0, 4))
  assert batch["v"].tolist() == [10, 20, 30, 10] and batch["weight"].tolist() == [1, 1, 1, 0]
