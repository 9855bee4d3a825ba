"""The "diffusion" and "autoencoder" tasks end to end on tiny shapes (MNIST subsets).

Shapes are tiny (MNIST area-downsampled to 7x7 / 14x14, one-level U-Nets of width 8) so that
compilation stays short; the slow test trains a real MNIST model.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import apply_overrides

from seqgen_jax.errors import ConfigError
from seqgen_jax.eval import fid
from seqgen_jax.tasks import build_task
from seqgen_jax.tasks import diffusion as dtask
from seqgen_jax.train.loop import train_and_evaluate
from tests.conftest import read_jsonl


def tiny_config(data_dir, **overrides):
  """A seconds-to-compile diffusion config on 7x7 MNIST (dotted keys as a__b)."""
  from experiments.configs.common import base_config

  c = base_config("diffusion")
  c.data.name = "mnist"
  c.data.data_dir = str(data_dir)
  c.data.max_examples = 64
  c.data.image_size = 7
  c.model.name = "unet"
  c.model.update(dict(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
                      norm_groups=4))
  c.diffusion.num_timesteps = 100
  c.train.num_steps = 4
  c.train.batch_size = 8
  c.train.ema_decay = 0.9
  c.train.log_every = 2
  c.train.eval_every = 4
  c.train.checkpoint_every = 4
  c.eval.batch_size = 16
  c.eval.num_batches = 1
  c.sample.per_class = 1
  c.sample.num_steps = 2
  c.eval.bpd_num_examples = 2
  c.eval.bpd_batch_size = 2
  c.eval.bpd_ode_steps = 2
  c.eval.bpd_method = "euler"
  c.eval.fid_num_samples = 20
  c.eval.fid_batch_size = 10
  c.eval.fid_samplers = ("ddim-2",)
  return apply_overrides(c, **overrides)


class _StubFeatureNet:
  """Stands in for a trained FID feature network (seqgen_jax.eval.fid.FeatureNet): it records
  the samples it is given and "predicts" class 3 for every image."""

  seen: list = []

  @classmethod
  def from_workdir(cls, path):
    assert path == "/stub/fidnet"
    return cls()

  def predict(self, images_uint8):
    self.seen.append(("predict", images_uint8.shape, images_uint8.dtype))
    return np.full(len(images_uint8), 3)


def _stub_fid(monkeypatch):
  """Replaces the feature network, FID and its real-data floor in seqgen_jax.eval.fid."""

  def fid_from_samples(net, samples, dataset, data_dir):
    net.seen.append(("fid", samples.shape, samples.dtype, dataset))
    return 42.0

  monkeypatch.setattr(fid, "FeatureNet", _StubFeatureNet)
  monkeypatch.setattr(fid, "fid_from_samples", fid_from_samples)
  monkeypatch.setattr(fid, "real_data_floor", lambda net, dataset, n, data_dir: 7.0 + n)


def test_end_to_end_label_conditional(tmp_path, data_dir, monkeypatch, capsys):
  """Trains through train_and_evaluate: metrics, a grid PNG, and final bits/dim + FID keys."""
  _stub_fid(monkeypatch)
  _StubFeatureNet.seen = []
  # FID needs samples at the dataset's 28x28 resolution.
  cfg = tiny_config(data_dir, data__image_size=0, eval__fid_classifier_workdir="/stub/fidnet")
  train_and_evaluate(cfg, str(tmp_path), build_task)
  rows = read_jsonl(tmp_path / "metrics.jsonl")
  train = [r for r in rows if r.get("split") == "train"]
  assert len(train) == 2 and all(np.isfinite(r["loss"]) for r in train)
  ev = [r for r in rows if r.get("split") == "eval_ema"][-1]
  assert {"loss", "mse", "mse_t0000_0024", "mse_t0075_0099"} <= set(ev)
  grid = tmp_path / "samples" / "ddim_guided_by_class_4.png"
  from PIL import Image
  img = np.asarray(Image.open(grid))
  # 10 classes x 1 sample of 28x28 with a 1-pixel border: 10 * 29 + 1 rows, 29 + 1 columns.
  assert img.shape[:2] == (291, 30)
  final = json.loads((tmp_path / "final_metrics.json").read_text())
  assert 0 < final["bpd"] < 40 and final["bpd_num_examples"] == 2
  assert final["fid_ddim2"] == 42.0 and final["fid_num_samples"] == 20
  assert final["fid_guidance"] == cfg.cond.guidance  # the default: the model's own weight
  assert final["fid_real_data_floor"] == 27.0  # the floor at the same sample count
  # Labels are arange(N) % 10, so a classifier that says "3" is right on 2 of 20.
  assert final["guided_acc_ddim2"] == pytest.approx(0.1)
  fid_calls = [s for s in _StubFeatureNet.seen if s[0] == "fid"]
  assert fid_calls == [("fid", (20, 28, 28, 1), np.uint8, "mnist")]

  # experiments/diffusion_eval.py on the finished run: overrides, raw params (--noema), json.
  from absl import flags
  from absl.testing import flagsaver

  from experiments import diffusion_eval
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  _StubFeatureNet.seen = []
  weights = []  # the CFG weight of every sampler built: eval.fid_guidance must reach it
  model_fn = dtask.DiffusionTask.model_fn
  monkeypatch.setattr(dtask.DiffusionTask, "model_fn",
                      lambda self, params, w: weights.append(w) or model_fn(self, params, w))
  def run_eval(tag: str, n: int, shard: str = "") -> dict:
    """experiments/diffusion_eval.py: n unguided samples, raw params; its eval_<tag>.json."""
    weights.clear()
    with flagsaver.flagsaver(workdir=str(tmp_path), tag=tag, grid=False, ema=False, shard=shard,
                             set=["eval.bpd_num_examples=0", f"eval.fid_num_samples={n}",
                                  "eval.fid_guidance=0.0"]):
      diffusion_eval.main(["diffusion_eval"])
    suffix = f"_shard{shard.replace('/', 'of')}" if shard else ""
    return json.loads((tmp_path / f"eval_{tag}{suffix}.json").read_text())

  again = run_eval("again", 10)
  assert again["step"] == 4 and again["ema"] is False and "bpd" not in again
  assert again["fid_ddim2"] == 42.0 and again["fid_real_data_floor"] == 17.0
  assert again["fid_guidance"] == 0.0 and weights == [0.0]
  assert [s[1] for s in _StubFeatureNet.seen if s[0] == "fid"] == [(10, 28, 28, 1)]

  # --resume (the default) kept one .npy per batch of 10 (fid_batch_size) samples; a rerun with
  # one batch missing (a run stopped midway) samples that batch alone, and samples it exactly as
  # the first run did (each batch's noise is keyed by its index).
  samples_dir = tmp_path / "fid_samples"
  kept = sorted(samples_dir.glob("ddim2_w0_*.npy"))
  assert len(kept) == 1 and np.load(kept[0]).shape == (10, 28, 28, 1)
  assert again["samples_resumed_ddim2"] == 0.0
  first = np.load(kept[0])
  run_eval("resumed", 20)  # 20 samples: another sample set, two new batches
  twenty = sorted(set(samples_dir.glob("ddim2_w0_*.npy")) - set(kept))
  assert len(twenty) == 2 and weights == [0.0]
  lost = np.load(twenty[1])
  twenty[1].unlink()
  assert run_eval("resumed", 20)["samples_resumed_ddim2"] == 10.0 and weights == [0.0]
  np.testing.assert_array_equal(np.load(twenty[1]), lost)
  assert not [p.name for p in samples_dir.iterdir() if ".part" in p.name]  # no temporary left
  _StubFeatureNet.seen = []
  # Everything on disk: no sampler is even built, and FID gets the first run's 10 samples.
  assert run_eval("again", 10)["samples_resumed_ddim2"] == 10.0 and weights == []
  np.testing.assert_array_equal(np.load(kept[0]), first)
  assert [s[1] for s in _StubFeatureNet.seen if s[0] == "fid"] == [(10, 28, 28, 1)]

  # --shard=i/k: two processes make every other batch of 40 samples (4 batches) and score
  # nothing; the unsharded run then only gathers.
  for i in range(2):
    part = run_eval("sharded", 40, shard=f"{i}/2")
    assert part["shard_samples_ddim2"] == 20.0 and "fid_ddim2" not in part and weights == [0.0]
  assert not (tmp_path / "eval_sharded.json").exists()
  whole = run_eval("sharded", 40)
  assert whole["samples_resumed_ddim2"] == 40.0 and weights == [] and whole["fid_ddim2"] == 42.0
  capsys.readouterr()
  with flagsaver.flagsaver(workdir=str(tmp_path), shard="2/2"), pytest.raises(SystemExit):
    diffusion_eval.main(["diffusion_eval"])
  assert "FID sample shard '2/2': expected 'i/k' with 0 <= i < k" in capsys.readouterr().err
  with flagsaver.flagsaver(workdir=str(tmp_path), shard="0/2", resume=False), pytest.raises(
      SystemExit):
    diffusion_eval.main(["diffusion_eval"])  # a shard with nowhere to write its batches
  assert "needs eval.fid_sample_dir" in capsys.readouterr().err


@pytest.mark.slow  # minutes of XLA compilation on 2 CPU cores; run with -m slow
def test_text_to_image_path(data_dir):
  """Captions reach the model through the text encoder; prompts change the samples."""
  task = build_task(tiny_config(data_dir, cond__kind="text", cond__guidance=2.0))
  batch = task.train_source().batch(0, slice(0, 8))
  assert batch["text_tokens"].shape[0] == 8 and batch["text_tokens"][:, 0].tolist() == [1] * 8
  params = task.init_params(jax.random.PRNGKey(0))
  assert "text_encoder" in params
  # Zero-initialised output convs make every prediction 0; give them weights.
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                        params)
  loss, aux = jax.jit(task.loss_fn)(params, jax.tree.map(jnp.asarray, batch),
                                    jax.random.PRNGKey(2))
  assert np.isfinite(float(loss)) and aux["weight"] == 8
  rng = jax.random.PRNGKey(3)
  # 10 samples: the same compiled sampler as the sample hook's 10-row grid.
  prompts = ["a handwritten seven"] * 5 + ["the digit two"] * 5
  imgs = task.generate(params, rng, task.prompt_cond(prompts), 10, num_steps=2)
  assert imgs.shape == (10, 7, 7, 1)
  same_noise = task.generate(params, rng, task.prompt_cond(["a handwritten seven"] * 10), 10,
                             num_steps=2)
  np.testing.assert_allclose(imgs[:5], same_noise[:5], atol=1e-6)
  assert float(jnp.max(jnp.abs(imgs[5:] - same_noise[5:]))) > 1e-4  # the prompt matters
  out = task.sample(params, rng)
  assert out["text_grid"].shape == (81, 9, 1)
  assert "row 7: a handwritten seven" in out["text_prompts"]


def _autoencoder_workdir(path, data_dir, *, train: bool) -> str:
  """A finished "autoencoder" run: trained for 2 steps, or freshly initialised and saved the way
  the loop saves (config.json + an orbax checkpoint of the TrainState)."""
  from experiments.configs.mnist_autoencoder import get_config as ae_config
  from seqgen_jax.train.checkpoint import Checkpointer
  from seqgen_jax.train.state import create_train_state

  cfg = ae_config("runlocal")
  cfg.data.data_dir = str(data_dir)
  cfg.data.max_examples = 64
  cfg.model.update(dict(ch=8, ch_mult=(1, 2), norm_groups=4, z_channels=2))
  cfg.train.update(dict(num_steps=2, batch_size=8, eval_every=2, checkpoint_every=2))
  cfg.eval.batch_size = 16
  cfg.eval.num_batches = 1
  if train:
    train_and_evaluate(cfg, str(path), build_task)
    return str(path)
  import optax

  task = build_task(cfg)
  state = create_train_state(task.init_params, optax.sgd(0.1), jax.random.PRNGKey(0),
                             use_ema=True)
  path.mkdir(parents=True)
  (path / "config.json").write_text(cfg.to_json_best_effort())
  ckpt = Checkpointer(str(path / "checkpoints"), save_every=1, async_save=False)
  ckpt.save(0, state, {"next_index": 0}, json.loads(cfg.to_json_best_effort()), force=True)
  ckpt.close()
  return str(path)


@pytest.mark.slow  # minutes of XLA compilation on 2 CPU cores; run with -m slow
def test_latent_path_encodes_and_decodes_through_the_autoencoder(tmp_path, data_dir):
  """An autoencoder run feeds latent diffusion: latent shape, scale, decode(encode), samples."""
  ae_dir = _autoencoder_workdir(tmp_path / "ae", data_dir, train=False)
  cfg = tiny_config(data_dir, data__image_size=0, latent__autoencoder_workdir=ae_dir,
                    model__name="dit", model__patch_size=2, model__hidden_size=16,
                    model__depth=1, model__num_heads=2)
  task = build_task(cfg)
  assert task.model_shape == (14, 14, 2)
  x = task._pixels(jnp.asarray(task.data.eval.batch(0, slice(0, 4))["image"]))
  z = task._encode(x, None)
  mean, _ = task.ae_model.apply({"params": task.ae_params}, x, method="encode")
  # The scale makes the training latents unit-variance (LDM's scale_factor).
  train_x = task._pixels(jnp.asarray(task.data.train.batch(0, slice(0, 8))["image"]))
  train_z = task.ae_model.apply({"params": task.ae_params}, train_x, method="encode")[0]
  assert 0.5 < float(jnp.std(train_z * task.latent_scale)) < 2.0
  np.testing.assert_allclose(z, mean * task.latent_scale, rtol=1e-5, atol=1e-6)
  recon = task.ae_model.apply({"params": task.ae_params}, x)[0]
  np.testing.assert_allclose(task.decode(z), recon, rtol=1e-4, atol=1e-5)
  params = task.init_params(jax.random.PRNGKey(0))
  imgs = task.generate(params, jax.random.PRNGKey(1), task.label_cond(np.arange(3)), 3,
                       num_steps=2)
  assert imgs.shape == (3, 28, 28, 1) and bool(jnp.all(jnp.abs(imgs) <= 1))


@pytest.mark.slow
def test_autoencoder_task_trains_and_feeds_latent_diffusion(tmp_path, data_dir):
  ae_dir = _autoencoder_workdir(tmp_path / "ae", data_dir, train=True)
  assert (tmp_path / "ae" / "samples" / "reconstructions_2.png").exists()
  ev = [r for r in read_jsonl(tmp_path / "ae" / "metrics.jsonl") if r.get("split") == "eval"]
  assert ev and {"mse", "psnr", "l1", "kl"} <= set(ev[-1])
  cfg = tiny_config(data_dir, data__image_size=0, latent__autoencoder_workdir=ae_dir,
                    model__name="dit", model__patch_size=2, model__hidden_size=16,
                    model__depth=1, model__num_heads=2, eval__bpd_num_examples=0)
  train_and_evaluate(cfg, str(tmp_path / "ldm"), build_task)
  assert (tmp_path / "ldm" / "samples" / "ddim_guided_by_class_4.png").exists()


@pytest.fixture(scope="module")
def sr_task(data_dir):
  cfg = tiny_config(data_dir, data__image_size=14, sr__low_res_size=7, sr__aug_max_t=20,
                    sr__sample_aug_t=5)
  return build_task(cfg)


def test_super_resolution_uses_the_low_res_image(sr_task):
  params = sr_task.init_params(jax.random.PRNGKey(0))
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                        params)
  x_BHWC = jax.random.normal(jax.random.PRNGKey(2), (2, 14, 14, 1))
  t_B = jnp.array([10, 50])
  lr_a = jax.random.normal(jax.random.PRNGKey(3), (2, 7, 7, 1))
  lr_b = lr_a.at[:, 3, 3].add(1.0)
  out = lambda lr, lt: sr_task._apply(params, x_BHWC, t_B, {"low_res": lr, "low_res_t": lt})
  a, b = out(lr_a, t_B), out(lr_b, t_B)
  assert float(jnp.max(jnp.abs(a - b))) > 1e-3  # the low-res image changes the prediction
  np.testing.assert_array_equal(a, out(lr_a, t_B))
  assert float(jnp.max(jnp.abs(a - out(lr_a, t_B + 7)))) > 1e-5  # so does its noise level
  # Training conditions on the area-downsampled image: equal to 2x2 block means.
  cond = sr_task._cond({"label": jnp.zeros(2, jnp.int32)}, x_BHWC, None,
                       aug_t_B=jnp.zeros(2, jnp.int32))
  blocks = np.asarray(x_BHWC).reshape(2, 7, 2, 7, 2, 1).mean(axis=(2, 4))
  alpha, sigma = (float(v) for v in sr_task.schedule.alpha_sigma(jnp.int32(0)))
  assert np.max(np.abs(np.asarray(cond["low_res"]) - alpha * blocks)) < 6 * sigma


def test_cascade_sampler_shapes(sr_task, data_dir):
  base = build_task(tiny_config(data_dir))
  base_params = base.init_params(jax.random.PRNGKey(0))
  sr_params = sr_task.init_params(jax.random.PRNGKey(1))
  labels = np.array([1, 2, 3])
  imgs = dtask.cascade_sample(base, base_params, sr_task, sr_params, jax.random.PRNGKey(2),
                              sr_task.label_cond(labels), base.label_cond(labels), 3,
                              num_steps=2)
  assert imgs.shape == (3, 14, 14, 1) and bool(jnp.all(jnp.isfinite(imgs)))
  with pytest.raises(ConfigError, match="needs low_res"):
    sr_task.generate(sr_params, jax.random.PRNGKey(0), {}, 2)


def test_bad_config_is_one_line_error(data_dir):
  with pytest.raises(ConfigError, match="choose one of: none, label, text"):
    build_task(tiny_config(data_dir, cond__kind="labels"))
  with pytest.raises(ConfigError, match="super-resolution needs model 'unet'"):
    build_task(tiny_config(data_dir, sr__low_res_size=7, data__image_size=14,
                                       model__name="dit", model__size="DiT-S/2"))


def test_init_from_pretrained_imports_a_diffusers_unet(tmp_path, data_dir):
  """init.from_pretrained: a saved diffusers UNet2DModel becomes the denoiser (its fields in
  config.model, its weights as the task's initial params, diffusers' outputs on the task's 7x7
  images); conditioning the checkpoint lacks is a one-line error."""
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  torch.manual_seed(0)
  peer = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1,
                               block_out_channels=(8,), down_block_types=("DownBlock2D",),
                               up_block_types=("UpBlock2D",), layers_per_block=1,
                               norm_num_groups=4).eval()
  peer.save_pretrained(tmp_path / "unet")
  config = tiny_config(data_dir, cond__kind="none", init__from_pretrained=str(tmp_path / "unet"))
  task = build_task(config)
  assert config.model.name == "unet" and config.model.ch == 8 and config.model.norm_eps == 1e-5
  params = task.initial_params()
  x = np.random.default_rng(0).normal(size=(2, 7, 7, 1)).astype(np.float32)
  t = np.array([3, 90])
  with torch.no_grad():
    want = peer(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(t)).sample
  got = task.model.apply({"params": params}, x, t)
  np.testing.assert_allclose(np.asarray(got), want.numpy().transpose(0, 2, 3, 1), atol=1e-5)
  with pytest.raises(ConfigError, match="has num_classes=0, the task needs num_classes=10"):
    build_task(tiny_config(data_dir, init__from_pretrained=str(tmp_path / "unet")))
  with pytest.raises(ConfigError, match="no text or low-res conditioning"):
    build_task(tiny_config(data_dir, cond__kind="text",
                           init__from_pretrained=str(tmp_path / "unet")))


@pytest.mark.slow
def test_training_lowers_the_test_denoising_loss(tmp_path, data_dir):
  cfg = tiny_config(data_dir, data__max_examples=512, train__num_steps=200,
                    train__eval_every=20, train__checkpoint_every=200, train__batch_size=32,
                    optimizer__lr=3e-3, optimizer__warmup_steps=10, eval__bpd_num_examples=0)
  train_and_evaluate(cfg, str(tmp_path), build_task)
  ev = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r.get("split") == "eval"]
  assert ev[-1]["loss"] < 0.8 * ev[0]["loss"]
