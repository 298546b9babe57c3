"""python -m miajax.audit: a model miajax did not train, audited from its outputs as a run
audits its own."""

import json
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.special

from conftest import ROOT, cpu_env
from miajax import audit
from miajax import evaluate
from miajax import report
from miajax.errors import UserError

C = 4
# Small and quick: the attack code is the run's own (tests/test_audit.py covers it).
ATTACK = types.SimpleNamespace(kind="one_layer", features="log_losses", epochs=5,
                               batch_size=32, learning_rate=3e-2, bootstrap_replicates=100)
ALL = ("nn", "loss", "confidence", "entropy", "logit", "loss_class", "entropy_class")
AUDIT_FIELDS = ("attack_accuracy", "attack_auc", "attack_tpr_at_fpr", "gain", "attack_epochs",
                "attack_threshold", "threshold_attacks", "headline_attack", "headline_auc",
                "headline_accuracy", "headline_selection", "intervals", "per_class")


def _side(n, member, seed):
  """A model's logits and labels on n examples; members' true-class logits sit higher."""
  rng = np.random.default_rng([seed, member])
  labels = rng.integers(0, C, n)
  logits = rng.normal(size=(n, C))
  logits[np.arange(n), labels] += (3.0 if member else 1.5) + rng.normal(size=n)
  return audit.Side(logits=logits.astype(np.float32), labels=labels)


def _losses(side, labels=True):
  """The same model's cross-entropy losses, with or without the labels."""
  logp = scipy.special.log_softmax(side.logits.astype(np.float64), axis=1)
  return audit.Side(losses=-logp[np.arange(len(logp)), side.labels],
                    labels=side.labels if labels else None)


def _run(*args):
  return subprocess.run([sys.executable, "-m", "miajax.audit", *map(str, args)], cwd=ROOT,
                        env=cpu_env(), capture_output=True, text=True, timeout=300)


def _trial(workdir, seed=3, n=60):
  """What a run leaves of one trial: scores.npz and config.json, and its results.json record,
  made by the trainer's own calls (evaluate.audit, evaluate.save_scores)."""
  m0, o0, m1, o1 = _side(n, True, 0), _side(n, False, 0), _side(n, True, 1), _side(n, False, 1)
  parts = (m0, o0, m1, o1)
  out = evaluate.Outputs(
      logits=np.concatenate([p.logits for p in parts])[None],
      labels=np.concatenate([p.labels for p in parts]).astype(np.int32),
      is_member=np.repeat([True, False, True, False], n),
      split=np.repeat(np.array([0, 0, 1, 1], np.int8), n), index=np.arange(4 * n))
  fields, scores = evaluate.audit(out, 0, C, ATTACK, seed)
  trial = workdir / "baseline-seed3"
  trial.mkdir(parents=True)
  evaluate.save_scores(trial / "scores.npz", out, 0, scores)
  (trial / "config.json").write_text(json.dumps({
      "seed": 0, "data": {"name": "digits"}, "model": {"name": "lenet5"},
      "attack": vars(ATTACK), "trial": {"name": trial.name, "method": "baseline",
                                        "seed": seed}}))
  return trial, fields


# --- a run's scores.npz ------------------------------------------------------------------


def test_a_runs_scores_npz_audited_again_gives_the_runs_own_record(tmp_path):
  trial, run_fields = _trial(tmp_path / "run")
  proc = _run(trial / "scores.npz", "--out", tmp_path / "out")
  assert proc.returncode == 0, proc.stderr[-2000:]
  record = json.loads((tmp_path / "out" / "results.json").read_text())[0]
  # The same seed and attack settings (from the trial's config.json) on the same splits.
  for key in AUDIT_FIELDS:
    assert record[key] == run_fields[key], key
  assert (record["name"], record["method"], record["seed"]) == ("baseline-seed3", "baseline", 3)
  lines = proc.stdout.splitlines()
  assert lines[0] == ("audited baseline-seed3: logits and labels; split 0 (fit) 60 members + "
                      "60 non-members, split 1 (audit) 60 + 60; seed 3")
  assert lines[2].split() == ["attack", "split-0", "AUC", "audit", "AUC", "95%", "interval",
                              "audit", "acc"]
  assert [l.split()[0] for l in lines[4:11]] == list(ALL)
  assert lines[-1].startswith(f"wrote {tmp_path / 'out'}: results.json, results.csv, "
                              "audit.json, baseline-seed3/scores.npz, roc.png")
  written = json.loads((tmp_path / "out" / "audit.json").read_text())
  assert written["inputs"]["attack_settings_from"] == str(trial / "config.json")
  assert written["attacks_run"] == list(ALL) and written["attacks_not_run"] == {}


# --- plain arrays ------------------------------------------------------------------------


def test_members_and_non_members_are_cut_like_a_runs_splits():
  split_in, split_out = audit.halves(130, 100, seed=0)
  # Balanced: half the smaller side per split, as many of the other, the rest unused.
  for s in (split_in, split_out):
    assert (s == 0).sum() == (s == 1).sum() == 50
  assert (split_in == -1).sum() == 30 and (split_out == -1).sum() == 0
  again = audit.halves(130, 100, seed=0)
  assert all(np.array_equal(a, b) for a, b in zip(again, (split_in, split_out)))
  assert not np.array_equal(audit.halves(130, 100, seed=1)[0], split_in)


def test_plain_arrays_get_every_attack_and_a_workdir_report_can_read(tmp_path):
  result = audit.audit(_side(130, True, 0), _side(100, False, 0), seed=0, attack=ATTACK)
  r = result.record
  assert result.attacks_run == ALL and result.not_run == {}
  assert set(r["threshold_attacks"]) == set(ALL) - {"nn"}
  assert r["headline_attack"] == max(r["headline_selection"], key=r["headline_selection"].get)
  lo, hi = r["intervals"]["headline_auc"]
  assert lo <= r["headline_auc"] <= hi and r["headline_auc"] > 0.6
  assert (r["method"], r["split_seed"]) == ("external", 0)
  files = audit.write(result, tmp_path)
  assert files == ["results.json", "results.csv", "audit.json", "audit/scores.npz", "roc.png",
                   "fig4_gap_vs_attack.png"]
  with np.load(tmp_path / "audit" / "scores.npz") as f:
    assert f["is_member"].sum() == 100 and f["logits"].shape == (200, C)
    assert {f"score_{a}" for a in ALL} <= set(f.files)
  # OUT is a one-trial workdir: the run's report reads it.
  assert report.build(tmp_path)["figures"]["roc.png"] == "written"


def test_losses_alone_run_the_loss_attacks_and_say_which_did_not():
  members, nonmembers = _side(100, True, 0), _side(100, False, 0)
  from_logits = audit.audit(members, nonmembers, seed=0, attack=ATTACK).record
  with_labels = audit.audit(_losses(members), _losses(nonmembers), seed=0, attack=ATTACK)
  assert with_labels.attacks_run == ("loss", "loss_class")
  assert with_labels.not_run == {a: "needs logits" for a in ALL if "loss" not in a}
  r = with_labels.record
  # The loss is the loss: the same number from logits or from losses on the same split.
  for name in ("loss", "loss_class"):
    got, want = r["threshold_attacks"][name], from_logits["threshold_attacks"][name]
    assert got["tpr_at_fpr"] == pytest.approx(want.pop("tpr_at_fpr"))
    assert {k: v for k, v in got.items() if k != "tpr_at_fpr"} == pytest.approx(want)
  assert r["attack_auc"] is None and r["train_accuracy"] is None and r["per_class"] is None
  assert "the NN attack needs logits" in r["notes"][0]
  assert r["intervals"]["threshold_attacks"]["entropy"] is None
  bare = audit.audit(_losses(members, labels=False), _losses(nonmembers, labels=False),
                     seed=0, attack=ATTACK)
  assert bare.attacks_run == ("loss",) and bare.not_run["loss_class"] == "needs labels"
  assert "not run: needs labels" in audit.table(bare)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("members, nonmembers, message", [
    (audit.Side(logits=np.full((40, C), np.nan), labels=np.zeros(40, int)), None,
     "members: logits holds 160 non-finite values (NaN or inf); allowed: finite numbers"),
    (audit.Side(logits=np.zeros((40, C)), labels=np.zeros(39, int)), None,
     "members: labels have shape (39,), logits (40, 4); allowed: one label per example"),
    (audit.Side(logits=np.zeros((40, C)), labels=np.full(40, C)), None,
     "members: labels reach 4, logits have 4 classes; allowed: labels in 0..3"),
    (audit.Side(logits=np.zeros((40, C))), None, "members: logits without labels"),
    (audit.Side(logits=np.zeros((19, C)), labels=np.zeros(19, int)), None,
     "members: 19 examples; allowed: at least 20 on each side (10 to fit the attacks on, 10 "
     "to measure them)"),
    (None, audit.Side(losses=np.ones(40)),
     "members give logits and labels, non-members losses; allowed: the same kind of output "
     "for both"),
    (None, audit.Side(logits=np.zeros((40, C + 1)), labels=np.zeros(40, int)),
     "members' logits have 4 classes, non-members' 5; allowed: one model's logits, one width"),
])
def test_outputs_that_do_not_fit_together_are_one_user_error(members, nonmembers, message):
  members = members or _side(40, True, 0)
  nonmembers = nonmembers or _side(40, False, 0)
  with pytest.raises(UserError) as e:
    audit.examples(members, nonmembers)
  assert str(e.value).startswith(message)


def test_bad_files_are_one_line_and_exit_status_2(tmp_path):
  good = tmp_path / "good.npz"
  np.savez(good, logits=_side(40, True, 0).logits, labels=_side(40, True, 0).labels)
  nan = tmp_path / "nan.npz"
  np.savez(nan, losses=np.array([np.nan] + [1.0] * 39))
  short = tmp_path / "short.npy"
  np.save(short, np.ones(12))
  trial, _ = _trial(tmp_path / "run", n=12)
  cases = [
      (["--members", tmp_path / "nope.npz", "--nonmembers", good],
       f"error: --members={tmp_path / 'nope.npz'}: no such file; allowed: an .npz holding "
       "logits (N, C) and labels (N,), or losses (N,) and optionally labels (N,); or an .npy "
       "of losses (N,)"),
      (["--members", nan, "--nonmembers", nan],
       f"error: --members={nan}: losses holds 1 non-finite values (NaN or inf); allowed: "
       "finite numbers"),
      (["--members", short, "--nonmembers", short],
       "error: members: 12 examples; allowed: at least 20 on each side (10 to fit the attacks "
       "on, 10 to measure them)"),
      ([trial / "scores.npz", "--out", trial.parent],
       f"error: --out={trial.parent} holds files python -m miajax.audit did not write (a "
       "run's workdir?); allowed: a new or empty directory, or an earlier audit's"),
  ]
  for args, line in cases:
    if "--out" not in args:
      args = [*args, "--out", tmp_path / "out"]
    proc = _run(*args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [line]
  assert not (tmp_path / "out").exists()


def test_a_scores_npz_with_a_short_split_is_refused(tmp_path):
  trial, _ = _trial(tmp_path, n=12)
  with np.load(trial / "scores.npz") as f:
    arrays = dict(f.items())
  drop = np.flatnonzero(arrays["is_member"] & (arrays["split"] == 1))[:5]
  keep = np.setdiff1d(np.arange(len(arrays["split"])), drop)
  np.savez(trial / "scores.npz", **{k: v[keep] for k, v in arrays.items()})
  with pytest.raises(UserError, match=r"split 1 holds 7 members; allowed: at least 10 members "
                     r"and 10 non-members in each split"):
    audit.load_scores(trial)
