"""Paired comparisons against the baseline of the same seed and split: pairing, the t-interval
and the exact p-values, checked against direct computations."""

import itertools

import numpy as np
import pytest
from scipy import stats

from miajax import paired


def _record(method, seed, auc, acc=0.9, split_seed=None, group=None):
  return {"name": f"{method}-seed{seed}", "method": method, "group": group, "seed": seed,
          "split_seed": [0, seed] if split_seed is None else split_seed,
          "test_accuracy": acc, "attack_auc": auc, "headline_auc": auc,
          "headline_tpr_at_fpr": {"0.001": None}}


def test_each_trial_is_paired_with_the_baseline_of_its_seed_and_split_only():
  records = ([_record("baseline", s, 0.7) for s in range(3)]
             + [_record("pruning", s, 0.6) for s in (2, 0, 1, 7)]           # 7: no baseline
             + [_record("minmax", 0, 0.6, split_seed=[0, 99])])             # another split
  ps = paired.pairs(records)
  assert [(b["seed"], r["seed"]) for b, r in ps["pruning"]] == [(0, 0), (1, 1), (2, 2)]
  assert ps["minmax"] == []
  assert paired.compare(records)["pruning"]["pairs"] == 3
  assert paired.compare([_record("pruning", 0, 0.6)]) == {}     # no baseline: nothing


def test_the_sign_flip_p_value_counts_sign_patterns_at_least_as_extreme():
  # All three differences positive: only the all-+ and all-- patterns reach |mean| = 2.
  assert paired.sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)
  d = np.array([0.3, -0.1, 0.2, 0.25, 0.05])
  count = sum(abs(np.mean(np.array(s) * d)) >= abs(d.mean()) - 1e-12
              for s in itertools.product((1, -1), repeat=5))
  assert paired.sign_flip_p(d) == pytest.approx(count / 32)
  # Beyond EXACT_UP_TO pairs a seeded sample: a strong shift is still far below 0.01.
  assert paired.sign_flip_p(np.full(30, 0.1) + np.linspace(-0.01, 0.01, 30)) < 1e-3


def test_the_sign_test_is_an_exact_binomial_on_the_nonzero_signs():
  assert paired.sign_test_p([-0.1] * 5) == pytest.approx(2 / 32)
  assert paired.sign_test_p([-0.1, 0.0, 0.2]) == pytest.approx(1.0)
  assert paired.sign_test_p([0.0, 0.0]) == 1.0


def test_the_interval_is_the_t_interval_of_the_differences():
  rng = np.random.default_rng(0)
  base = rng.uniform(0.6, 0.7, 6)
  drop = rng.normal(-0.05, 0.02, 6)
  records = ([_record("baseline", s, a) for s, a in enumerate(base)]
             + [_record("pruning", s, a + d) for s, (a, d) in enumerate(zip(base, drop))])
  s = paired.compare(records)["pruning"]["attack_auc"]
  lo, hi = stats.t.interval(0.95, 5, loc=drop.mean(), scale=stats.sem(drop))
  assert s["mean"] == pytest.approx(drop.mean())
  assert s["half"] == pytest.approx((hi - lo) / 2)
  assert s["down"] == int(np.sum(drop < 0)) and s["n"] == 6


def test_a_missing_metric_leaves_its_pair_out_of_that_metric_only():
  records = [_record("baseline", 0, 0.7), _record("baseline", 1, 0.7),
             _record("pruning", 0, 0.6), _record("pruning", 1, None)]
  c = paired.compare(records)["pruning"]
  assert c["attack_auc"]["n"] == 1 and c["test_accuracy"]["n"] == 2
  assert c["headline_tpr_at_0.001"]["mean"] is None


def test_the_table_says_what_its_interval_covers():
  shared = [_record("baseline", s, 0.7, split_seed=0) for s in range(3)] + [
      _record("pruning", s, 0.6, split_seed=0) for s in range(3)]
  text = paired.table(paired.compare(shared))
  assert "training randomness only" in text and "pruning" in text
  assert "-0.100" in text and "p=0.25 (3-,0+)" in text
  own = [_record("baseline", s, 0.7) for s in range(3)] + [
      _record("pruning", s, 0.6) for s in range(3)]
  assert "split's sampling too" in paired.table(paired.compare(own))


def test_the_matched_control_is_the_one_nearest_in_split_0_gap_and_reads_no_audit_field():
  def rec(method, group, seed, train, test):
    r = _record(method, seed, 0.6, group=group)
    r |= {"selection_train_accuracy": train, "selection_accuracy": test,
          "test_accuracy": None, "attack_auc": None, "train_accuracy": None}
    return r
  records = [rec("baseline", None, s, 1.00, 0.84) for s in range(2)]
  records += [rec("pruning", "pruning-keeppaper", s, 0.97, 0.84) for s in range(2)]  # gap 13
  records += [rec("regularised", "regularised-wd1e-04", s, 0.99, 0.84) for s in range(2)]
  records += [rec("regularised", "regularised-wd1e-03", s, 0.96, 0.84) for s in range(2)]
  m = paired.matched(records)
  assert list(m) == ["pruning-keeppaper"]
  assert m["pruning-keeppaper"]["control"] == "regularised-wd1e-03"
  assert m["pruning-keeppaper"]["gap"] == pytest.approx(0.13)
  assert paired.matched([r for r in records if r["method"] != "regularised"]) == {}


def test_the_controls_config_pairs_five_seeds_with_their_own_splits_and_both_controls():
  from miajax import config as config_lib
  from miajax import trials
  from miajax.configs import leaky_fashion_mnist_lenet5
  c = leaky_fashion_mnist_lenet5.get_config("controls")
  config_lib.validate(c)
  assert c.split_per_trial and len(c.seeds) >= 5 and "selection_gain" not in c.audits
  groups = {t.group or t.method for t in trials.make(c)}
  assert {"baseline", "pruning-keeppaper", "pruning-keep1.00"} <= groups
  assert sum(g.startswith("regularised-wd") for g in groups) == 3


def test_the_controls_parts_each_pair_with_the_baseline_and_together_are_the_whole():
  from miajax import config as config_lib
  from miajax import trials
  from miajax.configs import leaky_fashion_mnist_lenet5 as leaky

  def names(arg):
    c = leaky.get_config(arg)
    config_lib.validate(c)
    assert c.split_per_trial and c.seeds == (0, 1, 2, 3, 4)
    assert {"samia", "differencing", "grad_norm"} <= set(c.audits) and c.pruning.keep_dense
    return {t.name for t in trials.make(c)}

  whole = names("controls")
  parts = {p: names(p) for p in leaky.CONTROL_PARTS}
  for p, trial_names in parts.items():
    # Each part holds the baseline and pruning at the paper's rates of every seed, so its own
    # report pairs them; every part's trials are the whole's (the same names, the same seeds).
    for seed in range(5):
      assert {f"baseline-seed{seed}", f"pruning-keeppaper-seed{seed}"} <= trial_names, p
    assert trial_names <= whole, p
    assert len(trial_names) < len(whole), p
  assert set().union(*parts.values()) == whole
  assert any(n.startswith("pruning-keep1.00") for n in parts["controls_schedule"])
  assert any(n.startswith("regularised-wd") for n in parts["controls_l2"])
  assert any(n.startswith("narrow") for n in parts["controls_small"])
