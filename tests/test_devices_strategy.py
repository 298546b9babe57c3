"""The "devices" strategy: a stack's trials laid over one CPU device per core, each device
looping over its own trials, give each trial what one device gives it."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, cpu_env

pytestmark = pytest.mark.slow

# Two trials of pruning (pretraining, ADMM with Z/U updates, masked retraining) and of DP-SGD
# (Poisson batches, per-example gradients and the self-check), on a short schedule.
ARGS = ("--config.methods=('pruning','dp')", "--config.seeds=(0,1)",
        "--config.train.epochs=1", "--config.attack.epochs=1",
        "--config.pruning.pretrain_epochs=0.5", "--config.admm.epochs=0.5",
        "--config.admm.update_every=4", "--config.pruning.retrain_epochs=0.5",
        "--config.attack.bootstrap_replicates=20", "--config.train.log_every=4",
        "--config.train.strategy=devices")
NAMES = [f"{m}-seed{s}" for m in ("pruning", "dp") for s in (0, 1)]


def _start(workdir, data_dir, devices):
  return subprocess.Popen(
      [sys.executable, "-m", "miajax.main", f"--workdir={workdir}",
       f"--config.data.dir={data_dir}", *ARGS], cwd=ROOT, env=cpu_env(devices),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _records(workdir):
  return {r["name"]: r for r in json.loads((workdir / "results.json").read_text())}


def _curve(workdir, name):
  return [json.loads(line) for line in (workdir / name / "metrics.jsonl").read_text()
          .splitlines()]


def test_trials_over_two_devices_train_and_score_as_on_one_device(tmp_path, data_dir):
  from miajax.data import sources
  sources.load("digits", str(data_dir))      # prepared once, before the runs share the dir
  runs = {d: _start(tmp_path / f"d{d}", data_dir, d) for d in (1, 2)}
  out = {d: p.communicate(timeout=900)[0] for d, p in runs.items()}
  for d, p in runs.items():
    assert p.returncode == 0, out[d][-3000:]
  assert "DP-SGD self-check, trial 1 on 2 devices" in out[2]
  one, two = _records(tmp_path / "d1"), _records(tmp_path / "d2")
  assert sorted(two) == sorted(NAMES)
  for name in NAMES:
    for key in ("test_accuracy", "train_accuracy", "attack_auc"):
      assert two[name][key] == pytest.approx(one[name][key], abs=1e-6), (name, key)
    for a, b in zip(_curve(tmp_path / "d1", name), _curve(tmp_path / "d2", name),
                    strict=True):
      assert a.keys() == b.keys()
      for key in a:
        if isinstance(a[key], float) and key != "examples_per_s":
          assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (name, key, a["step"])
  # Laid out as asked: each stack's two trials on two devices, one each.
  sharding = json.loads(next(iter(json.loads(
      (tmp_path / "d2" / "pruning-seed0" / "checkpoints" / str(two["pruning-seed0"]["step"])
       / "state" / "_sharding").read_text()).values())))
  assert sharding["shape"] == [2, 1]
