"""Empirical lower bounds on a model's differential privacy, from membership scores.

An (epsilon, delta)-DP training algorithm bounds every membership test: TPR <= e^eps FPR +
delta and TNR <= e^eps FNR + delta. Measured rates turn this around into a lower bound on
epsilon that holds whatever the accountant says, so an attack's scores place every defence,
DP or not, on the same scale.

- `threshold_audit`: the bound from TPR/FPR at one threshold with Clopper-Pearson confidence
  (Jagielski et al. 2020; Nasr et al. 2021). The threshold is chosen on one set of examples
  (`choose`) and the bound computed on another (`measure`): picking the best of many
  thresholds on the examples that are then measured would read high.
- `one_run`: the audit of Steinke, Nasr and Jagielski (NeurIPS 2023, "Privacy Auditing with
  One (1) Training Run"): m canaries, each a member with probability 1/2 by an independent
  coin; the attacker guesses "member" for the highest scores, "non-member" for the lowest and
  abstains on the rest. Under (eps, delta)-DP the number of correct guesses among r is
  dominated by Binomial(r, e^eps / (1 + e^eps)) up to a delta term (their Theorem 3.1); the
  bound is the largest eps that the observed count rejects at the confidence level.

Every bound is one-sided at `level`: with probability at least `level` over the membership
draw and the training run, the algorithm is not (eps, delta)-DP for any eps below it.
"""

import math

import numpy as np
from scipy import stats

from miajax.errors import UserError

LEVEL = 0.95
# Guesses tried for the one-run audit, as fractions of the canaries guessed "member" (highest
# scores) and "non-member" (lowest): chosen on one half, applied to the other.
GUESS_FRACTIONS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def _cp_lower(k, n, alpha):
  """One-sided Clopper-Pearson lower bound(s) at confidence 1 - alpha (vectorised)."""
  k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
  with np.errstate(invalid="ignore"):
    lo = stats.beta.ppf(alpha, np.maximum(k, 1), np.maximum(n - k + 1, 1))
  return np.where(k <= 0, 0.0, lo)


def _cp_upper(k, n, alpha):
  """One-sided Clopper-Pearson upper bound(s) at confidence 1 - alpha (vectorised)."""
  k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
  with np.errstate(invalid="ignore"):
    hi = stats.beta.ppf(1 - alpha, np.maximum(k + 1, 1), np.maximum(n - k, 1))
  return np.where(k >= n, 1.0, hi)


def rates_bound(tpr, fpr, delta: float) -> np.ndarray:
  """max(0, log((TPR - delta) / FPR), log((1 - FPR - delta) / (1 - TPR))): the epsilon that
  rates (tpr, fpr) require of an (eps, delta)-DP algorithm (vectorised; inf where a rate is
  exactly 0 and the other is not)."""
  tpr, fpr = np.asarray(tpr, np.float64), np.asarray(fpr, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    a = np.where(tpr - delta > 0, np.log(np.maximum(tpr - delta, 1e-300)) - np.log(fpr),
                 -np.inf)
    b = np.where(1 - fpr - delta > 0,
                 np.log(np.maximum(1 - fpr - delta, 1e-300)) - np.log(1 - tpr), -np.inf)
  return np.maximum(0.0, np.nan_to_num(np.maximum(a, b), nan=0.0, neginf=0.0,
                                         posinf=np.inf))


def counts_interval(tp, members, fp, nonmembers, delta: float, level: float = LEVEL
                    ) -> tuple[float, float | None]:
  """(lower, upper): the `level` interval of the epsilon that a threshold's true rates
  require, from its counts: `counts_bound`, and `rates_bound` at the other ends of the rates'
  intervals (None where unbounded)."""
  alpha = (1 - level) / 2
  upper = rates_bound(_cp_upper(tp, members, alpha), _cp_lower(fp, nonmembers, alpha), delta)
  return (float(counts_bound(tp, members, fp, nonmembers, delta, level)),
          _finite_or_none(upper))


def counts_bound(tp, members, fp, nonmembers, delta: float, level: float = LEVEL):
  """The `level` lower bound on epsilon from tp of `members` called members and fp of
  `nonmembers` called members: `rates_bound` at the Clopper-Pearson lower bound on TPR and
  upper bound on FPR, each one-sided at (1 - level) / 2 (so both hold at once with
  probability >= level). Vectorised over tp, fp."""
  alpha = (1 - level) / 2
  return rates_bound(_cp_lower(tp, members, alpha), _cp_upper(fp, nonmembers, alpha), delta)


def _sweep(scores: np.ndarray, is_member: np.ndarray):
  """Every threshold "score >= t" over the distinct scores (and +inf, calling no one):
  (thresholds, tp, fp), highest threshold first."""
  order = np.argsort(-scores, kind="stable")
  s, m = scores[order], is_member[order]
  tp, fp = np.cumsum(m), np.cumsum(~m)
  last = np.r_[s[1:] != s[:-1], True]        # the last of each run of equal scores
  return (np.r_[np.inf, s[last]], np.r_[0, tp[last]], np.r_[0, fp[last]])


def best_threshold(scores, is_member, delta: float, level: float = LEVEL) -> float:
  """The threshold t ("score >= t" = member) of the highest `counts_bound` on these examples
  (the highest such t on ties)."""
  scores, is_member = _check(scores, is_member)
  t, tp, fp = _sweep(scores, is_member)
  bounds = counts_bound(tp, is_member.sum(), fp, (~is_member).sum(), delta, level)
  return float(t[int(np.argmax(bounds))])


def threshold_audit(scores, is_member, choose, measure, delta: float,
                    level: float = LEVEL) -> dict:
  """The threshold bound: t chosen on the examples `choose` (a bool mask), the bound computed
  on the examples `measure`, disjoint from them.

  Returns {epsilon_lower_bound, epsilon_interval (the `level` interval of the epsilon that
  this threshold's true rates require: the bound, and the same from the other ends of the
  rates' intervals, None where that is unbounded), epsilon_estimate (the measured rates' own
  epsilon, no confidence; None where it is infinite, a rate of exactly 0), threshold (None
  where the best calls no one a member: no threshold beat chance there, and the bound is 0),
  tp, members, fp, nonmembers, tpr, fpr, tpr_interval, fpr_interval (two-sided `level`
  Clopper-Pearson), level, delta}; the bound is None when `measure` lacks members or
  non-members.
  """
  scores, is_member = _check(scores, is_member)
  choose, measure = np.asarray(choose, bool), np.asarray(measure, bool)
  if np.any(choose & measure):
    raise ValueError("the threshold's examples and the measured ones must be disjoint")
  n_in, n_out = int((is_member & measure).sum()), int((~is_member & measure).sum())
  out = {"level": level, "delta": delta, "members": n_in, "nonmembers": n_out}
  if min(n_in, n_out) == 0 or not choose.any():
    return out | dict.fromkeys(("epsilon_lower_bound", "epsilon_interval", "epsilon_estimate",
                                "threshold", "tp", "fp", "tpr", "fpr", "tpr_interval",
                                "fpr_interval"))
  t = best_threshold(scores[choose], is_member[choose], delta, level)
  called = scores >= t
  tp, fp = int((called & is_member & measure).sum()), int((called & ~is_member & measure).sum())
  alpha = (1 - level) / 2
  interval = counts_interval(tp, n_in, fp, n_out, delta, level)
  return out | {
      "epsilon_lower_bound": interval[0], "epsilon_interval": list(interval),
      "epsilon_estimate": _finite_or_none(rates_bound(tp / n_in, fp / n_out, delta)),
      "threshold": _finite_or_none(t), "tp": tp, "fp": fp, "tpr": tp / n_in, "fpr": fp / n_out,
      "tpr_interval": [float(_cp_lower(tp, n_in, alpha)), float(_cp_upper(tp, n_in, alpha))],
      "fpr_interval": [float(_cp_lower(fp, n_out, alpha)), float(_cp_upper(fp, n_out, alpha))]}


# ---------------------------------------------------------------- one run (Steinke et al.)


def one_run_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
  """P[at least v of r guesses correct] for m canaries under (eps, delta)-DP (Steinke et
  al.'s Theorem 3.1): P[Bin(r, q) >= v] + 2 m delta max_{1<=i<=v} P[v-i <= Bin(r, q) < v] / i,
  q = e^eps / (1 + e^eps), capped at 1."""
  if not 0 <= v <= r <= m:
    raise ValueError(f"need 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")
  q = 1 / (1 + math.exp(-eps))
  tail = float(stats.binom.sf(v - 1, r, q))
  slack = 0.0
  if delta > 0 and v > 0:
    i = np.arange(1, v + 1)
    below = np.cumsum(stats.binom.pmf(v - i, r, q))       # P[v - i <= Bin < v]
    slack = float(np.max(below / i))
  return min(1.0, tail + 2 * m * delta * slack)


def one_run_bound(m: int, r: int, v: int, delta: float, level: float = LEVEL) -> float:
  """The largest eps whose p-value for v correct of r guesses stays below 1 - level: the
  one-run lower bound (0 when even eps = 0 is not rejected). Bisection to 1e-6."""
  beta = 1 - level
  if r == 0 or one_run_p_value(m, r, v, 0.0, delta) >= beta:
    return 0.0
  lo, hi = 0.0, 1.0
  while one_run_p_value(m, r, v, hi, delta) < beta:
    lo, hi = hi, 2 * hi
    if hi > 1e3:
      return math.inf
  while hi - lo > 1e-6:
    mid = (lo + hi) / 2
    if one_run_p_value(m, r, v, mid, delta) < beta:
      lo = mid
    else:
      hi = mid
  return lo


def guesses(scores: np.ndarray, plus: int, minus: int) -> np.ndarray:
  """+1 (member) for the `plus` highest scores, -1 for the `minus` lowest, 0 (abstain)
  elsewhere; ties broken by position."""
  n = scores.size
  plus, minus = min(plus, n), min(minus, n - min(plus, n))
  order = np.argsort(-scores, kind="stable")
  out = np.zeros(n, np.int8)
  out[order[:plus]] = 1
  out[order[n - minus:]] = -1
  return out


def _one_run_counts(scores, is_member, plus, minus):
  g = guesses(scores, plus, minus)
  truth = np.where(is_member, 1, -1)
  return int(np.sum(g != 0)), int(np.sum((g != 0) & (g == truth)))


def one_run(scores, is_member, choose, measure, delta: float, level: float = LEVEL,
            fractions=GUESS_FRACTIONS) -> dict:
  """The one-run bound on the canaries `measure`, how many to guess chosen on `choose`.

  The numbers of "member" and "non-member" guesses, as fractions of the canaries, are those
  of the best bound on `choose` (among `fractions` x `fractions`); on `measure` the same
  fractions are guessed and the bound computed with m = its canaries, whose coins the choice
  never saw.

  Returns {epsilon_lower_bound, canaries (m), guesses (r), correct (v), plus_fraction,
  minus_fraction, level, delta}.
  """
  scores, is_member = _check(scores, is_member)
  choose, measure = np.asarray(choose, bool), np.asarray(measure, bool)
  if np.any(choose & measure):
    raise ValueError("the guesses' examples and the measured ones must be disjoint")
  out = {"level": level, "delta": delta, "canaries": int(measure.sum())}
  if not choose.any() or not measure.any():
    return out | dict.fromkeys(("epsilon_lower_bound", "guesses", "correct", "plus_fraction",
                                "minus_fraction"))

  def bound(mask, fp, fm):
    n = int(mask.sum())
    r, v = _one_run_counts(scores[mask], is_member[mask], round(fp * n), round(fm * n))
    return one_run_bound(n, r, v, delta, level), r, v

  grid = [(fp, fm) for fp in fractions for fm in fractions if fp + fm > 0]
  fp, fm = max(grid, key=lambda f: bound(choose, *f)[0])   # first best on ties
  eps, r, v = bound(measure, fp, fm)
  return out | {"epsilon_lower_bound": eps, "guesses": r, "correct": v, "plus_fraction": fp,
                "minus_fraction": fm}


def halves(is_member: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A seeded random half of the members and half of the non-members: (N,) bool, True = the
  half that chooses, False = the half that is measured."""
  half = np.zeros(is_member.size, bool)
  for group in (is_member, ~is_member):
    idx = rng.permutation(np.flatnonzero(group))
    half[idx[:idx.size // 2]] = True
  return half


def _finite_or_none(x) -> float | None:
  return float(x) if math.isfinite(float(x)) else None


def _check(scores, is_member) -> tuple[np.ndarray, np.ndarray]:
  scores = np.asarray(scores, np.float64)
  is_member = np.asarray(is_member)
  if scores.ndim != 1 or is_member.shape != scores.shape:
    raise UserError(f"scores {scores.shape} and is_member {is_member.shape} must be one "
                     "vector each; allowed: (N,) scores and (N,) is_member")
  if is_member.dtype != bool:
    raise UserError(f"is_member of dtype {is_member.dtype} is not allowed; allowed: bool")
  if not np.all(np.isfinite(scores)):
    raise UserError("scores with NaN or infinity are not allowed; allowed: finite scores")
  return scores, is_member
