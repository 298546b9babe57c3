"""A run killed with SIGKILL and rerun ends exactly where an uninterrupted one does, for every
method whose state goes beyond weights and Adam's moments: pruning killed inside ADMM (after
it entered from pretraining and updated Z and U) and resumed across the hard prune into masked
retraining; Min-Max with its inner attack; DP-SGD with its noise key. Each run dies by its own
hand at a step chosen here (tests/killed_run.py), so nothing races a checkpoint.
"""

import json
import signal
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT, cpu_env, run_main

pytestmark = pytest.mark.slow

# 1,000 digits members, batch 64: 15 steps an epoch. Pruning: pretraining 0-15, ADMM 15-30
# (Z/U updates at 20 and 25), masked retraining 30-45.
ARGS = ("--config.methods=('baseline','pruning','minmax','dp')",
        "--config.train.epochs=2", "--config.pruning.pretrain_epochs=1",
        "--config.admm.epochs=1", "--config.admm.update_every=5",
        "--config.pruning.retrain_epochs=1", "--config.train.checkpoint_every=5",
        "--config.train.log_every=5", "--config.attack.epochs=1",
        "--config.attack.bootstrap_replicates=20",
        "--config.minmax.attack_learning_rate=0.01")
# Where each run is killed: (method, step). Each kill also ends a run that resumed the one
# before it; the baseline's plain steps are pruning's pretraining, killed here in ADMM.
KILLS = (("pruning", 25), ("minmax", 15), ("dp", 20))
COMPARED = ("test_accuracy", "train_accuracy", "attack_accuracy", "attack_auc",
            "weights_nonzero", "dp_epsilon", "gain")


def _killed_at(workdir, data_dir, method, step):
  env = cpu_env()
  proc = subprocess.run(
      [sys.executable, str(ROOT / "tests" / "killed_run.py"), method, str(step),
       f"--workdir={workdir}", f"--config.data.dir={data_dir}", *ARGS],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  return proc.stderr


def _final(workdir, name):
  manager = ocp.CheckpointManager(workdir / name / "checkpoints", item_names=("state", "meta"))
  step = manager.latest_step()
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
  return step, state


def test_runs_killed_in_each_defence_resume_to_the_uninterrupted_result(tmp_path, data_dir):
  whole, cut = tmp_path / "whole", tmp_path / "cut"
  done = run_main(f"--workdir={whole}", f"--config.data.dir={data_dir}", *ARGS)
  assert done.returncode == 0, done.stderr[-3000:]

  logs = [_killed_at(cut, data_dir, method, step) for method, step in KILLS]
  # Records are written as each method's stack ends: DP's is not there yet.
  assert "dp-seed0" not in [r["name"] for r in json.loads((cut / "results.json").read_text())]
  # Each rerun picked the previous method up where it died.
  for (method, step), log in zip(KILLS[:-1], logs[1:]):
    assert f"{method}] resumed 1 trial at step {step} of" in log, log[-3000:]
  resumed = run_main(f"--workdir={cut}", f"--config.data.dir={data_dir}", *ARGS)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"dp] resumed 1 trial at step {KILLS[-1][1]} of" in resumed.stderr

  a = {r["name"]: r for r in json.loads((whole / "results.json").read_text())}
  b = {r["name"]: r for r in json.loads((cut / "results.json").read_text())}
  assert sorted(a) == sorted(b) == ["baseline-seed0", "dp-seed0", "minmax-seed0",
                                    "pruning-seed0"]
  for name in a:
    step_a, state_a = _final(whole, name)
    step_b, state_b = _final(cut, name)
    assert step_a == step_b
    # Everything the run carries: weights, optimizer moments, masks, Z and U, rho, the inner
    # attack and its optimizer, the noise key, the step.
    leaves_a, tree_a = jax_flatten(state_a)
    leaves_b, tree_b = jax_flatten(state_b)
    assert tree_a == tree_b, name
    for x, y in zip(leaves_a, leaves_b, strict=True):
      np.testing.assert_array_equal(x, y, err_msg=name)
    for key in COMPARED:
      assert a[name].get(key) == b[name].get(key), (name, key)
  assert a["pruning-seed0"]["weights_nonzero"] < a["baseline-seed0"]["weights_nonzero"]
  assert a["dp-seed0"]["dp_epsilon"] is not None and a["dp-seed0"]["gain"] is not None
  # Min-Max's side batches went through the real pipeline to an inner attack that learns: its
  # gain starts near a coin's -log 4 and moves, and the objective is not the task loss.
  lines = [json.loads(l) for l in (whole / "minmax-seed0" / "metrics.jsonl").read_text()
           .splitlines() if '"attack_gain"' in l]
  gains = [l["attack_gain"] for l in lines]
  assert abs(gains[0] + np.log(4)) < 0.05 and max(abs(g - gains[0]) for g in gains) > 1e-3
  assert all(l["loss"] != l["cross_entropy"] for l in lines)


def jax_flatten(tree):
  import jax  # pylint: disable=g-import-not-at-top
  leaves, treedef = jax.tree.flatten(tree)
  return [np.asarray(x) for x in leaves], treedef
