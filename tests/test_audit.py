"""Tests for miajax.evaluate.audit: what is fit on split 0, what is measured on split 1."""

import types

import numpy as np
import pytest

from miajax import evaluate
from miajax import metrics
from miajax import results
from miajax.errors import UserError

C = 4
# On probabilities: `_outputs`' class-0 signal is linear in them, so the one-layer attack learns.
ATTACK = types.SimpleNamespace(kind="one_layer", epochs=30, batch_size=32, learning_rate=3e-2,
                               features="probs")
NAMES = {"loss", "confidence", "entropy", "logit", "loss_class", "entropy_class"}


def _outputs(seed=0, n=150):
  """Two splits of n members and n non-members; members' label logits sit higher, and so do
  their class-0 logits (a signal the one-layer attack, linear in the probabilities, can use)."""
  rng = np.random.default_rng(seed)
  is_member = np.tile(np.repeat([True, False], n), 2)
  split = np.repeat(np.array([0, 1], np.int8), 2 * n)
  labels = rng.integers(0, C, 4 * n).astype(np.int32)
  logits = rng.normal(size=(4 * n, C))
  logits[np.arange(4 * n), labels] += np.where(is_member, 3.0, 1.5) + rng.normal(size=4 * n)
  logits[:, 0] += 1.5 * is_member
  return evaluate.Outputs(logits=logits[None].astype(np.float32), labels=labels,
                          is_member=is_member, split=split, index=np.arange(4 * n))


def _perturb_split_1(out, seed=1):
  logits = out.logits.copy()
  test = out.split == 1
  logits[:, test] = 20.0 * np.random.default_rng(seed).normal(size=logits[:, test].shape)
  return evaluate.Outputs(logits, out.labels, out.is_member, out.split, out.index)


@pytest.fixture(scope="module")
def audited():
  out = _outputs()
  fields, scores = evaluate.audit(out, 0, C, ATTACK, seed=0)
  return out, fields, scores


def test_audit_reports_every_attack_with_its_scores_and_intervals(audited):
  out, fields, scores = audited
  assert set(fields["threshold_attacks"]) == NAMES
  assert set(scores) == {"score_nn"} | {f"score_{name}" for name in NAMES}
  for s in scores.values():
    assert s.shape == out.labels.shape and np.isfinite(s).all()
  assert 0 < fields["attack_epochs"] <= ATTACK.epochs
  assert 0.0 < fields["attack_threshold"] < 1.0
  test = out.split == 1
  # The headline accuracy is at the threshold chosen on split 0; p >= 0.5 is kept beside it.
  p = scores["score_nn"][test]
  assert fields["attack_accuracy"] == metrics.balanced_accuracy(
      p >= fields["attack_threshold"], out.is_member[test])
  assert fields["attack_accuracy_at_half"] == metrics.balanced_accuracy(
      p >= 0.5, out.is_member[test])
  # The member logits sit higher: every attack finds it.
  assert fields["attack_auc"] > 0.6
  for name in NAMES - {"confidence"}:
    assert fields["threshold_attacks"][name]["auc"] > 0.6, name
  intervals = fields["intervals"]
  for key in ("attack_accuracy", "attack_auc"):
    lo, hi = intervals[key]
    assert lo <= fields[key] <= hi, key
  for name in NAMES:
    for key in ("accuracy", "auc"):
      lo, hi = intervals["threshold_attacks"][name][key]
      assert lo <= fields["threshold_attacks"][name][key] <= hi, (name, key)
  # 150 audit non-members: a TPR below 1% FPR is measured, below 0.1% is not.
  assert intervals["attack_tpr_at_fpr"]["0.001"] is None
  assert fields["attack_tpr_at_fpr"]["0.001"] is None
  assert intervals["attack_tpr_at_fpr"]["0.01"] is not None
  # Every new field is in the results schema.
  record = results.record(name="t", **fields)
  for key in ("attack_accuracy_at_half", "attack_epochs", "attack_threshold", "intervals"):
    assert record[key] == fields[key]


def test_class_threshold_scores_are_the_score_minus_its_split_0_class_threshold(audited):
  out, fields, scores = audited
  fit, test = out.split == 0, out.split == 1
  for name, base in (("loss_class", "score_loss"), ("entropy_class", "score_entropy")):
    thresholds, _ = metrics.class_thresholds(scores[base][fit], out.is_member[fit],
                                             out.labels[fit], C)
    np.testing.assert_array_equal(scores[f"score_{name}"], scores[base] - thresholds[out.labels])
    assert fields["threshold_attacks"][name]["accuracy"] == metrics.balanced_accuracy(
        scores[f"score_{name}"][test] >= 0, out.is_member[test])
    assert fields["threshold_attacks"][name]["tpr_at_fpr"] == metrics.tpr_report(
        scores[f"score_{name}"][test], out.is_member[test])[0]


def test_nothing_is_chosen_from_split_1(audited):
  out, fields, scores = audited
  fields2, scores2 = evaluate.audit(_perturb_split_1(out), 0, C, ATTACK, seed=0)
  fit = out.split == 0
  # The attack's epochs and threshold, and every split-0 score (so every threshold fit on
  # split 0), are the same whatever split 1 holds.
  assert fields2["attack_epochs"] == fields["attack_epochs"]
  assert fields2["attack_threshold"] == fields["attack_threshold"]
  for key, s in scores.items():
    np.testing.assert_array_equal(scores2[key][fit], s[fit], err_msg=key)
  assert fields2["attack_auc"] != fields["attack_auc"]     # split 1 did change


def test_class_matching_leaves_equal_member_and_non_member_counts_per_class():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 5, 1000)
  members, nonmembers = np.arange(0, 400), np.arange(400, 1000)
  labels[members[:100]] = 4          # class 4 over-represented among members
  kept_in, kept_out = evaluate._class_matched(members, nonmembers, labels,
                                              np.random.default_rng(1))
  assert set(kept_in) <= set(members) and set(kept_out) <= set(nonmembers)
  count_in = np.bincount(labels[kept_in], minlength=5)
  count_out = np.bincount(labels[kept_out], minlength=5)
  np.testing.assert_array_equal(count_in, count_out)
  np.testing.assert_array_equal(count_in, np.minimum(np.bincount(labels[members], minlength=5),
                                                     np.bincount(labels[nonmembers], minlength=5)))


def test_split_0_chance_class_counts_do_not_become_a_class_prior_of_the_attack():
  # The outputs say nothing about membership, but split 0's class counts do: class 0 is half
  # of its members and a tenth of its non-members (chance draws, exaggerated). Split 1 has
  # the same class shares among members and non-members, as a stratified draw would. An
  # attack fit to split 0 as drawn learns "class 0 means member", which is no property of the
  # model; trained on equal class counts it has nothing to learn from the label.
  rng = np.random.default_rng(0)
  n = 200
  is_member = np.tile(np.repeat([True, False], n), 2)
  split = np.repeat(np.array([0, 1], np.int8), 2 * n)
  share = np.where(split == 1, 0.3, np.where(is_member, 0.5, 0.1))    # P(class 0)
  labels = np.where(rng.random(4 * n) < share, 0, rng.integers(1, C, 4 * n)).astype(np.int32)
  logits = rng.normal(size=(1, 4 * n, C)).astype(np.float32)
  out = evaluate.Outputs(logits, labels, is_member, split, np.arange(4 * n))
  _, scores = evaluate.audit(out, 0, C, ATTACK, seed=0)
  p = scores["score_nn"][split == 1]
  class_0 = labels[split == 1] == 0
  # The members' share of class 0 in split 0 is 0.5 / (0.5 + 0.1): a learnt prior puts the
  # class-0 scores about 0.3 above the rest.
  assert abs(p[class_0].mean() - p[~class_0].mean()) < 0.05


CANDIDATES = {"nn"} | NAMES


def test_headline_is_the_chosen_attacks_audit_numbers(audited):
  out, fields, scores = audited
  name = fields["headline_attack"]
  assert set(fields["headline_selection"]) == CANDIDATES
  # The headline is the candidate with the best split-0 AUC (ties to the first listed).
  selection = fields["headline_selection"]
  assert selection[name] == max(selection.values())
  # A global threshold needs no fit: its split-0 AUC is over all of split 0.
  fit, test = out.split == 0, out.split == 1
  assert selection["loss"] == metrics.roc_auc(scores["score_loss"][fit], out.is_member[fit])
  own = ({"auc": fields["attack_auc"], "accuracy": fields["attack_accuracy"]} if name == "nn"
         else fields["threshold_attacks"][name])
  assert fields["headline_auc"] == own["auc"]
  assert fields["headline_auc"] == metrics.roc_auc(scores[f"score_{name}"][test],
                                                   out.is_member[test])
  assert fields["headline_accuracy"] == own["accuracy"]
  tpr, _ = metrics.tpr_report(scores[f"score_{name}"][test], out.is_member[test])
  assert fields["headline_tpr_at_fpr"] == tpr
  intervals = fields["intervals"]
  for key in ("headline_accuracy", "headline_auc"):
    lo, hi = intervals[key]
    assert lo <= fields[key] <= hi, key
  assert intervals["headline_auc"] == (
      intervals["attack_auc"] if name == "nn" else intervals["threshold_attacks"][name]["auc"])
  record = results.record(name="t", **fields)
  for key in ("headline_attack", "headline_auc", "headline_accuracy", "headline_tpr_at_fpr",
              "headline_selection"):
    assert record[key] == fields[key]


def test_headline_is_chosen_without_the_audit_split(audited):
  out, fields, _ = audited
  fields2, _ = evaluate.audit(_perturb_split_1(out), 0, C, ATTACK, seed=0)
  assert fields2["headline_attack"] == fields["headline_attack"]
  assert fields2["headline_selection"] == fields["headline_selection"]
  assert fields2["headline_auc"] != fields["headline_auc"]     # split 1 did change


def test_headline_takes_a_threshold_attack_when_the_nn_attack_is_weak():
  # Members' label logits sit higher (the loss tells them apart) but the NN attack is left
  # untrained (0 epochs: a random function of the probabilities). The headline must not
  # report it.
  out = _outputs()
  untrained = types.SimpleNamespace(**{**vars(ATTACK), "epochs": 0})
  fields, _ = evaluate.audit(out, 0, C, untrained, seed=0)
  assert fields["attack_epochs"] == 0
  assert fields["headline_attack"] != "nn"
  assert fields["headline_auc"] > 0.6
  assert fields["headline_auc"] > fields["attack_auc"] + 0.1


def test_audit_rejects_unknown_attack_features():
  bad = types.SimpleNamespace(**{**vars(ATTACK), "features": "logits"})
  with pytest.raises(UserError, match="attack.features"):
    evaluate.audit(_outputs(n=20), 0, C, bad, seed=0)


def test_the_nn_candidates_split_0_auc_is_not_read_where_its_epoch_was_chosen():
  # 100 "epochs" of pure noise on 200 held-out examples: the best of them reads ~2.5 standard
  # errors (0.04 each) above 0.5 on the examples it was chosen on; chosen on one half and read
  # on the other it is centred on 0.5 (averaged over 10 halvings: standard error ~0.015).
  rng = np.random.default_rng(0)
  is_member = np.arange(200) < 100
  noise = rng.random((100, 200))
  best = max(metrics.roc_auc(p, is_member) for p in noise)
  assert best > 0.58
  crossed = [evaluate._cross_fitted_auc(noise, is_member, np.random.default_rng(k))
             for k in range(10)]
  assert abs(np.mean(crossed) - 0.5) < 0.045
  # A real signal in one epoch is still found and read.
  signal = noise.copy()
  signal[40] += 0.5 * is_member
  value = evaluate._cross_fitted_auc(signal, is_member, np.random.default_rng(1))
  assert abs(value - metrics.roc_auc(signal[40], is_member)) < 0.05
