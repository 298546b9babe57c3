"""Empirical epsilon lower bounds: the threshold bound with Clopper-Pearson confidence and the
one-run bound of Steinke, Nasr and Jagielski, against hand computations and known values."""

import math

import numpy as np
import pytest
from scipy import stats

from miajax import epsilon
from miajax.errors import UserError


def test_a_perfect_attack_on_n_canaries_gives_the_closed_form_threshold_bound():
  # n members all called, n non-members none: the CP bounds are (a)^(1/n) and 1 - (a)^(1/n)
  # with a = (1 - level) / 2, so eps = log((a^(1/n) - delta) / (1 - a^(1/n))).
  n, delta = 50, 1e-5
  a = (1 - 0.95) / 2
  lo = a ** (1 / n)
  expected = math.log((lo - delta) / (1 - lo))
  assert epsilon.counts_bound(n, n, 0, n, delta) == pytest.approx(expected, rel=1e-9)
  scores = np.r_[np.ones(2 * n), np.zeros(2 * n)]
  member = np.r_[np.ones(2 * n, bool), np.zeros(2 * n, bool)]
  half = epsilon.halves(member, np.random.default_rng(0))
  got = epsilon.threshold_audit(scores, member, half, ~half, delta)
  assert got["tp"] == n and got["fp"] == 0 and got["members"] == got["nonmembers"] == n
  assert got["epsilon_lower_bound"] == pytest.approx(expected, rel=1e-9)
  assert got["epsilon_estimate"] is None           # FPR exactly 0: no finite estimate


def test_the_threshold_bound_is_the_hand_computed_one_at_given_counts():
  # 30 of 100 members and 2 of 100 non-members called: CP at 2.5% one-sided each.
  lo = stats.beta.ppf(0.025, 30, 71)
  hi = stats.beta.ppf(0.975, 3, 98)
  expected = max(math.log((lo - 1e-5) / hi), math.log((1 - hi - 1e-5) / (1 - lo)))
  assert epsilon.counts_bound(30, 100, 2, 100, 1e-5) == pytest.approx(expected, rel=1e-9)
  assert epsilon.rates_bound(0.3, 0.02, 0.0) == pytest.approx(math.log(15))
  # The low-threshold side: every non-member's complement (TNR / FNR).
  assert epsilon.rates_bound(0.98, 0.7, 0.0) == pytest.approx(math.log(0.3 / 0.02))


def test_a_random_attack_gives_about_zero():
  rng = np.random.default_rng(1)
  bounds = []
  for _ in range(20):
    member = rng.random(400) < 0.5
    scores = rng.normal(size=400)
    half = epsilon.halves(member, rng)
    bounds.append(epsilon.threshold_audit(scores, member, half, ~half, 1e-5)[
        "epsilon_lower_bound"])
    bounds.append(epsilon.one_run(scores, member, half, ~half, 1e-5)["epsilon_lower_bound"])
  # At 95% confidence, at most about 1 in 20 of the bounds is above 0, none by much.
  assert np.mean(np.asarray(bounds) > 0) <= 0.15
  assert max(bounds) < 0.6


def test_the_threshold_is_chosen_on_one_half_and_never_on_the_measured_one():
  rng = np.random.default_rng(2)
  member = rng.random(200) < 0.5
  scores = rng.normal(size=200) + member
  half = epsilon.halves(member, rng)
  got = epsilon.threshold_audit(scores, member, half, ~half, 1e-5)
  changed = scores.copy()
  changed[~half] = rng.normal(size=(~half).sum())      # the measured half's scores redrawn
  again = epsilon.threshold_audit(changed, member, half, ~half, 1e-5)
  assert got["threshold"] == again["threshold"]
  assert got["threshold"] == epsilon.best_threshold(scores[half], member[half], 1e-5)
  with pytest.raises(ValueError, match="disjoint"):
    epsilon.threshold_audit(scores, member, half, half | ~half, 1e-5)


def test_one_run_all_correct_gives_the_closed_form_bound_at_delta_zero():
  # Under eps-DP, P[all r guesses correct] <= q^r, q = e^eps / (1 + e^eps): the bound is the
  # eps with q^r = 0.05.
  for r in (10, 50, 200):
    q = 0.05 ** (1 / r)
    assert epsilon.one_run_bound(r, r, r, 0.0) == pytest.approx(math.log(q / (1 - q)),
                                                                abs=1e-5)


def test_one_run_p_value_is_the_binomial_tail_plus_the_delta_term_by_hand():
  m, r, v, eps, delta = 100, 20, 17, 1.0, 1e-3
  q = 1 / (1 + math.exp(-eps))
  tail = sum(math.comb(r, j) * q ** j * (1 - q) ** (r - j) for j in range(v, r + 1))
  slack = max(sum(math.comb(r, v - j) * q ** (v - j) * (1 - q) ** (r - v + j)
                  for j in range(1, i + 1)) / i for i in range(1, v + 1))
  assert epsilon.one_run_p_value(m, r, v, eps, delta) == pytest.approx(
      tail + 2 * m * delta * slack, rel=1e-9)
  assert epsilon.one_run_p_value(m, r, v, eps, 0.0) == pytest.approx(tail, rel=1e-9)


def test_one_run_bound_grows_with_correct_guesses_and_delta_lowers_it():
  b = [epsilon.one_run_bound(1000, 100, v, 0.0) for v in (50, 70, 90, 100)]
  assert b[0] == 0 and b == sorted(b) and b[1] > 0
  assert epsilon.one_run_bound(1000, 100, 90, 1e-4) < b[2]


def test_one_run_on_perfectly_separated_canaries_guesses_all_and_is_right():
  member = np.r_[np.ones(100, bool), np.zeros(100, bool)]
  scores = member.astype(float)
  half = epsilon.halves(member, np.random.default_rng(3))
  got = epsilon.one_run(scores, member, half, ~half, 0.0)
  assert got["guesses"] == got["correct"] == 100 and got["canaries"] == 100
  q = 0.05 ** (1 / 100)
  assert got["epsilon_lower_bound"] == pytest.approx(math.log(q / (1 - q)), abs=1e-5)


def test_guesses_take_the_highest_as_members_and_the_lowest_as_non_members():
  g = epsilon.guesses(np.array([0.5, 3.0, -1.0, 2.0, 0.0]), 2, 1)
  np.testing.assert_array_equal(g, [0, 1, -1, 1, 0])


@pytest.mark.parametrize("scores, member", [
    (np.zeros(3), np.zeros(4, bool)),
    (np.zeros(3), np.zeros(3, int)),
    (np.array([0.0, np.nan, 1.0]), np.zeros(3, bool)),
])
def test_bad_scores_raise_user_error(scores, member):
  with pytest.raises(UserError, match="allowed"):
    epsilon.best_threshold(scores, member, 1e-5)


def test_the_interval_runs_from_the_bound_to_the_other_ends_of_the_rates_intervals():
  lo, hi = epsilon.counts_interval(30, 100, 2, 100, 1e-5)
  assert lo == pytest.approx(float(epsilon.counts_bound(30, 100, 2, 100, 1e-5)))
  tpr_hi, fpr_lo = stats.beta.ppf(0.975, 31, 70), stats.beta.ppf(0.025, 2, 99)
  assert hi == pytest.approx(math.log((tpr_hi - 1e-5) / fpr_lo), rel=1e-9)
  assert lo < epsilon.rates_bound(0.3, 0.02, 1e-5) < hi
  assert epsilon.counts_interval(30, 100, 0, 100, 1e-5)[1] is None   # FPR may be 0: unbounded
