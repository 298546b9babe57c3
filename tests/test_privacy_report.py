"""The privacy-utility picture of the report: every group on the empirical-epsilon scale, the
DP-SGD audit flagged where a bound exceeds the accounted epsilon, and the equal-accuracy
sentence taken at the closest pair."""

import numpy as np
import pytest

from miajax import epsilon
from miajax import privacy


def _record(name, method, acc, tp, fp, one_run, dp_epsilon=None, group=None, n=100):
  details = {"level": 0.95, "delta": 1e-5, "members": n, "nonmembers": n, "tp": tp, "fp": fp}
  bound = float(epsilon.counts_bound(tp, n, fp, n, 1e-5))
  return {"name": name, "method": method, "group": group or method, "test_accuracy": acc,
          "dp_epsilon": dp_epsilon, "epsilon_lower_bound": bound,
          "epsilon_lower_bound_one_run": one_run, "headline_tpr_at_fpr": {"0.001": 0.01},
          "epsilon_audit": {"canaries": details, "ordinary": None}}


RECORDS = [
    _record("baseline-seed0", "baseline", 0.85, 60, 1, 2.0),
    _record("pruning-keep0.10-seed0", "pruning", 0.84, 30, 2, 0.9, group="pruning-keep0.10"),
    _record("pruning-keep0.05-seed0", "pruning", 0.80, 20, 3, 0.5, group="pruning-keep0.05"),
    _record("dp-eps1.00-seed0", "dp", 0.70, 5, 4, 0.0, dp_epsilon=1.0, group="dp-eps1.00"),
    _record("dp-eps8.00-seed0", "dp", 0.79, 40, 1, 1.5, dp_epsilon=8.0, group="dp-eps8.00"),
    {"name": "minmax-seed0", "method": "minmax", "test_accuracy": 0.8},   # no epsilon audit
]


def test_every_audited_group_is_on_the_scale_with_its_bound_and_interval():
  pts = privacy.points(RECORDS)
  assert list(pts) == ["baseline", "pruning-keep0.10", "pruning-keep0.05", "dp-eps1.00",
                       "dp-eps8.00"]
  p = pts["pruning-keep0.10"]
  assert p["epsilon_lower_bound"]["mean"] == RECORDS[1]["epsilon_lower_bound"]
  lo, hi = p["epsilon_intervals"][0]
  assert lo == pytest.approx(RECORDS[1]["epsilon_lower_bound"]) and hi > lo
  assert pts["baseline"]["within_accounted"] is None
  assert pts["dp-eps1.00"]["within_accounted"] is True
  text = privacy.table(pts)
  assert "pruning-keep0.10" in text and "within" in text and "minmax" not in text


def test_a_dp_trial_whose_bound_exceeds_its_accounted_epsilon_is_flagged():
  broken = [_record("dp-seed0", "dp", 0.8, 90, 0, 3.0, dp_epsilon=1.0)]
  pts = privacy.points(broken)
  assert pts["dp"]["within_accounted"] is False
  assert "EXCEEDED" in privacy.table(pts)


def test_the_sentence_compares_the_pruning_and_dp_groups_closest_in_test_accuracy():
  sentence = privacy.comparison(privacy.points(RECORDS))
  assert sentence.startswith("at equal test accuracy (pruning-keep0.05 80.00% vs dp-eps8.00 "
                             "79.00%")
  b = RECORDS[2]["epsilon_lower_bound"]
  assert f"pruning's empirical epsilon is {b:.2f}" in sentence
  assert privacy.comparison(privacy.points(RECORDS[:3])) == ""


def test_the_figure_is_written(tmp_path):
  from miajax import report
  privacy.plot(privacy.points(RECORDS), tmp_path / "p.png", report._pyplot)  # pylint: disable=protected-access
  assert (tmp_path / "p.png").stat().st_size > 0
  assert np.isfinite(privacy.points(RECORDS)["baseline"]["epsilon_lower_bound"]["mean"])
