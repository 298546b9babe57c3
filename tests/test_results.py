"""The results schema and the printed comparison."""

import json

import numpy as np
import pytest
from scipy import stats

from miajax import audits
from miajax import results


def test_every_schema_field_is_present_and_uncomputed_ones_are_null():
  r = results.record(name="baseline-seed0", method="baseline", test_accuracy=0.9)
  assert list(r)[:len(results.FIELDS)] == list(results.FIELDS)
  assert r["attack_accuracy"] is None and r["dp_epsilon"] is None
  with pytest.raises(KeyError):
    results.record(name="x", made_up_metric=1.0)


def test_interval_is_the_95_percent_t_interval_over_seeds():
  values = [0.5, 0.6, 0.7]
  mean, half, n = results.mean_interval(values)
  assert n == 3 and mean == pytest.approx(0.6)
  assert half == pytest.approx(stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3))
  assert results.mean_interval([0.4]) == (0.4, None, 1)
  assert results.mean_interval([None]) == (None, None, 0)


def test_table_shows_mean_and_interval_per_method_and_dashes_for_null(tmp_path):
  recs = [results.record(name=f"{m}-seed{s}", method=m, test_accuracy=a, weights_nonzero=n)
          for m, s, a, n in [("baseline", 0, 0.90, 100), ("baseline", 1, 0.92, 100),
                             ("pruning", 0, 0.88, 10)]]
  text = results.table(recs)
  lines = text.splitlines()
  assert lines[0].split()[:3] == ["method", "seeds", "test"]
  assert "91.00±" in lines[2] and lines[2].split()[1] == "2"
  assert "88.00" in lines[3] and "-" in lines[3].split()
  results.write(tmp_path, recs)
  assert json.loads((tmp_path / "results.json").read_text()) == recs
  assert (tmp_path / "results.csv").read_text().splitlines()[0].startswith("name,method")


def _attack_record(name, method, seed, acc, auc, loss_auc, intervals=None):
  return results.record(
      name=name, method=method, seed=seed, test_accuracy=0.9, attack_accuracy=acc,
      attack_auc=auc, threshold_attacks={"loss": {"accuracy": 0.6, "auc": loss_auc}},
      intervals=intervals)


def test_table_says_what_each_interval_covers():
  bootstrap = {"attack_accuracy": [0.571, 0.633], "attack_auc": [0.58, 0.625],
               "threshold_attacks": {"loss": {"accuracy": [0.5, 0.7], "auc": [0.55, 0.6]}}}
  recs = [_attack_record("baseline-seed0", "baseline", 0, 0.60, 0.61, 0.58, bootstrap),
          _attack_record("baseline-seed1", "baseline", 1, 0.62, 0.63, 0.59, bootstrap),
          _attack_record("dp-seed0", "dp", 0, 0.5, 0.502, 0.51, bootstrap),
          _attack_record("pruning-seed0", "pruning", 0, 0.55, 0.56, 0.52)]
  lines = results.table(recs).splitlines()
  # The header and the rows keep their places; the captions follow the table.
  assert lines[0].split()[:2] == ["method", "seeds"] and lines[1].startswith("---")
  header = lines[0]
  for title in ("test acc", "attack acc", "attack AUC", "loss AUC"):
    assert title in header
  rows = {line.split()[0]: line for line in lines[2:5]}
  # Two seeds: mean ± t-interval over seeds, never a bootstrap interval.
  assert "61.00±" in rows["baseline"] and "[" not in rows["baseline"]
  # One seed: the trial's bootstrap interval over audit examples.
  assert "50.00 [57.10,63.30]" in rows["dp"]
  assert "0.502 [0.580,0.625]" in rows["dp"] and "0.510 [0.550,0.600]" in rows["dp"]
  # One seed without intervals (an older record): the value alone.
  assert "55.00" in rows["pruning"] and "±" not in rows["pruning"] and "[" not in rows["pruning"]
  captions = lines[5:7]
  assert captions == [results.SEEDS_CAPTION, results.BOOTSTRAP_CAPTION]
  assert lines[7:] == list(results.LEGEND)
  assert "over the seeds" in captions[0] and "training randomness only" in captions[0]
  assert "one membership split" in captions[0]
  assert "bootstrap" in captions[1] and "audit examples" in captions[1]


def test_table_captions_only_what_it_shows():
  one = [_attack_record("baseline-seed0", "baseline", 0, 0.6, 0.61, 0.58)]
  # header, rule, row, no interval: the legend alone
  assert results.table(one).splitlines()[3:] == list(results.LEGEND)
  two = one + [_attack_record("baseline-seed1", "baseline", 1, 0.62, 0.63, 0.59)]
  assert results.table(two).splitlines()[3:] == [results.SEEDS_CAPTION, *results.LEGEND]


def test_table_legend_says_what_chance_is_and_what_the_short_headers_mean():
  one = [_attack_record("baseline-seed0", "baseline", 0, 0.6, 0.61, 0.58)]
  legend = "\n".join(results.table(one).splitlines()[3:])
  assert "chance: 50% attack acc, 0.500 AUC" in legend
  assert "NN attack" in legend
  assert "loss AUC: a global loss-threshold attack's AUC" in legend
  assert "nonzero: nonzero prunable weights" in legend
  assert "best attack AUC: the audit-split AUC of the attack strongest on split 0" in legend
  assert "LiRA" not in legend                     # no LiRA columns, no LiRA line
  lira = [dict(one[0], lira={"online": {"auc": 0.6, "tpr_at_fpr": {"0.001": 0.01}}})]
  lira_legend, = audits.get("lira").legend
  assert results.table(lira).splitlines()[-1] == lira_legend
  assert max(len(line) for line in results.LEGEND + (lira_legend,)) <= 110


def test_new_attack_fields_are_in_the_schema():
  r = results.record(name="t", attack_accuracy_at_half=0.53, attack_epochs=12,
                     attack_threshold=0.47, intervals={"attack_auc": [0.5, 0.6]})
  assert r["attack_accuracy_at_half"] == 0.53 and r["attack_epochs"] == 12
  assert r["attack_threshold"] == 0.47 and r["intervals"] == {"attack_auc": [0.5, 0.6]}


def _headline_record(name, seed, attack, auc, nn_auc=0.55, loss_auc=0.58, intervals=None):
  return results.record(
      name=name, method=name.split("-")[0], seed=seed, test_accuracy=0.9, attack_auc=nn_auc,
      threshold_attacks={"loss": {"accuracy": 0.6, "auc": loss_auc}}, headline_attack=attack,
      headline_auc=auc, intervals=intervals)


def test_table_shows_the_headline_attack_and_its_auc_beside_the_nn_and_loss_aucs():
  recs = [_headline_record("baseline-seed0", 0, "loss_class", 0.64),
          _headline_record("baseline-seed1", 1, "loss_class", 0.66),
          _headline_record("baseline-seed2", 2, "nn", 0.65),
          _headline_record("pruning-seed0", 0, "loss", 0.59,
                           intervals={"headline_auc": [0.57, 0.61]})]
  lines = results.table(recs).splitlines()
  header = lines[0]
  assert header.index("attack AUC") < header.index("loss AUC") < header.index("best attack AUC")
  rows = {line.split()[0]: line for line in lines[2:4]}
  # Seeds may choose different attacks: each name with its count, most chosen first.
  assert "0.650±" in rows["baseline"] and "loss_class:2,nn:1" in rows["baseline"]
  # One seed: its AUC with the trial's bootstrap interval, and the attack's name.
  assert "0.590 [0.570,0.610] loss " in rows["pruning"]
  # Records without a headline (older runs, LiRA) show a dash.
  old = [_attack_record("dp-seed0", "dp", 0, 0.5, 0.502, 0.51)]
  row = results.table(old).splitlines()[2].split()
  assert row[5:8] == ["0.502", "0.510", "-"]     # attack AUC, loss AUC, best attack AUC


def test_headline_fields_are_in_the_schema():
  r = results.record(name="t", headline_attack="loss", headline_auc=0.6,
                     headline_accuracy=0.57, headline_tpr_at_fpr={"0.001": None, "0.01": 0.02},
                     headline_selection={"nn": 0.55, "loss": 0.6})
  assert r["headline_attack"] == "loss" and r["headline_selection"]["loss"] == 0.6


def test_a_run_with_a_split_per_trial_says_its_interval_covers_the_splits_sampling():
  def rec(seed, split_seed, auc):
    return results.record(name=f"baseline-seed{seed}", method="baseline", seed=seed,
                          attack_auc=auc, split_seed=split_seed)
  shared = results.table([rec(0, 0, 0.6), rec(1, 0, 0.7)])
  own = results.table([rec(0, [0, 0], 0.6), rec(1, [0, 1], 0.7)])
  assert results.SEEDS_CAPTION in shared and results.SPLITS_CAPTION not in shared
  assert results.SPLITS_CAPTION in own and results.SEEDS_CAPTION not in own


def test_an_audit_adds_its_columns_by_declaring_them(monkeypatch):
  """A registered audit's `columns` reach the printed table and report.json's comparison with
  no edit to results.py: a membership-split audit's after the model's accuracies and before
  the headline, with the trial's bootstrap interval; a LiRA audit's last, only where measured,
  with its legend."""
  def get_margin(r):
    return (r.get("margin_audit") or {}).get("auc")

  splits_audit = audits.Audit(
      name="margin_column_test", title="test", score=lambda logits, labels: logits[:, 0],
      columns=(audits.audit.Column(
          "margin AUC", get_margin, "f3",
          interval=lambda r: (r.get("margin_audit") or {}).get("interval")),))
  lira_audit = audits.Audit(
      name="lira_column_test", title="test", layout="lira", run=lambda t, rng: None,
      fields=("lira_test",), columns=(audits.audit.Column(
          "shadow AUC", lambda r: (r.get("lira_test") or {}).get("auc"), "f3"),),
      legend=("shadow AUC: a test audit's",))
  monkeypatch.setattr(audits, "_REGISTRY", dict(audits._REGISTRY))
  monkeypatch.setattr(audits, "NAMES", audits.NAMES)
  audits.register(splits_audit)
  audits.register(lira_audit)
  one = dict(_attack_record("baseline-seed0", "baseline", 0, 0.6, 0.61, 0.58),
             margin_audit={"auc": 0.655, "interval": [0.6, 0.7]})
  header = results.table([one]).splitlines()[0].split("  ")
  header = [h.strip() for h in header if h.strip()]
  assert header.index("loss AUC") < header.index("margin AUC") < header.index("best attack AUC")
  assert "0.655 [0.600,0.700]" in results.table([one])
  assert "shadow AUC" not in results.table([one])        # no record measured it
  measured = dict(one, lira_test={"auc": 0.7})
  lines = results.table([measured]).splitlines()
  assert lines[0].split()[-2:] == ["shadow", "AUC"] and lines[-1] == "shadow AUC: a test audit's"
  from miajax import report  # pylint: disable=g-import-not-at-top
  row = report.comparison([one])["baseline"]
  assert row["margin AUC"]["values"] == [0.655]
