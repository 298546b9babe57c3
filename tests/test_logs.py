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


def test_the_audit_reaches_tensorboard_at_the_final_step_beside_the_curves(tmp_path):
  (tmp_path / "t").mkdir()
  run = logs.TrialLogs(tmp_path, ["t"], start=0)
  run.append(30, "train", {"loss": np.array([0.5])})
  run.close()
  record = {"name": "t", "step": 30, "test_accuracy": 0.81, "train_accuracy": 0.99,
            "weights_nonzero": 1234, "attack_auc": 0.61, "attack_accuracy": 0.57,
            "headline_auc": 0.64, "headline_accuracy": 0.6, "dp_epsilon": None,
            "threshold_attacks": {"loss": {"auc": 0.58, "accuracy": 0.55},
                                  "loss_class": {"auc": 0.63, "accuracy": 0.59}},
            "lira": {"online": {"auc": 0.7}, "rmia_online": {"auc": 0.69},
                     "rmia_gamma": 2.0}}
  logs.write_audit(tmp_path, [record])
  scalars = logs.read_scalars(tmp_path / "t")
  assert scalars["train/loss"] == [(30, 0.5)]
  audit = {tag: points for tag, points in scalars.items() if tag != "train/loss"}
  assert set(audit) == {
      "eval/test_accuracy", "eval/train_accuracy", "eval/weights_nonzero", "audit/nn_auc",
      "audit/nn_accuracy", "audit/headline_auc", "audit/headline_accuracy", "audit/loss_auc",
      "audit/loss_accuracy", "audit/loss_class_auc", "audit/loss_class_accuracy",
      "audit/lira_online_auc", "audit/rmia_online_auc"}      # no epsilon: not computed
  assert audit["eval/test_accuracy"] == [(30, pytest.approx(0.81))]
  assert audit["audit/headline_auc"] == [(30, pytest.approx(0.64))]
