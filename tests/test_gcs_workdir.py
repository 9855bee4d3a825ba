"""A gs:// workdir: metrics, task assets and profiles reach it through etils.epath.

No cloud here: a stand-in for the GCS fsspec filesystem maps gs://BUCKET/... onto a local
directory, so the same epath calls that would talk to GCS (exists, mkdir, copy; no appends, which
GCS does not have) are exercised. Checkpoints to gs:// are orbax's (tensorstore's GCS driver) and
are not covered here.
"""

import json
import os
import sys

import pytest
from etils.epath import backend as epath_backend
from fsspec.implementations.local import LocalFileSystem

from seqgen_jax.train import loop, perf
from seqgen_jax.train.metrics import MetricWriter
from seqgen_jax.train.task import Task


class _LocalGCS(LocalFileSystem):
  """gs://bucket/x -> <root>/bucket/x."""

  root = ""
  protocol = ("gs", "gcs")

  @classmethod
  def _strip_protocol(cls, path):
    path = os.fspath(path)
    for prefix in ("gs://", "gcs://"):
      if path.startswith(prefix):
        return os.path.join(cls.root, path[len(prefix):])
    return super()._strip_protocol(path)


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  import fsspec

  monkeypatch.setattr(_LocalGCS, "root", str(tmp_path / "gcs"))
  for proto in ("gs", "gcs"):
    fsspec.register_implementation(proto, _LocalGCS, clobber=True)
  epath_backend.fsspec_backend._get_filesystem.cache_clear()
  yield tmp_path / "gcs" / "bucket"
  epath_backend.fsspec_backend._get_filesystem.cache_clear()
  for proto in ("gs", "gcs"):  # back to fsspec's own (gcsfs) entry
    sys.modules["fsspec.registry"]._registry.pop(proto, None)


def test_metrics_are_mirrored_and_a_resumed_run_continues_them(bucket):
  w = MetricWriter("gs://bucket/run", sync_every_s=3600)
  w.write_scalars(1, "train", {"loss": 2.0})
  assert not (bucket / "run" / "metrics.jsonl").exists()  # synced at most once a minute ...
  w.close()  # ... and on close
  w = MetricWriter("gs://bucket/run", sync_every_s=0)  # a resumed run
  w.write_scalars(2, "train", {"loss": 1.0})
  rows = [json.loads(line) for line in (bucket / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["loss"]) for r in rows] == [(1, 2.0), (2, 1.0)]
  w.close()
  assert len(list((bucket / "run" / "tensorboard").glob("events.out.tfevents.*"))) == 2


def test_task_assets_and_profile_reach_the_bucket(bucket):
  class _Assets(Task):
    init_params = loss_fn = eval_step = finalize_eval = train_source = eval_source = None

    def save_assets(self, workdir):
      with open(os.path.join(workdir, "tokenizer.json"), "w") as f:
        f.write('{"vocab": "abc"}')

  from etils import epath

  loop._save_assets(_Assets(None), epath.Path("gs://bucket/run"))
  assert (bucket / "run" / "tokenizer.json").read_text() == '{"vocab": "abc"}'
  trace = perf.StepTrace((1, 1), "gs://bucket/run/profile")
  trace.before_step(1)
  trace.after_step(1, None)
  assert list((bucket / "run" / "profile" / "plugins" / "profile").glob("*/*.xplane.pb"))
