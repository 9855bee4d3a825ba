"""The image_classify task, the ResNet classifier, and FID with a trained feature network.

References: augmentation against NumPy padding / slicing; the ResNet against the same network
written in PyTorch with the same weights; the feature network's accuracy against the task's own
whole-split evaluation; FID of a split with itself (0) and under growing noise.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import apply_overrides

from seqgen_jax.data.image_ops import CLASSIFIER_ASSET_FILE
from seqgen_jax.errors import ConfigError, DataError
from seqgen_jax.eval import fid
from seqgen_jax.nn.resnet import build_resnet
from seqgen_jax.tasks import build_task, image_classify
from seqgen_jax.train.defaults import default_config
from seqgen_jax.train.loop import train_and_evaluate
from tests.conftest import read_jsonl

SUBSET = 512  # first examples of each MNIST split


def tiny_config(data_dir, **overrides):
  c = default_config()
  c.task = "image_classify"
  c.data.name = "mnist"
  c.data.data_dir = str(data_dir)
  c.data.max_examples = SUBSET
  c.data.augment = "crop"
  c.data.crop_padding = 2
  c.model.name = "resnet"
  c.model.width = 8
  c.model.blocks_per_stage = 1
  c.model.groups = 2  # 4-16 channels a group: learns faster than one a group at this width
  c.optimizer.lr = 1e-2
  c.optimizer.warmup_steps = 3
  c.optimizer.weight_decay = 0.0
  c.train.num_steps = 100
  c.train.batch_size = 32
  c.train.log_every = 10
  c.train.eval_every = 50
  c.train.checkpoint_every = 50
  c.eval.batch_size = 64
  c.eval.num_batches = 2
  return apply_overrides(c, **overrides)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
  """One short ResNet training on the first 512 MNIST images; returns its workdir."""
  workdir = tmp_path_factory.mktemp("mnist_resnet")
  train_and_evaluate(tiny_config(data_dir), str(workdir), build_task)
  return workdir


@pytest.fixture(scope="module")
def net(run):
  return fid.FeatureNet.from_workdir(str(run), batch_size=128)


@pytest.fixture(scope="module")
def test_split(data_dir):
  return fid.dataset_images("mnist", str(data_dir), max_examples=SUBSET)


# ------------------------------------------------------------------------ augmentation


def test_crop_and_flip_matches_numpy():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
  dy, dx = np.array([0, 4, 2, 1, 3]), np.array([4, 0, 2, 3, 1])
  flip = np.array([True, False, True, False, False])
  got = np.asarray(image_classify.crop_and_flip(jnp.asarray(x), jnp.asarray(dy), jnp.asarray(dx),
                                                jnp.asarray(flip), padding=2))
  padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
  for i in range(5):
    want = padded[i, dy[i]:dy[i] + 6, dx[i]:dx[i] + 7]
    np.testing.assert_array_equal(got[i], want[:, ::-1] if flip[i] else want)
  assert got.dtype == np.uint8


def test_random_augment_draws_crops_and_flips_from_the_rng():
  rng = np.random.default_rng(1)
  x = rng.integers(1, 256, (64, 5, 5, 1), dtype=np.uint8)
  key = jax.random.PRNGKey(3)
  out = np.asarray(image_classify.random_augment(jnp.asarray(x), key, padding=1, flip=True))
  np.testing.assert_array_equal(out, image_classify.random_augment(jnp.asarray(x), key,
                                                                   padding=1, flip=True))
  other = image_classify.random_augment(jnp.asarray(x), jax.random.PRNGKey(4), padding=1,
                                        flip=True)
  assert not np.array_equal(out, np.asarray(other))
  # Every output is one of the 3 x 3 crops of the padded image, mirrored or not; over 64
  # images both flips and all three vertical offsets occur.
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  seen = set()
  for i in range(64):
    found = [(dy, dx, f) for dy in range(3) for dx in range(3) for f in (0, 1)
             if np.array_equal(out[i], (lambda c: c[:, ::-1] if f else c)(
                 padded[i, dy:dy + 5, dx:dx + 5]))]
    assert found, f"image {i} is not a crop / flip of its input"
    seen.update((dy, f) for dy, _, f in found)
  assert {d for d, _ in seen} == {0, 1, 2} and {f for _, f in seen} == {0, 1}


# ------------------------------------------------------------------------ ResNet vs PyTorch


def _torch_resnet_logits(params, x_NHWC, blocks_per_stage, num_stages, groups):
  """The same pre-activation GroupNorm ResNet written directly in PyTorch (NCHW)."""
  import torch
  import torch.nn.functional as F

  t = lambda a: torch.tensor(np.asarray(a, np.float64))

  def conv(h, kernel_HWIO, stride):
    w = t(kernel_HWIO).permute(3, 2, 0, 1)
    k, size = w.shape[-1], h.shape[-1]
    pad = max((-(-size // stride) - 1) * stride + k - size, 0)  # TensorFlow "SAME"
    h = F.pad(h, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    return F.conv2d(h, w, stride=stride)

  def norm(h, p):
    c = h.shape[1]
    g = max(d for d in range(1, min(groups, c) + 1) if c % d == 0)
    return F.group_norm(h, g, t(p["scale"]), t(p["bias"]), eps=1e-6)

  h = conv(t(x_NHWC).permute(0, 3, 1, 2), params["stem"]["kernel"], 1)
  for s in range(num_stages):
    for b in range(blocks_per_stage):
      p = params[f"stage{s}_block{b}"]
      stride = 2 if (s > 0 and b == 0) else 1
      a = F.relu(norm(h, p["norm1"]))
      shortcut = conv(a, p["proj"]["kernel"], stride) if "proj" in p else h
      r = conv(F.relu(norm(conv(a, p["conv1"]["kernel"], stride), p["norm2"])),
               p["conv2"]["kernel"], 1)
      h = shortcut + r
  feats = F.relu(norm(h, params["final_norm"])).mean(dim=(2, 3))
  return (feats @ t(params["head"]["kernel"]) + t(params["head"]["bias"])).numpy()


def test_resnet_matches_pytorch():
  shape = (28, 28, 3)  # three channels; 28 -> 14 -> 7 also checks "SAME" padding at odd sizes
  # One block per stage: stage 0 has an identity shortcut, stages 1 and 2 projections.
  cfg = ml_collections.ConfigDict(dict(width=8, blocks_per_stage=1, num_stages=3, groups=4))
  model = build_resnet(cfg, image_shape=shape, num_classes=10)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)))["params"]
  # Random non-trivial norm parameters, so the GroupNorm affine parts are checked too.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [a + 0.1 * jax.random.normal(k, a.shape)
                                     for a, k in zip(leaves, keys)])
  x = np.random.default_rng(2).uniform(-1, 1, (3, *shape)).astype(np.float32)
  got = np.asarray(model.apply({"params": params}, x))
  want = _torch_resnet_logits(params, x, 1, 3, 4)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  feats = model.apply({"params": params}, x, method="features")
  assert feats.shape == (3, model.feature_dim()) == (3, 32)


def test_bad_config_is_a_one_line_error(data_dir):
  with pytest.raises(ConfigError, match="unknown data.augment 'mixup'; choose one of: none, "):
    image_classify.ImageClassifyTask(tiny_config(data_dir, data__augment="mixup"))
  with pytest.raises(ConfigError, match="unknown image_classifier model 'lstm'; choose one of: "
                                        "resnet, vit"):
    image_classify.ImageClassifyTask(tiny_config(data_dir, model__name="lstm"))
  with pytest.raises(ConfigError, match="cannot be halved 4 times"):
    build_resnet(ml_collections.ConfigDict(dict(num_stages=5)), image_shape=(28, 28, 1),
                 num_classes=10)


# ------------------------------------------------------------------------ end to end


def test_training_run_learns_and_evaluates_the_whole_test_split(run):
  rows = read_jsonl(run / "metrics.jsonl")
  train = [r for r in rows if r.get("split") == "train" and "loss" in r]
  evals = [r for r in rows if r.get("split") == "eval"]
  assert len(train) >= 2 and train[-1]["loss"] < train[0]["loss"] - 0.2
  assert evals and {"loss", "accuracy"} <= set(evals[-1])
  final = json.loads((run / "final_metrics.json").read_text())
  assert final["test_examples"] == SUBSET  # every test example exactly once
  assert final["test_accuracy"] > 0.2  # 100 steps on 512 images; chance is 0.1
  info = json.loads((run / CLASSIFIER_ASSET_FILE).read_text())
  assert info["dataset"] == "mnist" and info["image_shape"] == [28, 28, 1]


def test_feature_net_agrees_with_the_task_evaluation(run, net, test_split):
  images, labels = test_split
  final = json.loads((run / "final_metrics.json").read_text())
  assert net.step == 100 and net.dataset == "mnist" and net.feature_dim == 32
  assert fid.classifier_accuracy(images, labels, net) == pytest.approx(final["test_accuracy"],
                                                                       abs=1e-9)
  # features are the penultimate activations: the head is one affine map of them.
  feats = net.features(images[:40])
  head = net.params["head"]
  np.testing.assert_allclose(net.logits(images[:40]),
                             feats @ np.asarray(head["kernel"]) + np.asarray(head["bias"]),
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(net.predict(images[:40]),
                                np.argmax(net.logits(images[:40]), axis=-1))
  with pytest.raises(DataError, match="images must be uint8"):
    net.features(images.astype(np.float32))
  with pytest.raises(DataError, match=r"images must have shape \[N, 28, 28, 1\]"):
    net.features(images[..., 0])
  with pytest.raises(DataError, match="is not an image_classify workdir: it has no"):
    fid.FeatureNet.from_workdir(str(run / "checkpoints"))


def test_fid_of_the_test_split_is_zero_grows_with_noise_and_is_cached(
    run, net, test_split, data_dir, monkeypatch):
  images, _ = test_split
  kw = dict(max_examples=SUBSET)
  cache = run / f"fid_ref_mnist_test_first{SUBSET}.npz"
  assert not cache.exists()
  mu, sigma = fid.reference_stats(net, "mnist", str(data_dir), **kw)
  assert cache.exists()
  # The split against its own statistics: 0 up to round-off (the scale is tr(sigma)).
  assert fid.fid_from_samples(net, images, "mnist", str(data_dir), **kw) < 1e-6 * np.trace(
      sigma)
  rng = np.random.default_rng(0)
  scores = [fid.fid_from_samples(
      net, np.clip(images + rng.normal(0, sd, images.shape), 0, 255).astype(np.uint8), "mnist",
      str(data_dir), **kw) for sd in (8, 32, 96)]
  assert 0 < scores[0] < scores[1] < scores[2]
  # The cache is reused (no data is read again) ...
  def no_reading(*a, **k):
    raise AssertionError("read the dataset again")
  monkeypatch.setattr(fid, "dataset_images", no_reading)
  mtime = os.path.getmtime(cache)
  mu2, sigma2 = fid.reference_stats(net, "mnist", str(data_dir), **kw)
  np.testing.assert_array_equal(mu, mu2)
  np.testing.assert_array_equal(sigma, sigma2)
  assert os.path.getmtime(cache) == mtime
  # ... but not when it was made with another checkpoint step.
  with np.load(cache) as z:
    stale = dict(z)
  stale["step"] = np.asarray(7)
  np.savez(cache, **stale)
  with pytest.raises(AssertionError, match="read the dataset again"):
    fid.reference_stats(net, "mnist", str(data_dir), **kw)


def test_real_data_floor_is_the_fid_of_training_images(net, data_dir, monkeypatch):
  """The floor is FID(first n training images, test reference), computed here from its parts
  (training images: none is in the reference set); too few images is a one-line error."""
  kw = dict(max_examples=SUBSET)
  train, _ = fid.dataset_images("mnist", str(data_dir), split="train", max_examples=SUBSET)
  ref = fid.reference_stats(net, "mnist", str(data_dir), **kw)
  want = fid.frechet_distance(*fid.statistics(net.features(train)), *ref)
  floor = fid.real_data_floor(net, "mnist", SUBSET, str(data_dir), **kw)
  assert floor == pytest.approx(want) and floor > 0
  test_images, _ = fid.dataset_images("mnist", str(data_dir), **kw)
  assert fid.fid_from_samples(net, test_images, "mnist", str(data_dir), **kw) < floor
  monkeypatch.setattr(fid, "dataset_images", lambda *a, **k: (train[:100], None))
  with pytest.raises(DataError, match="has 100 images, fewer than the 512 asked for"):
    fid.real_data_floor(net, "mnist", SUBSET, str(data_dir), **kw)


@pytest.mark.slow
def test_vit_trains_through_the_task(tmp_path, data_dir):
  c = tiny_config(data_dir, model__name="vit", data__augment="none")
  c.model = ml_collections.ConfigDict(dict(name="vit", patch_size=7, num_layers=1, num_heads=2,
                                           d_model=32, d_ff=64))
  train_and_evaluate(c, str(tmp_path), build_task)
  rows = read_jsonl(tmp_path / "metrics.jsonl")
  train = [r for r in rows if r.get("split") == "train" and "loss" in r]
  assert train[-1]["loss"] < train[0]["loss"] - 0.2
  assert json.loads((tmp_path / "final_metrics.json").read_text())["test_examples"] == SUBSET


@pytest.mark.slow
def test_resume_with_augmentation_equals_a_straight_run(tmp_path, data_dir):
  """Augmentation comes from the step RNG: restarting at step 15 gives the same final params."""
  c = tiny_config(data_dir, data__augment="crop_flip", train__num_steps=20,
                  train__checkpoint_every=10, train__eval_every=10, train__final_eval=False)
  straight = train_and_evaluate(c, str(tmp_path / "a"), build_task)
  shutil.copytree(tmp_path / "a", tmp_path / "b")
  shutil.rmtree(tmp_path / "b" / "checkpoints" / "20")
  resumed = train_and_evaluate(c, str(tmp_path / "b"), build_task)
  for x, y in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
