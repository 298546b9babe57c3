"""Sweeps and Algorithm 1's selection: trial names and values, one stack with one compiled
step per phase, each trial training with its own values, and a choice that never reads the
audit split."""

import json

import numpy as np
import pytest

from conftest import cpu_env
from conftest import run_main
from miajax import config as config_lib
from miajax import pruning
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
  assert own.pruning.keep == "0.1" and pruning.parse_keep(own.pruning.keep) == 0.1
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


def _outputs(rng, strengths=(0.0,), n=200, classes=10):
  """Outputs of one trial per strength: its logits favour each example's label by that much."""
  half = n // 4
  labels = rng.integers(0, classes, n).astype(np.int32)
  logits = rng.normal(size=(len(strengths), n, classes)).astype(np.float32)
  logits[:, np.arange(n), labels] += np.asarray(strengths, np.float32)[:, None]
  return evaluate.Outputs(
      logits=logits, labels=labels,
      is_member=np.repeat([True, False, True, False], half),
      split=np.repeat(np.array([0, 0, 1, 1], np.int8), half),
      index=np.arange(n))


def _run_records(out, attack):
  """Records built as `train._run_stack` builds them: trial 0 is the baseline (not swept,
  so no gain), every other trial a swept pruning configuration."""
  _, test_accuracy = evaluate.accuracies(out)
  selection_accuracy = evaluate.selection_accuracy(out)
  records = []
  for k in range(len(out.logits)):
    r = _record("baseline", "baseline", 0, None, float(test_accuracy[k])) if k == 0 else \
        _record("pruning", f"pruning-keep{k}", 0, None, float(test_accuracy[k]),
                {"pruning.keep": k})
    r["selection_accuracy"] = float(selection_accuracy[k])
    if k:
      r |= evaluate.selection_gain(out, k, 10, attack, seed=0, folds=2)
    records.append(r)
  return records


SELECTION_FIELDS = ("selection_gain", "selection_gain_folds", "selection_accuracy")
CANDIDATE_FIELDS = ("group", "selection_gain", "selection_gain_raw", "selection_gain_interval",
                    "at_floor", "selection_accuracy")


def test_algorithm_1_reads_nothing_of_the_audit_split():
  rng = np.random.default_rng(0)
  attack = config_lib.base().attack
  attack.epochs = 3
  # The baseline and a candidate as accurate as it; a candidate 20-odd points less accurate.
  out = _outputs(rng, strengths=(4.0, 4.0, 1.0))
  clean = _run_records(out, attack)
  # Garbage on every audit example: labels, and logits that call the baseline perfect and
  # every candidate always wrong there. A choice that read split 1 would change.
  audit = out.split == 1
  labels = out.labels.copy()
  labels[audit] = rng.integers(0, 10, audit.sum())
  logits = out.logits.copy()
  logits[:, audit] = 1e4 * rng.normal(size=logits[:, audit].shape)
  logits[0, audit, labels[audit]] = 1e6
  logits[1:, audit, labels[audit]] = -1e6
  garbage = _run_records(evaluate.Outputs(logits, labels, out.is_member, out.split, out.index),
                         attack)
  assert garbage[0]["test_accuracy"] == 1 and garbage[1]["test_accuracy"] == 0   # it is read
  for a, b in zip(clean, garbage):
    assert {k: a.get(k) for k in SELECTION_FIELDS} == {k: b.get(k) for k in SELECTION_FIELDS}
  first, second = (selection.choose(r, max_accuracy_drop=0.05, folds=2) for r in (clean, garbage))
  assert first["baseline_selection_accuracy"] == second["baseline_selection_accuracy"]
  m, n = first["methods"]["pruning"], second["methods"]["pruning"]
  assert m["selected"] == n["selected"]
  assert m["selected_within_accuracy_drop"] == n["selected_within_accuracy_drop"] == \
      "pruning-keep1"                # the accurate one; keep2 drops far more than 5 points
  for c, d in zip(m["candidates"], n["candidates"]):
    assert {k: c[k] for k in CANDIDATE_FIELDS} == {k: d[k] for k in CANDIDATE_FIELDS}
  for r in clean[1:]:                # the per-fold gains are recorded beside their mean
    assert len(r["selection_gain_folds"]) == 2
    assert r["selection_gain"] == max(np.mean(r["selection_gain_folds"]), -np.log(4))


def test_the_selection_accuracy_is_measured_on_split_0s_non_members():
  out = _outputs(np.random.default_rng(1), strengths=(0.0, 50.0))
  reference = out.select(member=False, split=0)
  out.logits[0, reference, out.labels[reference]] = 1e3      # trial 0: right there only
  acc = evaluate.selection_accuracy(out)
  assert acc[0] == 1 and acc[1] == 1 and acc.shape == (2,)
  out.logits[1, reference, out.labels[reference]] = -1e3     # trial 1: wrong there only
  assert evaluate.selection_accuracy(out)[1] == 0


def _record(method, group, seed, gain, acc, sweep=None, selection_accuracy=None, folds=None,
            nonzero=100):
  return {"method": method, "group": group, "seed": seed, "selection_gain": gain,
          "test_accuracy": acc, "attack_auc": 0.5, "attack_accuracy": 0.5,
          "weights_nonzero": nonzero, "sweep": sweep,
          "selection_accuracy": acc if selection_accuracy is None else selection_accuracy,
          "selection_gain_folds": folds}


def test_selection_takes_the_smallest_mean_gain_and_the_best_within_the_accuracy_bound():
  records = [_record("baseline", "baseline", s, None, 0.90) for s in (0, 1)]
  for keep, gains, acc in ((0.5, (-1.30, -1.32), 0.895), (0.1, (-1.18, -1.16), 0.80),
                           (0.3, (-1.33, -1.33), 0.89)):
    records += [_record("pruning", f"pruning-keep{keep}", s, g, acc, {"pruning.keep": keep})
                for s, g in enumerate(gains)]
  choice = selection.choose(records, max_accuracy_drop=0.01, folds=2)
  pruning = choice["methods"]["pruning"]
  assert pruning["selected"] == "pruning-keep0.3"              # mean gain -1.33
  assert pruning["selected_within_accuracy_drop"] == "pruning-keep0.3"
  assert choice["baseline_selection_accuracy"] == pytest.approx(0.90)
  assert "audit split is not used" in choice["criterion"]
  assert "+" in selection.table(choice) and "*" in selection.table(choice)
  # The bound is on the selection accuracy: a candidate within it is chosen over a smaller
  # gain that drops 10 points.
  records[2:4] = [_record("pruning", "pruning-keep0.5", s, -1.34, 0.895, {"pruning.keep": 0.5},
                          selection_accuracy=0.80) for s in (0, 1)]
  pruning = selection.choose(records, 0.01, 2)["methods"]["pruning"]
  assert pruning["selected"] == "pruning-keep0.5"
  assert pruning["selected_within_accuracy_drop"] == "pruning-keep0.3"
  # No baseline trials: no bound can be applied.
  alone = selection.choose(records[2:], max_accuracy_drop=0.01, folds=2)
  assert alone["methods"]["pruning"]["selected_within_accuracy_drop"] is None
  assert selection.choose(records[:2], 0.01, 2) is None     # nothing swept


def test_gains_below_a_coins_are_tied_at_the_floor_and_ordered_by_selection_accuracy():
  # The attacker may always answer 0.5 (gain -log 4 = -1.386); below that, the cross-validated
  # gain says only how badly the attack overfits. Seen in a sweep: -1.42, -1.41, -1.39.
  records = [_record("baseline", "baseline", 0, None, 0.90)]
  for keep, gain, acc, nonzero in ((0.5, -1.42, 0.85, 500), (0.3, -1.39, 0.89, 300),
                                   (0.2, -1.41, 0.89, 200), (0.1, -1.30, 0.70, 100)):
    records.append(_record("pruning", f"pruning-keep{keep}", 0, gain, 0.5,
                           {"pruning.keep": keep}, selection_accuracy=acc,
                           folds=[gain - 0.02, gain + 0.02], nonzero=nonzero))
  choice = selection.choose(records, max_accuracy_drop=0.02, folds=2)
  pruning = choice["methods"]["pruning"]
  # Old rule: the most negative, keep0.5. Now: tied at the floor, the more accurate, then the
  # one with fewer nonzero weights; keep0.1 is above the floor but only with its accuracy.
  assert pruning["selected"] == "pruning-keep0.2"
  assert pruning["selected_within_accuracy_drop"] == "pruning-keep0.2"
  by_group = {c["group"]: c for c in pruning["candidates"]}
  floor = -np.log(4)
  for keep in (0.5, 0.3, 0.2):
    c = by_group[f"pruning-keep{keep}"]
    assert c["at_floor"] and c["selection_gain"] == floor
  c = by_group["pruning-keep0.5"]
  assert c["selection_gain_raw"] == pytest.approx(-1.42)
  assert c["selection_gain_interval"] == pytest.approx([-1.44, -1.40])   # over folds and seeds
  assert not by_group["pruning-keep0.1"]["at_floor"]
  table = selection.table(choice)
  assert "[-1.44, -1.40]" in table and "89.00" in table and "log 4" in table


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
    assert r["selection_gain"] >= -np.log(4) and len(r["selection_gain_folds"]) == 2
    assert 0 <= r["selection_accuracy"] <= 1
    own = json.loads((tmp_path / "run" / r["name"] / "config.json").read_text())
    assert own["pruning"]["keep"] == str(keep) and own["trial"]["sweep"] == {
        "pruning.keep": keep}
  assert (by_keep[0.5]["weights_nonzero"] > by_keep[0.2]["weights_nonzero"]
          > by_keep[0.1]["weights_nonzero"])
  assert by_keep[0.1]["weights_nonzero"] < 0.2 * total
  choice = json.loads((tmp_path / "run" / "selection.json").read_text())["methods"]["pruning"]
  assert choice["selected"] in {r["group"] for r in records}
  assert all(len(c["selection_gain_interval"]) == 2 for c in choice["candidates"])


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
def test_a_keep_sweep_over_two_devices_gives_each_trial_what_it_gets_alone(tmp_path, data_dir):
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

  # Two keep levels, vmapped and sharded one trial per device (tests/test_distributed.py
  # shards four trials over four devices); the last level alone on one device.
  sweep = run(2, tmp_path / "sweep", "--config.sweep.keep=(0.5,0.1)",
              "--config.train.strategy=vmap")
  assert sorted(sweep) == [f"pruning-keep{k}-seed0" for k in ("0.10", "0.50")]
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
