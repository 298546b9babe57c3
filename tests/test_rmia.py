"""Tests for miajax.rmia (RMIA scores) and RMIA's place in the LiRA audit."""

import jax
import numpy as np
import pytest

from miajax import config as config_lib
from miajax import evaluate
from miajax import lira
from miajax import metrics
from miajax import rmia
from miajax import splits
from miajax.errors import UserError

_R, _N, _Z = 16, 2000, 1000   # references, candidates (half members), population


def _log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def _world(signal: float, seed: int = 0):
  """log p(y|x) = log sigmoid(d_x + signal * IN + noise): d_x is each example's difficulty,
  shared by all models; a model that trained on x is `signal` more confident on it."""
  rng = np.random.default_rng(seed)
  keep = np.asarray(lira.keep_masks(jax.random.key(seed), _R + 1, _N))
  d, d_pop = rng.normal(0, 1, _N), rng.normal(0, 1, _Z)
  logp = _log_sigmoid(d + signal * keep + rng.normal(0, 0.5, (_R + 1, _N)))
  pop_logp = _log_sigmoid(d_pop + rng.normal(0, 0.5, (_R + 1, _Z)))
  return logp, keep, pop_logp


def _score(logp, keep, pop_logp, online, **kw):
  return rmia.scores(logp[0], logp[1:], keep[1:], pop_logp[0], pop_logp[1:], online=online,
                     **kw)


def _brute_force(logp, keep, pop_logp, online, a=0.3, gamma=1.0):
  """The paper's definition with an explicit N x Z comparison, in probabilities."""
  p, pz = np.exp(logp), np.exp(pop_logp)
  if online:
    prior_x, prior_z = p[1:].mean(0), pz[1:].mean(0)
  else:
    out = ~keep[1:]
    mean_out = (p[1:] * out).sum(0) / out.sum(0)
    prior_x = 0.5 * ((1 + a) * mean_out + 1 - a)
    prior_z = 0.5 * ((1 + a) * pz[1:].mean(0) + 1 - a)
  ratio = (p[0] / prior_x)[:, None] / (pz[0] / prior_z)[None, :]
  return (ratio > gamma).mean(axis=1)


@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("a,gamma", [(0.3, 1.0), (1.0, 1.0), (0.0, 2.0), (0.5, 0.5)])
def test_scores_are_the_fraction_of_population_samples_dominated(online, a, gamma):
  logp, keep, pop_logp = _world(signal=1.0)
  got = _score(logp, keep, pop_logp, online, offline_a=a, gamma=gamma)
  want = _brute_force(logp, keep, pop_logp, online, a, gamma)
  assert got.shape == (_N,)
  np.testing.assert_allclose(got, want, atol=1.5 / _Z)   # one z's rounding at a tie, at most
  assert np.all((got >= 0) & (got <= 1))


@pytest.mark.parametrize("online", [True, False])
def test_a_member_signal_is_detected(online):
  logp, keep, pop_logp = _world(signal=1.5)
  s = _score(logp, keep, pop_logp, online)
  assert metrics.roc_auc(s, keep[0]) > 0.75
  assert metrics.tpr_at_fpr(s, keep[0], 0.01) > 0.05


@pytest.mark.parametrize("online", [True, False])
def test_no_signal_gives_chance(online):
  """With 1,000 members and 1,000 non-members the AUC of an uninformative score has sd
  sqrt((n1 + n0 + 1) / (12 n1 n0)) = 0.013; 4 sd."""
  logp, keep, pop_logp = _world(signal=0.0)
  s = _score(logp, keep, pop_logp, online)
  n1, n0 = keep[0].sum(), (~keep[0]).sum()
  sd = np.sqrt((n1 + n0 + 1) / (12 * n1 * n0))
  assert abs(metrics.roc_auc(s, keep[0]) - 0.5) < 4 * sd


def test_online_uses_in_references_offline_does_not():
  logp, keep, pop_logp = _world(signal=1.0)
  moved = logp.copy()
  moved[1:] = np.where(keep[1:], logp[1:] - 2.0, logp[1:])   # IN references less confident
  for online in (True, False):
    before = _score(logp, keep, pop_logp, online)
    after = _score(moved, keep, pop_logp, online)
    if online:
      assert np.mean(before != after) > 0.5
    else:
      np.testing.assert_array_equal(before, after)


def test_offline_a_changes_only_offline_scores():
  logp, keep, pop_logp = _world(signal=1.0)
  s = {a: [_score(logp, keep, pop_logp, online, offline_a=a) for online in (True, False)]
       for a in (0.1, 0.9)}
  np.testing.assert_array_equal(s[0.1][0], s[0.9][0])
  assert np.any(s[0.1][1] != s[0.9][1])


def test_higher_gamma_never_raises_a_score():
  logp, keep, pop_logp = _world(signal=1.0)
  low = _score(logp, keep, pop_logp, True, gamma=1.0)
  high = _score(logp, keep, pop_logp, True, gamma=4.0)
  assert np.all(high <= low) and np.any(high < low)


def test_saturated_probabilities_keep_their_order():
  """Memorised examples have p(y|x) that rounds to 1.0 in float32; their log-probabilities
  still differ, so RMIA ranks them instead of tying them."""
  logits = np.array([[[30.0, 0.0], [40.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])  # (models, N, C)
  logp = rmia.log_true_label_prob(logits, np.array([0, 0]))
  assert np.all(np.exp(logp[0].astype(np.float32)) == 1.0)
  assert logp[0, 1] > logp[0, 0]
  # One population sample whose ratio lies between the two candidates'.
  pop = np.array([[logp[0].mean()], [np.log(0.5)]])
  s = rmia.scores(logp[0], logp[1:], np.array([[False, False]]), pop[0], pop[1:], online=True)
  np.testing.assert_array_equal(s, [0.0, 1.0])


def test_log_true_label_prob_matches_softmax():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (3, 20, 10))
  labels = rng.integers(0, 10, 20)
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  want = np.log(np.take_along_axis(p, np.broadcast_to(labels, (3, 20))[..., None], -1)[..., 0])
  np.testing.assert_allclose(rmia.log_true_label_prob(logits, labels), want, rtol=1e-10)


@pytest.mark.parametrize("a", [-0.1, 1.5, float("nan"), "0.3", True])
def test_offline_a_outside_unit_interval_is_refused(a):
  with pytest.raises(UserError, match="lira.rmia_offline_a"):
    rmia.check_offline_a(a)
  logp, keep, pop_logp = _world(signal=0.0)
  with pytest.raises(UserError, match="lira.rmia_offline_a"):
    _score(logp, keep, pop_logp, False, offline_a=a)


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("inf")])
def test_bad_gamma_is_refused(gamma):
  logp, keep, pop_logp = _world(signal=0.0)
  with pytest.raises(UserError, match="gamma"):
    _score(logp, keep, pop_logp, True, gamma=gamma)


def test_offline_needs_an_out_reference_per_candidate():
  logp, keep, pop_logp = _world(signal=0.0)
  keep = keep.copy()
  keep[1:, 0] = True
  with pytest.raises(UserError, match="ref_in"):
    _score(logp, keep, pop_logp, False)
  assert np.isfinite(_score(logp, keep, pop_logp, True)).all()


@pytest.mark.parametrize("field,bad", [
    ("ref_logp", np.zeros((_R, _N + 1))), ("ref_in", np.zeros((_R, _N), int)),
    ("pop_ref_logp", np.zeros((_R + 1, _Z))), ("target_logp", np.full(_N, 0.5)),
])
def test_scores_reject_bad_inputs(field, bad):
  logp, keep, pop_logp = _world(signal=0.0)
  args = dict(target_logp=logp[0], ref_logp=logp[1:], ref_in=keep[1:],
              pop_target_logp=pop_logp[0], pop_ref_logp=pop_logp[1:])
  args[field] = bad
  with pytest.raises(UserError, match=field):
    rmia.scores(**args, online=True)


# --- choosing the offline a ----------------------------------------------------------------


def _scaled_world(a_true, refs=4, seed=0, n=4000, z=2000):
  """log p(y|x) where a model that trained on x has p_IN = a_true p_OUT + 1 - a_true, p_OUT =
  sigmoid(d_x + noise): the mean over IN and OUT models is then ((1 + a_true) p_OUT + 1 -
  a_true) / 2, offline RMIA's approximation of Pr(x) at a = a_true, exactly."""
  rng = np.random.default_rng(seed)
  keep = np.asarray(lira.keep_masks(jax.random.key(seed), refs + 1, n))
  d, d_pop = rng.normal(0, 2, n), rng.normal(0, 2, z)
  p_out = np.exp(_log_sigmoid(d + rng.normal(0, 0.3, (refs + 1, n))))
  logp = np.log(np.where(keep, a_true * p_out + 1 - a_true, p_out))
  pop_logp = _log_sigmoid(d_pop + rng.normal(0, 0.3, (refs + 1, z)))
  return logp, keep, pop_logp


@pytest.mark.parametrize("a_true", [0.0, 0.5, 0.8, 0.95])
def test_chosen_offline_a_is_the_one_that_attacks_the_real_target_best(a_true):
  """Reference models standing in as the target pick, within a grid step, the a under which
  the real target (never read) has the highest offline AUC, and that a is near the world's
  own: the AUC-best a is a_true at 0, 0.8 and 0.95, and 0.35 at a_true = 0.5."""
  logp, keep, pop_logp = _scaled_world(a_true)
  choice = rmia.choose_offline_a(logp[1:], keep[1:], pop_logp[1:])
  target_auc = [metrics.roc_auc(_score(logp, keep, pop_logp, False, offline_a=a), keep[0])
                for a in choice.grid]
  best_for_target = choice.grid[int(np.argmax(target_auc))]
  assert abs(choice.a - best_for_target) <= 0.05 + 1e-9, (choice.a, best_for_target)
  assert abs(choice.a - a_true) <= 0.15 + 1e-9, choice.a
  assert choice.stand_ins == (0, 1, 2, 3) and choice.a in choice.grid


def test_a_stand_in_is_attacked_with_the_other_reference_models_only():
  """The stand-in's AUC at each a is the paper's offline RMIA (brute force, in probabilities)
  with the stand-in as target and the remaining reference models as its references, over the
  candidates some remaining reference is OUT for: its own scores never enter Pr(x) or Pr(z)."""
  logp, keep, pop_logp = _scaled_world(0.8)
  ref, ref_in, pop_ref = logp[1:], keep[1:], pop_logp[1:]
  choice = rmia.choose_offline_a(ref, ref_in, pop_ref, grid=(0.2, 0.8), max_stand_ins=1)
  covered = (~ref_in[1:]).any(axis=0)
  want = [metrics.roc_auc(_brute_force(ref[:, covered], ref_in[:, covered], pop_ref, False, a),
                          ref_in[0, covered]) for a in (0.2, 0.8)]
  assert choice.stand_ins == (0,)
  np.testing.assert_allclose(choice.auc, want, atol=2e-3)


def test_no_usable_stand_in_gives_no_choice():
  """Two reference models trained on complementary halves: with one as target, the other is
  OUT only where the stand-in is IN, so the stand-in has no scored non-member."""
  logp, keep, pop_logp = _scaled_world(0.8, refs=2)
  choice = rmia.choose_offline_a(logp[1:], keep[1:], pop_logp[1:])
  assert choice.a is None and choice.stand_ins == () and choice.auc.size == 0


def test_lira_audit_chooses_a_from_the_reference_models_not_the_target():
  """Without an override the audit records the a its reference models chose and scores with
  it; garbage in the target's logits, population logits and keep mask leaves the choice be."""
  logits, labels, keep, pop_logits, pop_labels = _logits_world(signal=1.5)
  fields, scores = evaluate.lira_audit(logits, labels, keep, pop_logits, pop_labels)
  a = fields["rmia_offline_a"]
  assert a in rmia.OFFLINE_A_GRID
  assert fields["rmia_offline_a_chosen_by"].startswith("reference models 1, 2, 3, 4 as target")
  logp = rmia.log_true_label_prob(logits, labels)
  pop_logp = rmia.log_true_label_prob(pop_logits, pop_labels)
  np.testing.assert_array_equal(scores["rmia_offline"],
                                _score(logp, keep, pop_logp, False, offline_a=a))
  rng = np.random.default_rng(7)
  garbage, pop_garbage, keep_garbage = logits.copy(), pop_logits.copy(), keep.copy()
  garbage[0] = rng.normal(0, 10, garbage[0].shape)
  pop_garbage[0] = rng.normal(0, 10, pop_garbage[0].shape)
  keep_garbage[0] = rng.permutation(keep[0])
  again, _ = evaluate.lira_audit(garbage, labels, keep_garbage, pop_garbage, pop_labels)
  assert again["rmia_offline_a"] == a
  assert again["rmia_offline_a_chosen_by"] == fields["rmia_offline_a_chosen_by"]


def test_choosing_a_reads_nothing_of_the_target():
  """NaN in every output of the target (model 0) and a shuffled keep mask: the choice of a is
  unchanged and nothing fails, so no output of the target entered it."""
  logits, labels, keep, pop_logits, pop_labels = _logits_world(signal=1.5)
  logp = rmia.log_true_label_prob(logits, labels)
  pop_logp = rmia.log_true_label_prob(pop_logits, pop_labels)
  want = evaluate._rmia_offline_a(None, logp, keep, pop_logp, 1.0)
  logp[0], pop_logp[0] = np.nan, np.nan
  keep = keep.copy()
  keep[0] = np.random.default_rng(0).permutation(keep[0])
  assert evaluate._rmia_offline_a(None, logp, keep, pop_logp, 1.0) == want


def test_lira_audit_without_a_usable_stand_in_uses_the_default_a_and_says_so():
  logits, labels, keep, pop_logits, pop_labels = _logits_world(signal=1.5)
  fields, _ = evaluate.lira_audit(logits[:3], labels, keep[:3], pop_logits[:3], pop_labels)
  assert fields["rmia_offline_a"] == rmia.DEFAULT_OFFLINE_A
  assert fields["rmia_offline_a_chosen_by"].startswith("default")
  assert any("rmia_offline_a" in n for n in fields["notes"])


@pytest.mark.parametrize("a,ok", [(None, True), (0.0, True), (1.0, True), (0.45, True),
                                  (1.5, False), (-0.1, False), (float("nan"), False)])
def test_config_rmia_offline_a_is_none_or_in_the_unit_interval(a, ok):
  c = config_lib.base()
  assert c.lira.rmia_offline_a is None   # default: chosen per target
  c.lira.rmia_offline_a = a
  if ok:
    config_lib.validate(c)
  else:
    with pytest.raises(UserError, match="lira.rmia_offline_a"):
      config_lib.validate(c)


# --- RMIA in the LiRA audit ---------------------------------------------------------------


def test_population_is_test_examples_no_model_trains_on():
  """A LiRA stack trains only on the train split's pool; RMIA's population comes from the
  test split's reference half, apart from the audit half that measures test accuracy."""
  s = splits.make(0, 60000, 10000, 5000)
  dataset_split, index = evaluate.rmia_population(s)
  assert dataset_split == "test"
  np.testing.assert_array_equal(index, s.reference)
  assert len(index) == 2500 and not np.intersect1d(index, s.audit).size


def _logits_world(signal, seed=0):
  """Two-class logits whose true-label log-probabilities are `_world`'s."""
  logp, keep, pop_logp = _world(signal, seed)
  rng = np.random.default_rng(seed + 1)

  def logits(lp, labels):
    margin = lp - np.log1p(-np.exp(lp))   # p(y) = sigmoid(margin)
    is_label = np.arange(2) == np.broadcast_to(labels, lp.shape)[..., None]
    return np.where(is_label, margin[..., None], 0.0)

  labels, pop_labels = rng.integers(0, 2, _N), rng.integers(0, 2, _Z)
  return logits(logp, labels), labels, keep, logits(pop_logp, pop_labels), pop_labels


def test_lira_audit_records_rmia_beside_lira():
  logits, labels, keep, pop_logits, pop_labels = _logits_world(signal=1.5)
  fields, scores = evaluate.lira_audit(logits, labels, keep, pop_logits, pop_labels,
                                       rmia_offline_a=0.5)
  for name in ("online", "offline", "online_fixed_variance", "offline_fixed_variance",
               "rmia_online", "rmia_offline"):
    assert set(fields[name]) == {"auc", "tpr_at_fpr"}
    assert set(fields[name]["tpr_at_fpr"]) == {"0.001", "0.01"}
  assert fields["rmia_online"]["auc"] > 0.75 and fields["rmia_offline"]["auc"] > 0.75
  assert fields["rmia_offline_a"] == 0.5 and fields["rmia_gamma"] == 1.0
  assert fields["rmia_offline_a_chosen_by"] == "config override"
  assert fields["rmia_num_population"] == _Z
  # 1,000 non-members: an FPR strictly below 0.1% allows no false positive, so TPR there is
  # null with a note (tpr_report); at 1% it is measured.
  assert fields["rmia_online"]["tpr_at_fpr"]["0.001"] is None
  assert fields["rmia_online"]["tpr_at_fpr"]["0.01"] is not None
  assert any(n.startswith("rmia_online: TPR at FPR 0.001: null") for n in fields["notes"])
  logp = rmia.log_true_label_prob(logits, labels)
  pop_logp = rmia.log_true_label_prob(pop_logits, pop_labels)
  np.testing.assert_array_equal(scores["rmia_offline"],
                                _score(logp, keep, pop_logp, False, offline_a=0.5))
  assert {"lira_online", "rmia_online", "rmia_offline"} <= set(scores)


def test_lira_audit_without_population_leaves_rmia_null():
  logits, labels, keep, _, _ = _logits_world(signal=1.5)
  fields, scores = evaluate.lira_audit(logits, labels, keep)
  for key in ("rmia_online", "rmia_offline", "rmia_offline_a", "rmia_offline_a_chosen_by",
              "rmia_gamma", "rmia_num_population"):
    assert fields[key] is None
  assert not any(k.startswith("rmia") for k in scores)
  assert fields["online"]["auc"] > 0.5
