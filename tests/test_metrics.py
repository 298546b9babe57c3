"""Tests for miajax.metrics: ROC summaries against scikit-learn, gain, scores, attacks."""

import math

import numpy as np
import optax
import pytest
import scipy.special
import scipy.stats
from sklearn import metrics as skm

from miajax import metrics
from miajax.errors import UserError


def _random_case(seed):
  """Scores with many ties (few distinct values) and unbalanced random membership."""
  rng = np.random.default_rng(seed)
  n = int(rng.integers(20, 400))
  levels = int(rng.integers(2, 12))
  scores = rng.integers(0, levels, n) + (rng.normal(size=n) if seed % 3 == 0 else 0.0)
  is_member = rng.random(n) < rng.uniform(0.2, 0.8)
  is_member[:2] = [True, False]
  return scores.astype(np.float64), is_member


@pytest.mark.parametrize("seed", range(12))
def test_roc_auc_matches_sklearn(seed):
  scores, is_member = _random_case(seed)
  assert metrics.roc_auc(scores, is_member) == pytest.approx(
      skm.roc_auc_score(is_member, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_tpr_at_fpr_matches_sklearn_strictly_below_the_rate(seed):
  scores, is_member = _random_case(seed)
  # drop_intermediate=False: the dropped collinear points can be the answer.
  fpr, tpr, _ = skm.roc_curve(is_member, scores, drop_intermediate=False)
  for target in (0.05, 0.1, 0.3, 1.0):
    if (~is_member).sum() > 1 / target:
      assert metrics.tpr_at_fpr(scores, is_member, target) == pytest.approx(
          tpr[fpr < target].max(), abs=1e-12)


def test_tpr_at_fpr_never_counts_the_point_at_the_rate():
  # Two non-members in twenty above every member: FPR 0.1 exactly, TPR 1 there.
  scores = np.concatenate([np.full(10, 1.0), [2.0, 2.0], np.zeros(18)])
  is_member = np.array([True] * 10 + [False] * 20)
  assert metrics.tpr_at_fpr(scores, is_member, 0.1) == 0.0
  assert metrics.tpr_at_fpr(scores, is_member, 0.11) == 1.0


@pytest.mark.parametrize("nonmembers,measured", [(999, False), (1000, False), (1001, True)])
def test_tpr_at_fpr_needs_more_than_one_over_the_rate_non_members(nonmembers, measured):
  """An FPR strictly below 0.001 allows a false positive only with more than 1,000
  non-members: at exactly 1,000 one false positive is already 0.001, and the figure would be
  "TPR at no false positive"; it is null, with a note, until floor(1/rate) + 1 = 1,001."""
  rng = np.random.default_rng(0)
  n = 2 * nonmembers
  scores, is_member = rng.normal(size=n), np.arange(n) % 2 == 0
  assert (~is_member).sum() == nonmembers
  assert (metrics.tpr_at_fpr(scores, is_member, 0.001) is not None) == measured
  assert metrics.tpr_at_fpr(scores, is_member, 0.01) is not None
  values, notes = metrics.tpr_report(scores, is_member)
  assert (values["0.001"] is not None) == measured and values["0.01"] is not None
  if measured:
    assert notes == []
  else:
    assert notes == [f"TPR at FPR 0.001: null, {nonmembers} non-members were scored; an FPR "
                     "below 0.001 needs at least 1001"]


@pytest.mark.parametrize("fpr,least", [(0.01, 101), (0.05, 21), (0.1, 11), (0.3, 4),
                                       (0.25, 5), (1.0, 2), (0.003, 334)])
def test_min_nonmembers_is_the_fewest_that_allow_one_false_positive_below_the_rate(fpr, least):
  assert metrics.min_nonmembers(fpr) == least
  assert 1 / least < fpr <= 1 / (least - 1)


def test_tpr_at_fpr_never_splits_a_tie():
  # A member tied with two of three non-members: the tie enters whole, at FPR 2/3.
  scores = np.array([1.0, 1.0, 1.0, 0.0, 0.0])
  is_member = np.array([True, False, False, True, False])
  assert metrics.tpr_at_fpr(scores, is_member, 0.5) == 0.0
  assert metrics.tpr_at_fpr(scores, is_member, 0.67) == 0.5
  assert metrics.roc_auc(scores, is_member) == pytest.approx(2.5 / 6)


def test_balanced_accuracy():
  is_member = np.array([True, True, True, False])
  assert metrics.balanced_accuracy(is_member, is_member) == 1.0
  assert metrics.balanced_accuracy(~is_member, is_member) == 0.0
  assert metrics.balanced_accuracy(np.ones(4, bool), is_member) == 0.5
  # TPR 2/3, TNR 1: the 3:1 imbalance does not weigh members more.
  pred = np.array([True, True, False, False])
  assert metrics.balanced_accuracy(pred, is_member) == pytest.approx((2 / 3 + 1) / 2)
  assert metrics.balanced_accuracy(pred, is_member) == pytest.approx(
      skm.balanced_accuracy_score(is_member, pred))


def test_gain_sign_conventions_eq1():
  is_member = np.array([True] * 50 + [False] * 50)
  perfect = is_member.astype(np.float64)
  # Eq. 1 is a sum of log-probabilities: <= 0, 0 for a perfect attacker, log(1/4) for a coin.
  assert -1e-6 < metrics.empirical_gain(perfect, is_member) <= 0.0
  assert metrics.empirical_gain(np.full(100, 0.5), is_member) == pytest.approx(
      math.log(0.25), abs=1e-12)
  # Certainly wrong is finite (clipped) and far below the coin.
  wrong = metrics.empirical_gain(1.0 - perfect, is_member)
  assert np.isfinite(wrong) and wrong < 2 * math.log(0.25)
  # A better attacker has a larger gain; group means, so the balance does not matter.
  p = np.where(is_member, 0.8, 0.3)
  assert metrics.empirical_gain(p, is_member) == pytest.approx(math.log(0.8) + math.log(0.7))
  assert metrics.empirical_gain(p[:60], is_member[:60]) == pytest.approx(
      math.log(0.8) + math.log(0.7))


def test_js_from_gain_eq10():
  # Eq. 10: G* = -log 4 + 2 JS, so JS = 0 at the coin and log 2 (its maximum) at G = 0.
  assert metrics.js_from_gain(-math.log(4.0)) == pytest.approx(0.0, abs=1e-15)
  assert metrics.js_from_gain(0.0) == pytest.approx(math.log(2.0))
  assert metrics.js_from_gain(-1.0) == pytest.approx((-1.0 + math.log(4.0)) / 2)


def _logits(seed, n=64, c=7, scale=3.0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, c)) * scale, rng.integers(0, c, n)


def test_loss_and_confidence_scores():
  logits, labels = _logits(0)
  ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
  np.testing.assert_allclose(metrics.loss_score(logits, labels), -ce, rtol=1e-6, atol=1e-6)
  probs = scipy.special.softmax(logits, axis=1)
  # Salem et al.'s label-free confidence: the top probability, whatever the label.
  np.testing.assert_allclose(metrics.confidence_score(logits, labels), probs.max(axis=1),
                             rtol=1e-12)
  np.testing.assert_array_equal(metrics.confidence_score(logits, labels),
                                metrics.confidence_score(logits, (labels + 1) % 7))
  # Stable for extreme logits.
  big = np.array([[1000.0, 0.0], [0.0, 1000.0]])
  s = metrics.loss_score(big, np.array([0, 0]))
  np.testing.assert_allclose(s, [0.0, -1000.0])
  np.testing.assert_allclose(metrics.confidence_score(big, np.array([0, 0])), [1.0, 1.0])


def test_confidence_is_not_a_monotone_function_of_the_loss():
  # Confidently wrong: low loss score, high confidence. Unsure but right: the reverse.
  logits = np.array([[5.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
  labels = np.array([1, 0])
  loss = metrics.loss_score(logits, labels)
  confidence = metrics.confidence_score(logits, labels)
  assert loss[0] < loss[1] and confidence[0] > confidence[1]
  # So the two attacks rank examples differently: their AUCs differ on the same data.
  is_member = np.array([True, False])
  assert metrics.roc_auc(loss, is_member) == 0.0
  assert metrics.roc_auc(confidence, is_member) == 1.0


def test_logit_score_is_log_odds_of_the_label_probability():
  logits, labels = _logits(3)
  p = scipy.special.softmax(logits, axis=1)[np.arange(64), labels]
  phi = metrics.logit_score(logits, labels)
  np.testing.assert_allclose(phi, np.log(p) - np.log1p(-p), rtol=1e-9, atol=1e-9)
  # Where nothing saturates it orders the examples exactly as the loss does.
  np.testing.assert_array_equal(np.argsort(phi), np.argsort(metrics.loss_score(logits, labels)))
  # Finite for any finite logits: certain right and certain wrong.
  extreme = metrics.logit_score(np.array([[1000.0, 0.0, 0.0], [0.0, 1000.0, 0.0]]),
                                np.array([0, 0]))
  np.testing.assert_allclose(extreme, [1000.0 - math.log(2.0), -1000.0])


def test_logit_score_splits_ties_the_saturated_loss_cannot():
  # Margins of 40 and 50 nats: the float64 log-softmax of the label rounds to exactly 0 for
  # both, so the loss ties them; phi is about the margin and still orders them.
  logits = np.array([[50.0, 0.0, 0.0], [40.0, 0.0, 0.0], [38.0, 0.0, 0.0], [30.0, 0.0, 0.0]])
  labels = np.zeros(4, np.int64)
  loss = metrics.loss_score(logits, labels)
  phi = metrics.logit_score(logits, labels)
  assert loss[0] == loss[1] == loss[2] == 0.0 and loss[3] < 0.0
  np.testing.assert_allclose(phi, [50 - math.log(2), 40 - math.log(2), 38 - math.log(2),
                                   30 - math.log(2)])
  # Members at the two largest margins: phi separates them from the 38-nat non-member, the
  # loss cannot (a tie counts one half), and no loss threshold can split the three.
  is_member = np.array([True, True, False, False])
  assert metrics.roc_auc(phi, is_member) == 1.0
  assert metrics.roc_auc(loss, is_member) == 0.75
  top = slice(0, 3)
  assert metrics.threshold_attack(phi[top], is_member[top], phi[top],
                                  is_member[top])["accuracy"] == 1.0
  assert metrics.threshold_attack(loss[top], is_member[top], loss[top],
                                  is_member[top])["accuracy"] == 0.5


def test_modified_entropy_matches_definition():
  logits, labels = _logits(1)
  p = scipy.special.softmax(logits, axis=1)
  rows = np.arange(labels.size)
  py = p[rows, labels]
  others = p * np.log(1 - p)
  others[rows, labels] = 0.0
  mentr = -(1 - py) * np.log(py) - others.sum(axis=1)
  np.testing.assert_allclose(metrics.modified_entropy_score(logits, labels), -mentr,
                             rtol=1e-9, atol=1e-12)


def test_modified_entropy_extremes():
  logits = np.array([
      [30.0, 0.0, 0.0],    # confident, correct
      [2.0, 1.0, 0.0],     # unsure, correct
      [0.0, 0.0, 0.0],     # uniform
      [0.0, 30.0, 0.0],    # confident, wrong
      [0.0, 1000.0, 0.0],  # certain, wrong: exp underflows, the score must not
      [1000.0, 0.0, 0.0],  # certain, correct
  ])
  labels = np.zeros(6, np.int64)
  s = metrics.modified_entropy_score(logits, labels)
  assert np.isfinite(s).all()
  assert s[0] == pytest.approx(0.0, abs=1e-10) and s[5] == pytest.approx(0.0, abs=1e-10)
  assert s.max() <= 0.0
  assert s[0] > s[1] > s[2] > s[3] > s[4]
  assert s[3] < -25.0 and s[4] < -900.0
  # Plain entropy cannot tell the confident-correct from the confident-wrong; Mentr can.
  assert s[3] < s[2] - 20.0


def _brute_force_best(scores, is_member):
  cands = np.unique(scores)
  return max(metrics.balanced_accuracy(scores >= t, is_member) for t in cands)


@pytest.mark.parametrize("seed", range(4))
def test_threshold_attack_maximises_train_balanced_accuracy(seed):
  rng = np.random.default_rng(seed)
  n = 300
  is_member = rng.random(n) < 0.4
  scores = np.round(rng.normal(size=n) + 0.8 * is_member, 1)
  out = metrics.threshold_attack(scores, is_member, scores, is_member)
  assert set(out) == {"accuracy", "auc", "threshold"}
  assert out["accuracy"] == pytest.approx(_brute_force_best(scores, is_member))
  assert out["auc"] == pytest.approx(skm.roc_auc_score(is_member, scores))


def test_threshold_attack_separable_and_midpoint():
  train = np.array([0.0, 1.0, 2.0, 10.0, 11.0, 12.0])
  train_m = np.array([False, False, False, True, True, True])
  audit = np.array([5.0, 7.0, -1.0, 13.0])
  audit_m = np.array([False, True, False, True])
  out = metrics.threshold_attack(train, train_m, audit, audit_m)
  assert out["threshold"] == 6.0
  assert out["accuracy"] == 1.0 and out["auc"] == 1.0


def _two_scale_classes(rng, n):
  """Class 0 scores around 0, class 1 around 10; within each class members sit 1 higher."""
  labels = rng.integers(0, 2, n)
  is_member = rng.random(n) < 0.5
  scores = 10.0 * labels + is_member + 0.3 * rng.normal(size=n)
  return scores, is_member, labels


def test_class_thresholds_beat_a_global_threshold_when_class_scales_differ():
  rng = np.random.default_rng(0)
  train, audit = _two_scale_classes(rng, 2000), _two_scale_classes(rng, 2000)
  by_class = metrics.class_threshold_attack(*train, *audit, num_classes=2)
  overall = metrics.threshold_attack(train[0], train[1], audit[0], audit[1])
  # Within a class the groups are 1 apart at noise 0.3: about 95% separable. One threshold
  # for both classes can serve only one of them.
  assert by_class["accuracy"] > 0.9
  assert overall["accuracy"] < 0.8
  assert by_class["auc"] > overall["auc"] + 0.1
  np.testing.assert_allclose(by_class["thresholds"], [0.5, 10.5], atol=0.1)
  assert not by_class["fallback"].any()


def test_class_thresholds_each_maximise_their_class_balanced_accuracy():
  rng = np.random.default_rng(1)
  scores, is_member, labels = _two_scale_classes(rng, 600)
  scores = np.round(scores, 1)
  thresholds, _ = metrics.class_thresholds(scores, is_member, labels, 2)
  for c in range(2):
    sel = labels == c
    assert metrics.balanced_accuracy(scores[sel] >= thresholds[c], is_member[sel]) == \
        pytest.approx(_brute_force_best(scores[sel], is_member[sel]))


def test_class_without_members_or_non_members_falls_back_to_the_global_threshold():
  scores = np.array([0.0, 1.0, 2.0, 3.0, 5.0, 6.0, 7.0])
  is_member = np.array([False, True, False, True, True, True, True])
  labels = np.array([0, 0, 1, 1, 2, 2, 2])      # class 2: members only; class 3: absent
  thresholds, fallback = metrics.class_thresholds(scores, is_member, labels, 4)
  global_threshold = metrics.fit_threshold(scores, is_member)
  assert fallback.tolist() == [False, False, True, True]
  assert thresholds[2] == thresholds[3] == global_threshold
  assert thresholds[0] == 0.5 and thresholds[1] == 2.5
  # An audit example of the unseen class is judged by the global threshold.
  out = metrics.class_threshold_attack(scores, is_member, labels, np.array([1.0, 7.0]),
                                       np.array([False, True]), np.array([3, 3]), 4)
  assert out["accuracy"] == (1.0 if global_threshold > 1.0 else 0.5)


def _gaussian_scores(rng, n, shift):
  is_member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
  return rng.normal(size=2 * n) + shift * is_member, is_member


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_examples():
  rng = np.random.default_rng(0)
  widths = []
  for n in (250, 2500):
    scores, is_member = _gaussian_scores(rng, n, 0.5)
    pred = scores >= 0.25
    out = metrics.bootstrap_intervals(scores, is_member, pred, replicates=400, seed=1)
    point = {"auc": metrics.roc_auc(scores, is_member),
             "accuracy": metrics.balanced_accuracy(pred, is_member)}
    for key, value in point.items():
      lo, hi = out[key]
      assert lo < value < hi, key
    tpr, _ = metrics.tpr_report(scores, is_member)
    for f in ("0.001", "0.01"):
      if tpr[f] is None:   # 250 non-members cannot measure an FPR below 0.1%: no interval
        assert n == 250 and f == "0.001" and out["tpr_at_fpr"][f] is None
      else:
        lo, hi = out["tpr_at_fpr"][f]
        assert lo <= tpr[f] <= hi
    widths.append(out["auc"][1] - out["auc"][0])
  # Width ~ 1/sqrt(n): ten times the examples, about a third of the width.
  assert widths[1] < 0.45 * widths[0]
  # Seeded: the same seed gives the same interval.
  assert metrics.bootstrap_intervals(scores, is_member, pred, replicates=400, seed=1) == out


def test_bootstrap_replicate_statistics_match_the_plain_metrics():
  # With every weight 1 the vectorised per-replicate AUC and TPR are the sample's own.
  scores, is_member = _random_case(3)
  order = np.argsort(-scores, kind="stable")
  levels = np.concatenate([[0], np.cumsum(np.diff(scores[order]) != 0)])
  w_in = is_member[order][None].astype(float)
  w_out = (~is_member[order])[None].astype(float)
  auc, tpr = metrics._weighted_roc_stats(levels, w_in, w_out, is_member.sum(),
                                         (~is_member).sum(), (0.05, 0.1, 0.3))
  assert auc[0] == pytest.approx(metrics.roc_auc(scores, is_member), abs=1e-12)
  for f in (0.05, 0.1, 0.3):
    if (~is_member).sum() > 1 / f:
      assert tpr[f][0] == pytest.approx(metrics.tpr_at_fpr(scores, is_member, f), abs=1e-12)


def test_bootstrap_auc_interval_covers_the_true_auc_about_95_percent_of_the_time():
  # Members N(d, 1), non-members N(0, 1): the population AUC is Phi(d / sqrt 2). Over 200
  # independent samples the 95% interval should miss it about 10 times (sd ~3).
  d = 0.5
  true_auc = scipy.stats.norm.cdf(d / math.sqrt(2.0))
  rng = np.random.default_rng(0)
  covered = 0
  for rep in range(200):
    scores, is_member = _gaussian_scores(rng, 100, d)
    lo, hi = metrics.bootstrap_intervals(scores, is_member, replicates=200, seed=rep)["auc"]
    covered += lo <= true_auc <= hi
  assert 0.89 <= covered / 200 <= 0.99


def test_per_class():
  out = metrics.per_class(
      train_correct=np.array([1, 1, 1, 0], bool), train_labels=np.array([0, 0, 1, 1]),
      test_correct=np.array([1, 0, 0], bool), test_labels=np.array([0, 0, 1]),
      attack_pred=np.array([1, 0, 1, 0, 1], bool),
      attack_is_member=np.array([1, 1, 0, 0, 1], bool),
      attack_labels=np.array([0, 0, 0, 0, 1]), num_classes=3)
  assert set(out) == {"0", "1", "2"}
  assert out["0"] == {"train_accuracy": 1.0, "test_accuracy": 0.5, "gap": 0.5,
                      "attack_accuracy": 0.5}
  assert out["1"]["train_accuracy"] == 0.5 and out["1"]["test_accuracy"] == 0.0
  assert out["1"]["gap"] == 0.5
  assert out["1"]["attack_accuracy"] is None  # members only
  assert out["2"] == {"train_accuracy": None, "test_accuracy": None, "gap": None,
                      "attack_accuracy": None}


@pytest.mark.parametrize("call, field", [
    (lambda: metrics.roc_auc([0.1, 0.2], [True, True]), "is_member"),
    (lambda: metrics.roc_auc([0.1, 0.2, 0.3], [True, False]), "is_member"),
    (lambda: metrics.roc_auc([0.1, np.nan], [True, False]), "scores"),
    (lambda: metrics.tpr_at_fpr([0.1, 0.2], [True, False], 1.5), "fpr"),
    (lambda: metrics.tpr_at_fpr([0.1, 0.2], [True, False], 0.0), "fpr"),
    (lambda: metrics.empirical_gain([0.5, 1.2], [True, False]), "p_member"),
    (lambda: metrics.balanced_accuracy([0.3, 1.0], [True, False]), "pred_member"),
    (lambda: metrics.loss_score(np.zeros((2, 3)), np.array([0, 3])), "labels"),
    (lambda: metrics.loss_score(np.zeros((2,)), np.array([0, 1])), "logits"),
    (lambda: metrics.logit_score(np.zeros((2, 3)), np.array([0, 3])), "labels"),
    (lambda: metrics.class_thresholds([0.1, 0.2], [True, False], [0, 5], 2), "labels"),
    (lambda: metrics.class_thresholds([0.1, 0.2], [True, False], [0, 1], 0), "num_classes"),
    (lambda: metrics.bootstrap_intervals([0.1, 0.2], [True, False], replicates=1),
     "replicates"),
    (lambda: metrics.bootstrap_intervals([0.1, 0.2], [True, False], [True], replicates=9),
     "predicted"),
])
def test_bad_input_raises_user_error(call, field):
  with pytest.raises(UserError, match=field):
    call()
