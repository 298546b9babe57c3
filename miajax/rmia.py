"""The Relative Membership Inference Attack (RMIA) of Zarifzadeh et al. 2024, "Low-Cost
High-Power Membership Inference Attacks" (ICML).

RMIA compares the target model's likelihood ratio on a candidate x with its ratio on
population samples z, non-members that no model involved trained on:

  LR(x) = Pr(x | theta) / Pr(x),   Pr(x | theta) = p_theta(y | x),   Pr(x) = mean over the
  reference models of p_ref(y | x),

and scores x by the fraction of population samples it dominates, |{z : LR(x) / LR(z) >
gamma}| / |Z|, a number in [0, 1]; higher = more likely a member.

- online: the reference models are both IN and OUT for x and Pr(x) is the mean over all of
  them (with balanced keep masks, half IN and half OUT);
- offline: only the references OUT for x are used, and Pr(x) = ((1 + a) mean_OUT + (1 - a)) / 2,
  the paper's linear approximation of the IN-and-OUT mean from the OUT one. The same formula
  gives Pr(z), for which every reference is OUT. `choose_offline_a` picks `a` as the paper
  does, with a reference model standing in as the target.

Everything is computed from log-probabilities (`log_true_label_prob`), so a memorised
example whose probability rounds to 1.0 in float32 still has a distinct ratio.
"""

import math
import numbers
from typing import NamedTuple

import numpy as np
import scipy.special

from miajax import metrics
from miajax.errors import UserError

# ML Privacy Meter's default `offline_a`, used only where no reference model can stand in as
# the target to choose it (`choose_offline_a`).
DEFAULT_OFFLINE_A = 0.3
DEFAULT_GAMMA = 1.0
# The values of `a` `choose_offline_a` tries, and how many stand-in targets it averages over.
OFFLINE_A_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)
MAX_STAND_INS = 4


def log_true_label_prob(logits, labels) -> np.ndarray:
  """log p(y | x) = z_y - logsumexp(z), in float64.

  Args:
    logits: (..., N, C) with C >= 2; leading axes (e.g. models) are kept.
    labels: integer labels broadcastable to logits.shape[:-1], e.g. (N,).

  Returns:
    float64 array of shape logits.shape[:-1], all <= 0.
  """
  z = np.asarray(logits, np.float64)
  if z.ndim < 1 or z.shape[-1] < 2:
    raise UserError(f"logits: got shape {z.shape}; allowed: (..., N, C) with C >= 2 classes")
  y = np.broadcast_to(np.asarray(labels), z.shape[:-1])
  label_logit = np.take_along_axis(z, y[..., None].astype(np.int64), axis=-1)[..., 0]
  return label_logit - scipy.special.logsumexp(z, axis=-1)


def check_offline_a(a) -> float:
  """`a` as a float, or UserError: the approximation needs a in [0, 1]."""
  if (isinstance(a, bool) or not isinstance(a, numbers.Real) or not math.isfinite(a)
      or not 0.0 <= a <= 1.0):
    raise UserError(f"lira.rmia_offline_a: got {a!r}; allowed: a number in [0, 1]")
  return float(a)


def _check_gamma(gamma) -> float:
  if (isinstance(gamma, bool) or not isinstance(gamma, numbers.Real)
      or not math.isfinite(gamma) or gamma <= 0):
    raise UserError(f"gamma: got {gamma!r}; allowed: a finite number > 0")
  return float(gamma)


def _log_mean(logp, sel=None):
  """log of the mean over axis 0 of exp(logp), over the selected rows only when `sel`."""
  if sel is None:
    return scipy.special.logsumexp(logp, axis=0) - np.log(logp.shape[0])
  count = sel.sum(axis=0)
  with np.errstate(divide="ignore"):
    return scipy.special.logsumexp(np.where(sel, logp, -np.inf), axis=0) - np.log(count)


def _log_offline_prior(log_mean_out, a):
  """log(((1 + a) mean_OUT + (1 - a)) / 2), stable for a in [0, 1]."""
  with np.errstate(divide="ignore"):
    return np.logaddexp(np.log1p(a) + log_mean_out, np.log1p(-a)) - np.log(2.0)


def scores(target_logp, ref_logp, ref_in, pop_target_logp, pop_ref_logp, *, online: bool,
           offline_a: float = DEFAULT_OFFLINE_A, gamma: float = DEFAULT_GAMMA) -> np.ndarray:
  """RMIA membership scores of a target model; higher = more likely a member.

  Args:
    target_logp: (N,) log p_target(y | x) of the candidates.
    ref_logp: (R, N) the same for R reference models.
    ref_in: (R, N) bool, True where reference r trained on candidate n.
    pop_target_logp: (Z,) log p_target(y | z) of the population samples, which neither the
      target nor any reference trained on.
    pop_ref_logp: (R, Z) the same for the reference models.
    online: True to average Pr(x) over all references (IN and OUT); False to use only the
      OUT references with the offline approximation.
    offline_a: the `a` of the offline approximation, in [0, 1] (ignored online). a = 1 takes
      Pr(x) = mean_OUT; smaller a pulls Pr(x) towards 1 to stand in for the missing IN models.
    gamma: the threshold on LR(x) / LR(z), > 0.

  Returns:
    (N,) float64 in [0, 1]: the fraction of population samples z with LR(x) / LR(z) > gamma.
  """
  target = np.asarray(target_logp, np.float64)
  ref = np.asarray(ref_logp, np.float64)
  sel = np.asarray(ref_in)
  pop_target = np.asarray(pop_target_logp, np.float64)
  pop_ref = np.asarray(pop_ref_logp, np.float64)
  if target.ndim != 1 or ref.ndim != 2 or ref.shape[1:] != target.shape or ref.shape[0] < 1:
    raise UserError(f"ref_logp: got shape {ref.shape} for target_logp {target.shape}; "
                    "allowed: (R, N) with R >= 1 for (N,)")
  if sel.dtype != np.bool_ or sel.shape != ref.shape:
    raise UserError(f"ref_in: got {sel.dtype} {sel.shape}; allowed: bool {ref.shape}")
  if pop_target.ndim != 1 or pop_target.size == 0 or pop_ref.shape != (len(ref), pop_target.size):
    raise UserError(f"pop_ref_logp: got shape {pop_ref.shape} for pop_target_logp "
                    f"{pop_target.shape}; allowed: ({len(ref)}, Z) for (Z,) with Z >= 1")
  for name, a in (("target_logp", target), ("ref_logp", ref), ("pop_target_logp", pop_target),
                  ("pop_ref_logp", pop_ref)):
    if not np.all(np.isfinite(a) & (a <= 0)):
      raise UserError(f"{name}: got values that are not finite or above 0; allowed: finite "
                      "log-probabilities (<= 0)")
  log_gamma = np.log(_check_gamma(gamma))

  if online:
    log_prior_x = _log_mean(ref)
    log_prior_z = _log_mean(pop_ref)
  else:
    a = check_offline_a(offline_a)
    missing = int(np.count_nonzero(sel.all(axis=0)))
    if missing:
      raise UserError(f"ref_in: {missing} candidates have no OUT reference model; allowed: at "
                      "least one OUT reference per candidate for offline RMIA")
    log_prior_x = _log_offline_prior(_log_mean(ref, ~sel), a)
    log_prior_z = _log_offline_prior(_log_mean(pop_ref), a)

  log_lr_x = target - log_prior_x
  log_lr_z = np.sort(pop_target - log_prior_z)
  # LR(x) / LR(z) > gamma  <=>  log LR(z) < log LR(x) - log gamma: count the z strictly
  # below by binary search, N log Z instead of an N x Z comparison matrix.
  below = np.searchsorted(log_lr_z, log_lr_x - log_gamma, side="left")
  return below / log_lr_z.size


class OfflineAChoice(NamedTuple):
  """What `choose_offline_a` found."""
  a: float | None              # the chosen a; None when no reference model could stand in
  stand_ins: tuple[int, ...]   # the reference models (indices into ref_logp) used as targets
  grid: np.ndarray             # the values of a tried
  auc: np.ndarray              # (len(grid),) the stand-ins' mean AUC at each; empty if none


def choose_offline_a(ref_logp, ref_in, pop_ref_logp, *, gamma: float = DEFAULT_GAMMA,
                     grid=OFFLINE_A_GRID, max_stand_ins: int = MAX_STAND_INS) -> OfflineAChoice:
  """The offline `a` under which reference models, standing in as the target, are best attacked.

  Zarifzadeh et al. choose `a` by treating a reference model as the target. Here each of the
  first `max_stand_ins` usable reference models k in turn is attacked with offline RMIA, its
  reference set the other reference models (never k itself), its truth its own keep mask,
  for every a in `grid`; the a with the highest AUC, averaged over the stand-ins, wins (the
  smallest such a on a tie). AUC rather than TPR at a low FPR: it uses every candidate, so
  it is far less noisy on the few thousand candidates of an audit.

  Only reference models are read, so the real target's outputs and membership cannot sway
  the choice. A stand-in is scored on the candidates that have at least one OUT reference
  among the others, and is usable when those include a member and a non-member of it (with
  two reference models trained on complementary halves, neither is usable).

  Args:
    ref_logp: (R, N) log p_ref(y | x) of the candidates for R reference models.
    ref_in: (R, N) bool, True where reference r trained on candidate n.
    pop_ref_logp: (R, Z) the reference models' log-probabilities on the population samples.
    gamma: RMIA's threshold on LR(x) / LR(z).
    grid: the values of a to try, each in [0, 1].
    max_stand_ins: at most this many stand-in targets.

  Returns:
    An OfflineAChoice; its `a` is None when no reference model is usable.
  """
  ref = np.asarray(ref_logp, np.float64)
  sel = np.asarray(ref_in)
  pop = np.asarray(pop_ref_logp, np.float64)
  grid = np.asarray([check_offline_a(a) for a in grid])
  if ref.ndim != 2 or sel.shape != ref.shape or pop.ndim != 2 or len(pop) != len(ref):
    raise UserError(f"ref_logp, ref_in, pop_ref_logp: got shapes {ref.shape}, {sel.shape}, "
                    f"{pop.shape}; allowed: (R, N), (R, N), (R, Z)")
  stand_ins, aucs = [], []
  for k in range(len(ref)):
    if len(stand_ins) == max_stand_ins:
      break
    others = np.arange(len(ref)) != k
    covered = (~sel[others]).any(axis=0)
    truth = sel[k, covered]
    if not truth.any() or truth.all():
      continue
    stand_ins.append(k)
    aucs.append([metrics.roc_auc(scores(
        ref[k, covered], ref[others][:, covered], sel[others][:, covered], pop[k], pop[others],
        online=False, offline_a=a, gamma=gamma), truth) for a in grid])
  if not stand_ins:
    return OfflineAChoice(None, (), grid, np.empty(0))
  mean_auc = np.mean(aucs, axis=0)
  return OfflineAChoice(float(grid[int(np.argmax(mean_auc))]), tuple(stand_ins), grid, mean_auc)
