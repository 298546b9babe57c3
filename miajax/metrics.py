"""Membership-inference metrics: ROC summaries, the paper's gain and JS estimate, scores.

Everything here takes NumPy arrays and returns Python floats or NumPy arrays. One convention
holds throughout: a higher score means "more likely a member" (a training example), and
`is_member` is True for members. Computation is in float64, vectorised over examples.

References:
  Eq. 1 and Eq. 10 of the paper (`shared/paper/mia-pruning-paper.md`): the inference model's
  gain and its relation to the Jensen-Shannon divergence.
  Song & Mittal 2021, "Systematic evaluation of privacy risks of machine learning models":
  the modified prediction entropy (Mentr) and threshold attacks, global and class-dependent.
  Salem et al. 2019, "ML-Leaks": the label-free maximum-confidence attack.
  Carlini et al. 2022, "Membership inference attacks from first principles": the
  logit-scaled confidence and TPR at low FPR.
"""

import math

import numpy as np

from miajax.errors import UserError

# Probabilities are clipped to [EPS, 1 - EPS] before taking logs: a saturated float32 sigmoid
# is exactly 0 or 1, and one such example must not turn the mean gain into -inf.
EPS = 1e-7


def _vector(name, x, dtype=np.float64):
  """Returns `x` as a 1-D array, or raises UserError naming `name`."""
  a = np.asarray(x)
  if a.ndim != 1:
    raise UserError(f"{name}: shape {a.shape}; allowed: a 1-D array (one value per example)")
  if dtype is bool:
    if a.dtype != bool and not np.isin(a, (0, 1)).all():
      raise UserError(f"{name}: values {np.unique(a)[:5]}; allowed: booleans or 0/1")
    return a.astype(bool)
  a = a.astype(dtype)
  if not np.isfinite(a).all():
    raise UserError(f"{name}: {int((~np.isfinite(a)).sum())} non-finite values; "
                    "expected finite numbers")
  return a


def _scores_and_members(scores, is_member, *, name="scores", need_both=True):
  """Validates a (scores, is_member) pair of equal length with both groups present."""
  s = _vector(name, scores)
  m = _vector("is_member", is_member, bool)
  if s.shape != m.shape:
    raise UserError(f"is_member: length {m.shape[0]}; allowed: the length of {name}, "
                    f"{s.shape[0]}")
  if need_both and (m.all() or not m.any()):
    raise UserError(f"is_member: {int(m.sum())} members of {m.size}; "
                    "expected at least one member and one non-member")
  return s, m


def _roc_points(scores, is_member):
  """The ROC curve at every distinct score, from the strictest threshold down.

  Returns (fpr, tpr, thresholds). Point 0 is (0, 0) with threshold +inf (nothing flagged);
  point k >= 1 flags every example with score >= thresholds[k]. Tied scores fall on one
  point, so a tie can never be split (which would overstate TPR at a fixed FPR).
  """
  order = np.argsort(-scores, kind="stable")
  s = scores[order]
  m = is_member[order]
  # Last index of each run of equal scores in descending order.
  ends = np.flatnonzero(np.diff(s) != 0)
  ends = np.append(ends, s.size - 1)
  tps = np.cumsum(m)[ends]
  fps = ends + 1 - tps
  tpr = np.concatenate([[0.0], tps / m.sum()])
  fpr = np.concatenate([[0.0], fps / (~m).sum()])
  thresholds = np.concatenate([[np.inf], s[ends]])
  return fpr, tpr, thresholds


def roc_auc(scores, is_member) -> float:
  """Area under the ROC curve; ties count one half (the Mann-Whitney statistic)."""
  s, m = _scores_and_members(scores, is_member)
  fpr, tpr, _ = _roc_points(s, m)
  return float(np.trapezoid(tpr, fpr))


def tpr_at_fpr(scores, is_member, fpr: float) -> float | None:
  """TPR at the strictest-but-one threshold whose FPR is strictly below `fpr`.

  "Strictly below", as the LiRA reference code reads its ROC curve: the rate the caller names is
  never reached, only approached, so a low-FPR figure is not inflated by the point that sits
  exactly at it. With n <= 1/fpr non-members one false positive, 1/n, already reaches the
  rate, and "TPR at 0.1% FPR" would really be "TPR at no false positive": the result is then
  None (`tpr_report` says why); it takes floor(1/fpr) + 1 non-members (`min_nonmembers`).
  No interpolation; ties are never split.
  """
  if not 0.0 < fpr <= 1.0:
    raise UserError(f"fpr: {fpr!r}; allowed: a false-positive rate in (0, 1]")
  s, m = _scores_and_members(scores, is_member)
  if (~m).sum() < min_nonmembers(fpr):
    return None
  fprs, tprs, _ = _roc_points(s, m)
  return float(tprs[fprs < fpr].max())


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
  """The exact (Clopper-Pearson) `level` interval of a binomial proportion k / n."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  alpha = 1.0 - level
  lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
  hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
  return lo, hi


def min_nonmembers(fpr: float) -> int:
  """The fewest non-members a TPR at `fpr` is reported for: floor(1/fpr) + 1, the fewest n
  whose single false positive, 1/n, lies strictly below the rate."""
  n = math.floor(1.0 / fpr) + 1
  # 1/fpr is rounded: settle n by the comparison the ROC itself makes, fp / n < fpr.
  while n > 1 and 1.0 / (n - 1) < fpr:
    n -= 1
  while not 1.0 / n < fpr:
    n += 1
  return n


def tpr_report(scores, is_member, fprs=(0.001, 0.01)) -> tuple[dict, list[str]]:
  """{str(fpr): TPR or None} for results.json, and one note per None saying why."""
  values, notes = {}, []
  nonmembers = int((~_vector("is_member", is_member, bool)).sum())
  for f in fprs:
    values[str(f)] = tpr_at_fpr(scores, is_member, f)
    if values[str(f)] is None:
      notes.append(f"TPR at FPR {f}: null, {nonmembers} non-members were scored; an FPR "
                   f"below {f} needs at least {min_nonmembers(f)}")
  return values, notes


def balanced_accuracy(pred_member, is_member) -> float:
  """Mean of the true-positive rate (members) and the true-negative rate (non-members)."""
  p = _vector("pred_member", pred_member, bool)
  _, m = _scores_and_members(p, is_member, name="pred_member")
  return float(0.5 * (p[m].mean() + (~p[~m]).mean()))


def empirical_gain(p_member, is_member) -> float:
  """The inference model's gain, Eq. 1, with empirical means.

  G = mean_{members} log f_A + mean_{non-members} log(1 - f_A); it is <= 0, equals 0 for a
  perfect, certain attacker and -log 4 for one that always answers 0.5. Each group is
  averaged on its own, so the value does not depend on the member/non-member ratio.
  """
  p, m = _scores_and_members(p_member, is_member, name="p_member")
  if ((p < 0) | (p > 1)).any():
    raise UserError(f"p_member: values in [{p.min()}, {p.max()}]; allowed: probabilities "
                    "in [0, 1]")
  p = np.clip(p, EPS, 1.0 - EPS)
  return float(np.log(p[m]).mean() + np.log1p(-p[~m]).mean())


def js_from_gain(gain: float) -> float:
  """Jensen-Shannon divergence (nats) between member and non-member outputs, Eq. 10.

  Eq. 10: G_f(f_A*) = -log 4 + 2 JS(p_f || p'_f) for the optimal attacker f_A*, so
  JS = (G + log 4) / 2, in [0, log 2]. An actual attacker's gain is at most the optimum's, so
  the value is a lower-bound estimate; it is returned unclipped, and comes out negative when
  the attacker does worse than a constant 0.5 (e.g. an overfit attacker under no leakage).
  """
  return float((gain + math.log(4.0)) / 2.0)


def _logits_and_labels(logits, labels):
  """Validates (N, C) logits and (N,) integer labels in [0, C); returns float64 and int."""
  z = np.asarray(logits, dtype=np.float64)
  if z.ndim != 2 or z.shape[1] < 2:
    raise UserError(f"logits: shape {z.shape}; allowed: (N, C) with C >= 2 classes")
  if not np.isfinite(z).all():
    raise UserError(f"logits: {int((~np.isfinite(z)).sum())} non-finite values; "
                    "expected finite numbers")
  y = np.asarray(labels)
  if y.shape != z.shape[:1] or not np.issubdtype(y.dtype, np.integer):
    raise UserError(f"labels: shape {y.shape}, dtype {y.dtype}; allowed: ({z.shape[0]},) "
                    "integers")
  if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
    raise UserError(f"labels: values in [{y.min()}, {y.max()}]; allowed: classes in "
                    f"[0, {z.shape[1] - 1}]")
  return z, y.astype(np.int64)


def _log_softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _log1m_softmax(z, logp):
  """log(1 - softmax(z)_i) for every i, accurate even when softmax(z)_i rounds to 1.

  1 - p_i = sum_{j != i} exp(z_j) / sum_j exp(z_j). Only the arg-max class can have p_i near
  1; for it the sum over the other classes is taken directly, for the rest log1p(-p_i) is
  exact enough (p_i <= 1/2).
  """
  n = z.shape[0]
  top = z.argmax(axis=1)
  rows = np.arange(n)
  others = z.copy()
  others[rows, top] = -np.inf
  m2 = others.max(axis=1)
  lse_others = m2 + np.log(np.exp(others - m2[:, None]).sum(axis=1))
  m = z.max(axis=1)
  lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
  out = np.log1p(-np.exp(np.minimum(logp, math.log(0.5))))
  out[rows, top] = lse_others - lse
  return out


def loss_score(logits, labels) -> np.ndarray:
  """Negative cross-entropy, log softmax(logits)_y; (N,). Members tend to have lower loss."""
  z, y = _logits_and_labels(logits, labels)
  return _log_softmax(z)[np.arange(y.size), y]


def confidence_score(logits, labels) -> np.ndarray:
  """The largest softmax probability, max_i softmax(logits)_i; (N,). Ignores the label.

  Salem et al. 2019's label-free attack: a model is more confident on what it trained on,
  whatever the class. Unlike p_y it is not a function of the loss: a confidently wrong
  prediction scores high here and low on the loss. `labels` are validated, not used.
  """
  z, _ = _logits_and_labels(logits, labels)
  return np.exp(_log_softmax(z).max(axis=1))


def logit_score(logits, labels) -> np.ndarray:
  """Logit-scaled confidence phi(p_y) = log(p_y / (1 - p_y)), float64; (N,).

  Computed as z_y - logsumexp_{j != y} z_j, where the log-partition cancels, so it is finite
  and exact for logits of any size (Carlini et al. 2022 fit LiRA's Gaussians to it).

  phi is increasing in p_y, so in exact arithmetic it orders examples as the loss does and its
  global-threshold attack is the loss attack. In floating point it does not saturate: the
  float64 log-softmax of the label rounds to exactly 0 once the margin z_y - max_{j != y} z_j
  exceeds about 37 nats (exp(-37) is below half an ulp of 1), so confidently right examples
  all tie on the loss, while phi still tells them apart by their margins.
  """
  z, y = _logits_and_labels(logits, labels)
  rows = np.arange(y.size)
  label_logit = z[rows, y]
  others = z.copy()
  others[rows, y] = -np.inf
  top = others.max(axis=1)
  return label_logit - (top + np.log(np.exp(others - top[:, None]).sum(axis=1)))


def modified_entropy_score(logits, labels) -> np.ndarray:
  """Negated modified prediction entropy (Song & Mittal 2021), so higher = member; (N,).

  Mentr(p, y) = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i). It is 0 for a certain,
  correct prediction and grows without bound for a certain, wrong one, unlike the plain
  entropy, which cannot tell those two apart. Computed in log space from the logits, so it is
  finite for any finite logits.
  """
  z, y = _logits_and_labels(logits, labels)
  logp = _log_softmax(z)
  log1mp = _log1m_softmax(z, logp)
  rows = np.arange(y.size)
  true = np.exp(log1mp[rows, y]) * logp[rows, y]
  wrong_terms = np.exp(logp) * log1mp
  wrong_terms[rows, y] = 0.0
  return true + wrong_terms.sum(axis=1)


def fit_threshold(scores, is_member) -> float:
  """The score threshold maximising balanced accuracy on (scores, is_member).

  Ties between thresholds go to the strictest. The threshold sits midway between the chosen
  score and the next lower one, so new scores falling in the gap are not all decided by one
  side. Examples with score >= threshold are called members.
  """
  s, m = _scores_and_members(scores, is_member)
  fpr, tpr, thr = _roc_points(s, m)
  # Point 0 (flag nothing) has an infinite threshold and the same 0.5 as flagging everything.
  k = 1 + int(np.argmax(tpr[1:] - fpr[1:]))
  threshold = thr[k]
  if k + 1 < thr.size:
    mid = thr[k] + (thr[k + 1] - thr[k]) / 2.0
    if thr[k + 1] < mid <= thr[k]:
      threshold = mid
  return float(threshold)


def threshold_attack(train_scores, train_is_member, audit_scores, audit_is_member) -> dict:
  """A global score-threshold attack: fit the threshold on one set, measure on another.

  The threshold is `fit_threshold` of the attack-train set.

  Returns:
    {"accuracy": balanced accuracy on the audit set, "auc": ROC AUC of the audit scores,
     "threshold": the fitted threshold}, all floats.
  """
  s, m = _scores_and_members(train_scores, train_is_member, name="train_scores")
  threshold = fit_threshold(s, m)
  a, am = _scores_and_members(audit_scores, audit_is_member, name="audit_scores")
  return {
      "accuracy": balanced_accuracy(a >= threshold, am),
      "auc": roc_auc(a, am),
      "threshold": threshold,
  }


def class_thresholds(scores, is_member, labels, num_classes) -> tuple[np.ndarray, np.ndarray]:
  """Song & Mittal 2021's class-dependent thresholds: one `fit_threshold` per class.

  A class whose examples here include no member or no non-member has nothing to fit and
  falls back to the threshold fit on all examples.

  Args:
    scores, is_member, labels: the examples the thresholds are fit on, (N,) each.
    num_classes: C; labels lie in [0, C).

  Returns:
    (thresholds (C,) float64, fallback (C,) bool: which classes got the global threshold).
  """
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
      or num_classes < 1:
    raise UserError(f"num_classes: {num_classes!r}; allowed: a positive integer")
  s, m = _scores_and_members(scores, is_member)
  y = _labels("labels", labels, s.size, num_classes)
  members = np.bincount(y[m], minlength=num_classes)
  nonmembers = np.bincount(y[~m], minlength=num_classes)
  fallback = (members == 0) | (nonmembers == 0)
  thresholds = np.full(num_classes, fit_threshold(s, m))
  # A loop over classes, each fit vectorised over its examples.
  for c in np.flatnonzero(~fallback):
    thresholds[c] = fit_threshold(s[y == c], m[y == c])
  return thresholds, fallback


def class_threshold_attack(train_scores, train_is_member, train_labels, audit_scores,
                           audit_is_member, audit_labels, num_classes) -> dict:
  """Class-dependent thresholds fit on one set (`class_thresholds`), measured on another.

  Each audit example is judged against its own class's threshold; the AUC is that of the
  score minus the example's class threshold, the per-example score this attack ranks by.

  Returns:
    {"accuracy": balanced accuracy on the audit set, "auc": ROC AUC of the shifted audit
     scores, "thresholds": (C,) array, "fallback": (C,) bool array}.
  """
  thresholds, fallback = class_thresholds(train_scores, train_is_member, train_labels,
                                          num_classes)
  a, am = _scores_and_members(audit_scores, audit_is_member, name="audit_scores")
  shifted = a - thresholds[_labels("audit_labels", audit_labels, a.size, num_classes)]
  return {
      "accuracy": balanced_accuracy(shifted >= 0, am),
      "auc": roc_auc(shifted, am),
      "thresholds": thresholds,
      "fallback": fallback,
  }


def _resample_counts(rng, n, replicates):
  """(replicates, n) counts: how often each of n examples is drawn, n draws with replacement."""
  draws = rng.integers(0, n, size=(replicates, n))
  offsets = (np.arange(replicates) * n)[:, None]
  return np.bincount((draws + offsets).ravel(), minlength=replicates * n).reshape(
      replicates, n)


def _weighted_roc_stats(order_levels, w_in, w_out, n_in, n_out, fprs):
  """AUC and TPR below each FPR of many weighted copies of one sample, vectorised.

  Args:
    order_levels: (N,) the level (distinct score, 0 = highest) of each example, examples in
      descending score order.
    w_in, w_out: (R, N) weights of each example as a member / non-member in each replicate
      (0 for the other group), same order.
    n_in, n_out: total member and non-member weight per replicate.
    fprs: rates at which to read the TPR (strictly below, ties unsplit, as `tpr_at_fpr`).

  Returns:
    (auc (R,), {fpr: tpr (R,)}).
  """
  levels = int(order_levels[-1]) + 1
  ends = np.flatnonzero(np.diff(order_levels, append=levels))
  # Cumulative weight from the top, read at the end of each level: the ROC points.
  tp = np.cumsum(w_in, axis=1)[:, ends]
  fp = np.cumsum(w_out, axis=1)[:, ends]
  tp_level = np.diff(tp, axis=1, prepend=0)
  fp_level = np.diff(fp, axis=1, prepend=0)
  # Mann-Whitney: each member beats the non-members below its level, ties count one half.
  below = n_out - fp
  auc = (tp_level * (below + 0.5 * fp_level)).sum(axis=1) / (n_in * n_out)
  tprs = {}
  for f in fprs:
    allowed = (fp / n_out < f).sum(axis=1)   # fp rises with the level: a prefix is allowed
    at = np.take_along_axis(tp, np.maximum(allowed - 1, 0)[:, None], axis=1)[:, 0]
    tprs[f] = np.where(allowed > 0, at, 0.0) / n_in
  return auc, tprs


def bootstrap_intervals(scores, is_member, predicted=None, *, replicates=1000, seed=0,
                        level=0.95, fprs=(0.001, 0.01)) -> dict:
  """Percentile bootstrap intervals over the scored examples for AUC, accuracy and TPR.

  Stratified: each replicate redraws the members and the non-members separately, with
  replacement and at their own sizes, so every replicate keeps the sample's balance. The
  interval covers the sampling of these examples only (for an audit: which examples happen
  to be in the audit set), not the training randomness of the model that produced the
  scores. Vectorised over examples; replicates go in chunks to bound memory.

  Args:
    scores, is_member: (N,) scores (higher = member) and the truth.
    predicted: optional (N,) bool member calls whose balanced accuracy gets an interval.
    replicates: number of bootstrap replicates.
    seed: seeds the resampling.
    level: the interval's coverage.
    fprs: the FPRs at which TPR is read (strictly below, as `tpr_at_fpr`).

  Returns:
    {"auc": [lo, hi], "accuracy": [lo, hi] (None without `predicted`),
     "tpr_at_fpr": {str(fpr): [lo, hi], None where `tpr_at_fpr` is None}}, floats.
  """
  s, m = _scores_and_members(scores, is_member)
  if isinstance(replicates, bool) or not isinstance(replicates, (int, np.integer)) \
      or replicates < 2:
    raise UserError(f"replicates: {replicates!r}; allowed: an integer >= 2")
  if not 0.0 < level < 1.0:
    raise UserError(f"level: {level!r}; allowed: a coverage in (0, 1)")
  pred = None
  if predicted is not None:
    pred = _vector("predicted", predicted, bool)
    if pred.shape != s.shape:
      raise UserError(f"predicted: length {pred.size}; allowed: the length of scores, "
                      f"{s.size}")
  order = np.argsort(-s, kind="stable")
  s_sorted, m_sorted = s[order], m[order]
  order_levels = np.concatenate([[0], np.cumsum(np.diff(s_sorted) != 0)])
  members, nonmembers = np.flatnonzero(m_sorted), np.flatnonzero(~m_sorted)
  n_in, n_out = members.size, nonmembers.size
  measured = [f for f in fprs if n_out >= min_nonmembers(f)]
  rng = np.random.default_rng(seed)
  chunk = max(1, min(replicates, 1_000_000 // s.size))
  aucs, accs, tprs = [], [], {f: [] for f in measured}
  for start in range(0, replicates, chunk):
    r = min(chunk, replicates - start)
    w_in = np.zeros((r, s.size))
    w_out = np.zeros((r, s.size))
    w_in[:, members] = _resample_counts(rng, n_in, r)
    w_out[:, nonmembers] = _resample_counts(rng, n_out, r)
    auc, tpr = _weighted_roc_stats(order_levels, w_in, w_out, n_in, n_out, measured)
    aucs.append(auc)
    for f in measured:
      tprs[f].append(tpr[f])
    if pred is not None:
      p = pred[order]
      accs.append(0.5 * ((w_in @ p) / n_in + (w_out @ ~p) / n_out))

  def interval(values):
    lo, hi = np.quantile(np.concatenate(values), [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]

  return {
      "auc": interval(aucs),
      "accuracy": None if pred is None else interval(accs),
      "tpr_at_fpr": {str(f): interval(tprs[f]) if f in tprs else None for f in fprs},
  }


def _class_means(values, labels, num_classes):
  """Per-class mean of `values` and per-class counts, by bincount (no per-example loop)."""
  counts = np.bincount(labels, minlength=num_classes)
  sums = np.bincount(labels, weights=values.astype(np.float64), minlength=num_classes)
  with np.errstate(invalid="ignore", divide="ignore"):
    return sums / counts, counts


def _labels(name, labels, n, num_classes):
  y = np.asarray(labels)
  if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
    raise UserError(f"{name}: shape {y.shape}, dtype {y.dtype}; allowed: ({n},) integers")
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise UserError(f"{name}: values in [{y.min()}, {y.max()}]; allowed: classes in "
                    f"[0, {num_classes - 1}]")
  return y.astype(np.int64)


def per_class(train_correct, train_labels, test_correct, test_labels, attack_pred,
              attack_is_member, attack_labels, num_classes) -> dict:
  """Per-class accuracy gap and attack accuracy (the data of the paper's Fig. 4).

  Args:
    train_correct, train_labels: per training example, whether the classifier was right,
      and its class.
    test_correct, test_labels: the same for non-members.
    attack_pred, attack_is_member, attack_labels: the attack's member predictions on the
      audit set, the truth, and the examples' classes.
    num_classes: number of classes C.

  Returns:
    {str(c): {"train_accuracy", "test_accuracy", "gap" (train - test), "attack_accuracy"
    (balanced)}} for c in [0, C); a value whose examples are missing is None (for the attack
    accuracy: a class without members or without non-members).
  """
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise UserError(f"num_classes: {num_classes!r}; allowed: a positive integer")
  tc = _vector("train_correct", train_correct, bool)
  sc = _vector("test_correct", test_correct, bool)
  ap = _vector("attack_pred", attack_pred, bool)
  am = _vector("attack_is_member", attack_is_member, bool)
  if am.shape != ap.shape:
    raise UserError(f"attack_is_member: length {am.size}; allowed: the length of "
                    f"attack_pred, {ap.size}")
  tl = _labels("train_labels", train_labels, tc.size, num_classes)
  sl = _labels("test_labels", test_labels, sc.size, num_classes)
  al = _labels("attack_labels", attack_labels, ap.size, num_classes)
  train_acc, _ = _class_means(tc, tl, num_classes)
  test_acc, _ = _class_means(sc, sl, num_classes)
  tpr, n_in = _class_means(ap[am], al[am], num_classes)
  tnr, n_out = _class_means(~ap[~am], al[~am], num_classes)

  def value(x):
    return None if np.isnan(x) else float(x)

  out = {}
  for c in range(num_classes):
    gap = train_acc[c] - test_acc[c]
    attack = 0.5 * (tpr[c] + tnr[c]) if n_in[c] and n_out[c] else np.nan
    out[str(c)] = {
        "train_accuracy": value(train_acc[c]),
        "test_accuracy": value(test_acc[c]),
        "gap": value(gap),
        "attack_accuracy": value(attack),
    }
  return out
