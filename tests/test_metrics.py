"""TensorBoard event files (read back with TensorBoard's own reader), PNG, JSONL, progress."""

import io
import json

import numpy as np
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from seqgen_jax.train import metrics


def test_crc32c_check_value():
  assert metrics.crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value


def test_png_decodes_to_the_same_pixels():
  rng = np.random.default_rng(0)
  for shape in [(5, 7), (5, 7, 1), (4, 3, 3), (2, 9, 4)]:
    img = rng.integers(0, 256, size=shape, dtype=np.uint8)
    back = np.asarray(Image.open(io.BytesIO(metrics.encode_png(img))))
    np.testing.assert_array_equal(back, img.reshape(back.shape))


def test_tensorboard_reads_scalars_images_and_text(tmp_path):
  w = metrics.MetricWriter(str(tmp_path))
  w.write_scalars(1, "train", {"loss": 2.5, "lr": 1e-3})
  w.write_scalars(2, "train", {"loss": 1.25})
  w.write_text(2, "sample", "To be, or not to be")
  img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
  png_path = w.write_image(3, "grid", img)
  w.close()
  np.testing.assert_array_equal(np.asarray(Image.open(png_path)), img)
  assert png_path.endswith("samples/grid_3.png")
  acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"),
                                           size_guidance={"tensors": 0, "images": 0})
  acc.Reload()
  losses = [(e.step, e.value) for e in acc.Scalars("train/loss")]
  assert losses == [(1, 2.5), (2, 1.25)]
  assert abs(acc.Scalars("train/lr")[0].value - 1e-3) < 1e-9
  (text_event,) = acc.Tensors("sample")
  assert text_event.tensor_proto.string_val[0].decode() == "To be, or not to be"
  (image_event,) = acc.Images("grid")
  assert (image_event.height, image_event.width) == (4, 6)
  decoded = np.asarray(Image.open(io.BytesIO(image_event.encoded_image_string)))
  np.testing.assert_array_equal(decoded, img)
  lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert lines[0] == {"step": 1, "split": "train", "loss": 2.5, "lr": 1e-3}


def test_progress_line_has_step_loss_rate_eta():
  p = metrics.Progress(total_steps=100, start_step=0)
  line, rate = p.line(10, {"loss": 1.5})
  assert line.startswith("step 10/100 | loss 1.5 | ") and "steps/s" in line and "ETA" in line
  assert rate > 0
