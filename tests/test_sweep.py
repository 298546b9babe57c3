"""Sweeps and Algorithm 1's selection: trial names and values, one stack with one compiled
step per phase, each trial training with its own values, and a choice that never reads the
audit split."""

import json

import numpy as np
import pytest

from conftest import cpu_env
from conftest import run_main
from miajax import config as config_lib
from miajax import evaluate
from miajax import selection
from miajax import steps
from miajax import train
from miajax import trials as trials_lib
from miajax.errors import UserError


def _config(**sweep):
  c = config_lib.base()
  c.methods = ("baseline", "pruning", "minmax", "dp")
  c.seeds = (0, 1)
  for key, values in sweep.items():
    c.sweep[key] = values
  return c


def test_a_grid_gives_each_method_the_values_it_uses_times_the_seeds():
  names = [t.name for t in trials_lib.make(_config(keep=(0.5, "paper"), epsilon=(1.0,)))]
  assert names == [
      "baseline-seed0", "baseline-seed1",
      "pruning-keep0.50-seed0", "pruning-keep0.50-seed1",
      "pruning-keeppaper-seed0", "pruning-keeppaper-seed1",
      "minmax-seed0", "minmax-seed1",
      "dp-eps1.00-seed0", "dp-eps1.00-seed1"]


def test_grid_and_zip_of_two_keys():
  c = _config(keep=(0.5, 0.1), rho=(1e-3, 1e-2))
  c.methods = ("pruning",)
  c.seeds = (0,)
  grid = [t.values for t in trials_lib.make(c)]
  assert grid == [(("pruning.keep", 0.5), ("admm.rho", 1e-3)),
                  (("pruning.keep", 0.5), ("admm.rho", 1e-2)),
                  (("pruning.keep", 0.1), ("admm.rho", 1e-3)),
                  (("pruning.keep", 0.1), ("admm.rho", 1e-2))]
  c.sweep.mode = "zip"
  names = [t.name for t in trials_lib.make(c)]
  assert names == ["pruning-keep0.50-rho1e-03-seed0", "pruning-keep0.10-rho0.01-seed0"]


def test_a_trial_config_holds_its_own_values_in_the_declared_types():
  c = _config(keep=(0.1,), gamma=(3.0,), epsilon=(2.0,))
  by_name = {t.name: t for t in trials_lib.make(c)}
  own = trials_lib.config_for(c, by_name["pruning-keep0.10-seed1"])
  assert own.pruning.keep == "0.1" and config_lib.parse_keep(own.pruning.keep) == 0.1
  assert trials_lib.config_for(c, by_name["minmax-gamma3.00-seed0"]).minmax.gamma == 3.0
  assert trials_lib.config_for(c, by_name["dp-eps2.00-seed0"]).dp.epsilon == 2.0
  assert c.pruning.keep == "paper"      # the run's config is untouched


@pytest.mark.parametrize("change, message", [
    (dict(keep=(0.5, 0.5)), "repeats a value"),
    (dict(keep=(0.101, 0.1)), "one trial name twice"),
    (dict(keep=(0.5, 0.1), rho=(1.0,), mode="zip"), "lists of one length"),
    (dict(keep=(0.5,), mode="diagonal"), "sweep.mode"),
])
def test_bad_sweeps_are_one_line_errors(change, message):
  c = _config(**change)
  with pytest.raises(UserError, match=message) as error:
    trials_lib.make(c)
  assert "\n" not in str(error.value)


def test_sweep_and_lira_are_refused_together():
  c = _config(keep=(0.5, 0.1))
  c.lira.num_shadows = 2
  with pytest.raises(UserError, match="lira"):
    trials_lib.make(c)


# ------------------------------------------------------------------ selection


def _outputs(rng, n=200, classes=10):
  half = n // 4
  return evaluate.Outputs(
      logits=rng.normal(size=(1, n, classes)).astype(np.float32),
      labels=rng.integers(0, classes, n).astype(np.int32),
      is_member=np.repeat([True, False, True, False], half),
      split=np.repeat(np.array([0, 0, 1, 1], np.int8), half),
      index=np.arange(n))


def test_selection_gain_never_reads_the_audit_split():
  rng = np.random.default_rng(0)
  out = _outputs(rng)
  attack = config_lib.base().attack
  attack.epochs = 3
  before = evaluate.selection_gain(out, 0, 10, attack, seed=0, folds=2)
  poisoned = out.logits.copy()
  poisoned[:, out.split == 1] = 1e4 * rng.normal(size=poisoned[:, out.split == 1].shape)
  after = evaluate.selection_gain(
      evaluate.Outputs(poisoned, out.labels, out.is_member, out.split, out.index), 0, 10,
      attack, seed=0, folds=2)
  assert before == after
  assert -np.log(4) - 0.5 < before <= 0


def _record(method, group, seed, gain, acc, sweep=None):
  return {"method": method, "group": group, "seed": seed, "selection_gain": gain,
          "test_accuracy": acc, "attack_auc": 0.5, "attack_accuracy": 0.5,
          "weights_nonzero": 100, "sweep": sweep}


def test_selection_takes_the_smallest_mean_gain_and_the_best_within_the_accuracy_bound():
  records = [_record("baseline", "baseline", s, None, 0.90) for s in (0, 1)]
  for keep, gains, acc in ((0.5, (-1.30, -1.32), 0.895), (0.1, (-1.38, -1.36), 0.80),
                           (0.3, (-1.33, -1.33), 0.89)):
    records += [_record("pruning", f"pruning-keep{keep}", s, g, acc, {"pruning.keep": keep})
                for s, g in enumerate(gains)]
  choice = selection.choose(records, max_accuracy_drop=0.01, folds=2)
  pruning = choice["methods"]["pruning"]
  assert pruning["selected"] == "pruning-keep0.1"              # mean gain -1.37
  assert pruning["selected_within_accuracy_drop"] == "pruning-keep0.3"   # 0.80 drops 10 points
  assert choice["baseline_test_accuracy"] == pytest.approx(0.90)
  assert "audit split is not used" in choice["criterion"]
  assert "+" in selection.table(choice) and "*" in selection.table(choice)
  # No baseline trials: no bound can be applied.
  alone = selection.choose(records[2:], max_accuracy_drop=0.01, folds=2)
  assert alone["methods"]["pruning"]["selected_within_accuracy_drop"] is None
  assert selection.choose(records[:2], 0.01, 2) is None     # nothing swept


# ------------------------------------------------------------------ end to end


def test_swept_trials_share_one_compiled_step_per_phase_and_train_with_their_own_values(
    tmp_path, data_dir, monkeypatch):
  traces = []
  original = steps.train_step

  def counting(*args, **kwargs):
    traces.append(1)     # Python runs only while JAX traces
    return original(*args, **kwargs)

  monkeypatch.setattr(steps, "train_step", counting)
  c = config_lib.base()
  config_lib.smoke(c)
  c.methods = ("pruning",)
  c.seeds = (0,)
  c.data.dir = str(data_dir)
  c.data.train_size = 640
  c.train.strategy = "loop"
  c.sweep.keep = (0.5, 0.2, 0.1)
  # train_step is bound into the phases when the recipe is built, inside the run.
  records = train.train_and_evaluate(c, tmp_path / "run")
  assert len(traces) == 3           # pretrain, ADMM, retrain: once each for three trials
  by_keep = {r["sweep"]["pruning.keep"]: r for r in records}
  total = by_keep[0.5]["weights_total"]
  for keep, r in by_keep.items():
    # Every trial pruned to its own global fraction (biases are not pruned).
    assert r["weights_nonzero"] < by_keep[0.5]["weights_nonzero"] or keep == 0.5
    assert r["name"] == f"pruning-keep{keep:.2f}-seed0"
    assert r["group"] == f"pruning-keep{keep:.2f}"
    assert r["selection_gain"] is not None
    own = json.loads((tmp_path / "run" / r["name"] / "config.json").read_text())
    assert own["pruning"]["keep"] == str(keep) and own["trial"]["sweep"] == {
        "pruning.keep": keep}
  assert (by_keep[0.5]["weights_nonzero"] > by_keep[0.2]["weights_nonzero"]
          > by_keep[0.1]["weights_nonzero"])
  assert by_keep[0.1]["weights_nonzero"] < 0.2 * total
  choice = json.loads((tmp_path / "run" / "selection.json").read_text())["methods"]["pruning"]
  assert choice["selected"] in {r["group"] for r in records}


@pytest.mark.slow
def test_a_swept_dp_trial_matches_the_same_trial_run_alone(tmp_path, data_dir):
  common = ("--config=configs/default.py:smoke", "--config.methods=('dp',)",
            f"--config.data.dir={data_dir}", "--config.train.log_every=1",
            "--config.attack.epochs=1")
  swept = run_main(*common, "--config.sweep.epsilon=(2.0,8.0)", f"--workdir={tmp_path / 's'}")
  assert swept.returncode == 0, swept.stderr[-2000:]
  alone = run_main(*common, "--config.dp.epsilon=8.0", f"--workdir={tmp_path / 'a'}")
  assert alone.returncode == 0, alone.stderr[-2000:]
  read = lambda p: [json.loads(line) for line in p.read_text().splitlines()]
  got = read(tmp_path / "s" / "dp-eps8.00-seed0" / "metrics.jsonl")
  want = read(tmp_path / "a" / "dp-seed0" / "metrics.jsonl")
  for key in ("loss", "grad_norm"):
    np.testing.assert_allclose([m[key] for m in got], [m[key] for m in want], rtol=1e-4)
  records = {r["name"]: r for r in json.loads((tmp_path / "s" / "results.json").read_text())}
  assert records["dp-eps2.00-seed0"]["dp_noise_multiplier"] > records[
      "dp-eps8.00-seed0"]["dp_noise_multiplier"]
  assert records["dp-eps8.00-seed0"]["dp_epsilon"] == pytest.approx(8.0, rel=1e-2)
  assert "Algorithm 1" in swept.stdout


@pytest.mark.slow
def test_a_keep_sweep_on_four_devices_gives_each_trial_what_it_gets_alone(tmp_path, data_dir):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from conftest import ROOT  # pylint: disable=g-import-not-at-top
  common = ["--config=configs/default.py:smoke", "--config.methods=('pruning',)",
            f"--config.data.dir={data_dir}", "--config.train.log_every=1",
            "--config.attack.epochs=1"]

  def run(devices, workdir, *extra):
    out = subprocess.run([sys.executable, "-m", "miajax.main", *common, f"--workdir={workdir}",
                          *extra], cwd=ROOT, env=cpu_env(devices), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return {r["name"]: r for r in json.loads((workdir / "results.json").read_text())}

  # Four keep levels, vmapped and sharded one trial per device; each level alone on one.
  sweep = run(4, tmp_path / "sweep", "--config.sweep.keep=(0.5,0.3,0.2,0.1)",
              "--config.train.strategy=vmap")
  assert sorted(sweep) == [f"pruning-keep{k}-seed0" for k in ("0.10", "0.20", "0.30", "0.50")]
  # One level alone: the last device's trial, where XLA:CPU has dropped work before
  # (benchmarks/NOTES.md, per-example gradients).
  for keep in ("0.1",):
    alone = run(1, tmp_path / f"alone{keep}", f"--config.pruning.keep={keep}")["pruning-seed0"]
    name = f"pruning-keep{float(keep):.2f}-seed0"
    got = sweep[name]
    assert got["weights_nonzero"] == alone["weights_nonzero"], name
    for key in ("test_accuracy", "train_accuracy"):
      assert abs(got[key] - alone[key]) <= 0.02, (name, key)
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()]
    losses = [m["loss"] for m in read(tmp_path / "sweep" / name / "metrics.jsonl")
              if "loss" in m]
    want = [m["loss"] for m in read(tmp_path / f"alone{keep}" / "pruning-seed0" /
                                     "metrics.jsonl") if "loss" in m]
    np.testing.assert_allclose(losses, want, rtol=0.02, err_msg=name)
