"""miajax/paths.py against a Cloud Storage emulator on loopback, in this process: each
operation a run uses does on a bucket what it does on disk."""

import json

import numpy as np
import pytest

from gcs_emulator import emulator  # pylint: disable=unused-import  (the fixture)
from miajax import logs
from miajax import paths
from miajax.errors import UserError


@pytest.fixture
def bucket(emulator, monkeypatch):
  import fsspec  # pylint: disable=g-import-not-at-top
  import gcsfs  # pylint: disable=g-import-not-at-top
  for key, value in emulator.env.items():
    monkeypatch.setenv(key, value)
  # fsspec read its FSSPEC_* variables when it was imported, before these.
  monkeypatch.setitem(fsspec.config.conf, "gs",
                      fsspec.config.conf.get("gs", {}) | {"token": "anon"})
  gcsfs.GCSFileSystem.clear_instance_cache()   # one made for another endpoint is not reused
  yield emulator.bucket("paths")
  gcsfs.GCSFileSystem.clear_instance_cache()


def test_each_file_operation_of_a_run_reads_back_the_same_from_a_bucket_and_from_disk(
    bucket, tmp_path):
  for root in (paths.of(f"{bucket}/w"), paths.of(tmp_path / "w")):
    paths.mkdir(root / "t")
    paths.write_text(root / "config.json", json.dumps({"a": 1}))
    paths.write_text(root / "config.json", json.dumps({"a": 2}))     # replaced whole
    paths.append_text(root / "t" / "m.jsonl", "1\n")
    paths.append_text(root / "t" / "m.jsonl", "2\n")
    paths.savez(root / "t" / "s.npz", x=np.arange(5), y=np.eye(2))
    with paths.load_npz(root / "t" / "s.npz") as f:
      np.testing.assert_array_equal(f["y"], np.eye(2))
    assert json.loads((root / "config.json").read_text()) == {"a": 2}
    assert (root / "t" / "m.jsonl").read_text() == "1\n2\n"
    assert sorted(p.name for p in root.iterdir()) == ["config.json", "t"]
    assert not list(root.glob("*.tmp")) and not list((root / "t").glob("*.tmp"))
    paths.move(root / "t", root / "aside" / "t")
    assert not (root / "t").exists() and (root / "aside" / "t" / "s.npz").is_file()
    assert paths.mtime_ns(root / "config.json") > 0
  assert str(paths.absolute(f"{bucket}/w")) == f"{bucket}/w"     # not folded to gs:/...


def test_tensorboard_events_on_a_bucket_read_back_as_on_disk(bucket, tmp_path):
  got = []
  for root in (f"{bucket}/w", tmp_path / "w"):
    trial_logs = logs.TrialLogs(root, ["t"], start=0)
    trial_logs.append(10, "train", {"loss": np.array([0.5])})
    trial_logs.append(20, "train", {"loss": np.array([0.25])})
    trial_logs.close()
    got.append((logs.read_scalars(paths.of(root) / "t"),
                (paths.of(root) / "t" / "metrics.jsonl").read_text()))
  assert got[0] == got[1]
  assert got[0][0] == {"train/loss": [(10, 0.5), (20, 0.25)]}


def test_a_missing_bucket_is_one_user_error_naming_it(bucket):
  with pytest.raises(UserError, match=r"--workdir=gs://nope/x: bucket gs://nope does not exist"):
    paths.check_writable("gs://nope/x", "--workdir=gs://nope/x")
  paths.check_writable(f"{bucket}/x", "--workdir")            # an existing bucket: fine
  with pytest.raises(UserError, match="allowed: a local directory or a Cloud Storage URL"):
    paths.of("s3://b/x")
