"""The command line: a run leaves its contract on disk, bad input is one line and exit 2, a
changed config is refused on resume. (A killed run resuming exactly: tests/test_resume.py.)"""

import json
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import run_main
from miajax import logs, results, splits

pytestmark = pytest.mark.slow
QUICK = ("--config.methods=('baseline',)", "--config.train.epochs=4", "--config.attack.epochs=2")


def test_default_run_leaves_results_config_splits_and_a_checkpoint(tmp_path, data_dir):
  proc = run_main(f"--workdir={tmp_path}", f"--config.data.dir={data_dir}", *QUICK)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = json.loads((tmp_path / "results.json").read_text())
  assert [r["name"] for r in records] == ["baseline-seed0"]
  r = records[0]
  assert set(results.FIELDS) <= set(r)
  assert r["method"] == "baseline" and r["dataset"] == "digits" and r["model"] == "lenet5"
  assert 0.5 < r["test_accuracy"] <= 1.0           # 4 epochs: well above chance (0.1)
  assert r["step"] == 4 * (1000 // 64)
  trial = tmp_path / "baseline-seed0"
  assert json.loads((trial / "config.json").read_text())["trial"]["seed"] == 0
  s = splits.Splits.load(trial / "splits.npz")
  assert len(s.audit) == len(s.audit_members)
  assert (tmp_path / "results.csv").read_text().startswith("name,")
  steps = ocp.CheckpointManager(trial / "checkpoints").all_steps()
  assert r["step"] in steps
  assert "test acc" in proc.stdout                   # the summary table
  # TensorBoard reads the same curves as metrics.jsonl (tensorboard --logdir DIR).
  scalars = logs.read_scalars(trial)
  assert {"train/loss", "train/cross_entropy", "train/accuracy",
          "train/examples_per_s"} <= set(scalars)
  assert [s for s, _ in scalars["train/loss"]] == [
      json.loads(l)["step"] for l in (trial / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("override,field", [
    ("--config.model.name=alexnet", "model.name"),
    ("--config.data.name=svhn", "data.name"),
    ("--config.optimizer.learning_rate=-0.1", "optimizer.learning_rate"),
    ("--config.data.batch_size=0", "data.batch_size"),
    ("--config.pruning.keep=1.5", "pruning.keep"),
    ("--config.methods=('baseline','magic')", "methods"),
    ("--config.data.batch_size=abc", "batch_size"),
    # A URL TFDS is not read from here (gs:// is staged: tests/test_gcs.py).
    ("--config.data.dir=s3://bucket/tfds", "data.dir"),
])
def test_bad_input_is_one_line_naming_the_field_with_exit_code_2(tmp_path, override, field):
  methods = () if "methods" in override else ("--config.methods=('baseline','pruning')",)
  proc = run_main(f"--workdir={tmp_path / 'w'}", *methods, override)
  assert proc.returncode == 2, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()
  assert len(last) == 1 and field in last[0], proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "w").exists()               # nothing written


def test_a_url_workdir_other_than_gs_is_refused_not_written_locally(tmp_path):
  proc = run_main("--workdir=s3://bucket/run", "--config.methods=('baseline',)", cwd=tmp_path)
  assert proc.returncode == 2 and "s3://bucket/run" in proc.stderr and "gs://" in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "s3:").exists() and not (Path.cwd() / "s3:").exists()


def test_unwritable_workdir_is_a_one_line_error(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  proc = run_main(f"--workdir={blocker / 'run'}")
  assert proc.returncode == 2 and "--workdir" in proc.stderr and "Traceback" not in proc.stderr
  assert blocker.read_text() == "not a directory"


def test_resuming_with_a_different_config_is_refused_without_damage(tmp_path, data_dir):
  args = (f"--workdir={tmp_path}", f"--config.data.dir={data_dir}", *QUICK)
  assert run_main(*args).returncode == 0
  before = (tmp_path / "results.json").read_text()
  proc = run_main(*args, "--config.optimizer.learning_rate=0.01")
  assert proc.returncode == 2 and "optimizer.learning_rate" in proc.stderr
  assert (tmp_path / "results.json").read_text() == before


def _final_params(workdir):
  trial = workdir / "baseline-seed0" / "checkpoints"
  manager = ocp.CheckpointManager(trial, item_names=("state", "meta"))
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return step, restored.state["params"]


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_pruned_checkpoint_holds_exactly_the_configured_nonzeros_per_layer(tmp_path, data_dir):
  proc = run_main(f"--workdir={tmp_path}", f"--config.data.dir={data_dir}",
                  "--config.methods=('pruning',)", "--config.pruning.pretrain_epochs=1",
                  "--config.admm.epochs=1", "--config.pruning.retrain_epochs=1",
                  "--config.attack.epochs=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  manager = ocp.CheckpointManager(tmp_path / "pruning-seed0" / "checkpoints",
                                  item_names=("state", "meta"))
  state = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore())).state
  # App. E: LeNet-5 prunes 40%, 90%, 93.75%, 93.75%, 93.75% of conv1, conv2, fc1, fc2, fc3.
  expected = {"conv1": round(0.6 * 150), "conv2": round(0.1 * 2400),
              "fc1": round(0.0625 * 48000), "fc2": round(0.0625 * 10080),
              "fc3": round(0.0625 * 840)}
  counted = {layer: int(np.count_nonzero(np.asarray(state["params"][layer]["kernel"])))
             for layer in expected}
  assert counted == expected
  for layer in expected:      # biases are never pruned
    assert np.count_nonzero(np.asarray(state["params"][layer]["bias"])) > 0
  record = json.loads((tmp_path / "results.json").read_text())[0]
  assert record["weights_nonzero"] == sum(expected.values())
  assert record["weights_total"] == 150 + 2400 + 48000 + 10080 + 840
  assert {k: v["nonzero"] for k, v in record["layer_sparsity"].items()} == {
      f"{k}/kernel": v for k, v in expected.items()}


def test_scores_npz_reproduces_the_reported_loss_attack_auc(tmp_path, data_dir):
  from sklearn.metrics import roc_auc_score  # pylint: disable=g-import-not-at-top
  assert run_main(f"--workdir={tmp_path}", f"--config.data.dir={data_dir}",
                  *QUICK).returncode == 0
  record = json.loads((tmp_path / "results.json").read_text())[0]
  with np.load(tmp_path / "baseline-seed0" / "scores.npz") as f:
    audit = f["split"] == 1
    assert f["is_member"][audit].sum() == (~f["is_member"][audit]).sum()   # balanced
    assert f["logits"].shape == (len(f["labels"]), 10)
    auc = roc_auc_score(f["is_member"][audit], f["score_loss"][audit])
    nn_auc = roc_auc_score(f["is_member"][audit], f["score_nn"][audit])
  assert auc == pytest.approx(record["threshold_attacks"]["loss"]["auc"], abs=1e-9)
  assert nn_auc == pytest.approx(record["attack_auc"], abs=1e-9)


def test_a_workdir_from_before_a_config_key_existed_resumes_while_the_key_is_default(tmp_path):
  from miajax import config as config_lib  # pylint: disable=g-import-not-at-top
  from miajax import train  # pylint: disable=g-import-not-at-top
  from miajax.errors import UserError  # pylint: disable=g-import-not-at-top
  config = json.loads(config_lib.base().to_json_best_effort())
  older = json.loads(json.dumps(config))
  del older["lira"]["rmia_offline_a"], older["split_per_trial"]
  (tmp_path / "config.json").write_text(json.dumps(older))
  train._check_same_run(tmp_path, config)                  # the same computation: resumes
  config["split_per_trial"] = True
  with pytest.raises(UserError, match="split_per_trial"):
    train._check_same_run(tmp_path, config)
