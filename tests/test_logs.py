"""Training curves on disk: metrics.jsonl and TensorBoard events agree, and a resume rewrites
what came after its checkpoint in both."""

import json

import numpy as np
import pytest

from miajax import logs


def test_events_hold_every_scalar_of_metrics_jsonl_per_trial(tmp_path):
  names = ["a-seed0", "a-seed1"]
  for n in names:
    (tmp_path / n).mkdir()
  run = logs.TrialLogs(tmp_path, names, start=0)
  for step in (10, 20):
    run.append(step, "train", {"loss": np.array([1.0, 2.0]) / step,
                               "accuracy": np.array([0.5, 0.6])}, {"examples_per_s": 99.0})
  run.append(20, "admm_update", {"residual/fc1/kernel": np.array([3.0, 4.0])})
  run.close()
  scalars = logs.read_scalars(tmp_path / "a-seed1")
  assert set(scalars) == {"train/loss", "train/accuracy", "train/examples_per_s",
                          "admm_update/residual/fc1/kernel"}
  assert scalars["train/loss"] == [(10, pytest.approx(0.2)), (20, pytest.approx(0.1))]
  lines = [json.loads(l) for l in (tmp_path / "a-seed1" / "metrics.jsonl").read_text()
           .splitlines()]
  assert [l["loss"] for l in lines if l["phase"] == "train"] == [0.2, 0.1]


def test_a_resume_drops_what_came_after_its_checkpoint(tmp_path):
  (tmp_path / "t").mkdir()
  first = logs.TrialLogs(tmp_path, ["t"], start=0)
  for step in (10, 20, 30):
    first.append(step, "train", {"loss": np.array([float(step)])})
  first.close()
  again = logs.TrialLogs(tmp_path, ["t"], start=20)     # resumed from the checkpoint at 20
  again.append(30, "train", {"loss": np.array([-1.0])})
  again.close()
  assert logs.read_scalars(tmp_path / "t")["train/loss"] == [(10, 10.0), (20, 20.0),
                                                             (30, -1.0)]
  steps = [json.loads(l)["step"] for l in (tmp_path / "t" / "metrics.jsonl").read_text()
           .splitlines()]
  assert steps == [10, 20, 30]
