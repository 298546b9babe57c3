"""Paired comparisons: each trial against the reference (baseline) trial of the same seed and
membership split, with a t-interval and exact sign-flip and sign-test p-values.

A defence's trial of seed k shares with the baseline's seed k its initialisation and data order
(pruning even continues it) and, with `split_per_trial`, its membership split; a difference
within a pair removes what both share, which the unpaired ± over seeds of `results.table`
does not. With `split_per_trial` the pairs also differ in their split, so the interval covers
the split's sampling; with one shared split it covers training randomness only.
"""

import itertools
import json
import math
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats

from miajax import results
from miajax import tables

REFERENCE = "baseline"
# (record key shown, header, getter, format): what is compared within each pair, before what
# the audits add (`Audit.paired`, `metrics`).
Metric = tuple[str, str, Callable[[dict], Any], str]
OWN_METRICS: tuple[Metric, ...] = (
    ("test_accuracy", "test acc", lambda r: r.get("test_accuracy"), "pct"),
    ("attack_auc", "attack AUC", lambda r: r.get("attack_auc"), "f3"),
    ("headline_auc", "best attack AUC", lambda r: r.get("headline_auc"), "f3"),
    ("headline_tpr_at_0.001", "best attack TPR@0.1%",
     lambda r: (r.get("headline_tpr_at_fpr") or {}).get("0.001"), "pct"),
)
# Up to this many pairs every sign pattern is enumerated; beyond, a seeded sample of them.
EXACT_UP_TO = 20
SAMPLED_PATTERNS = 1 << 16


def _key(r: dict) -> tuple:
  """What a pair shares: the trial seed and the membership split's seed."""
  return r["seed"], json.dumps(r.get("split_seed"))


def pairs(records: Sequence[dict], reference: str = REFERENCE) -> dict[str, list[tuple]]:
  """{group: [(reference record, record), ...]} for every group but the reference, pairs in
  seed order; a record without a reference of its seed and split is left out."""
  ref = {_key(r): r for r in records if results.group_of(r) == reference}
  out: dict[str, list[tuple]] = {}
  for r in sorted(records, key=lambda r: (r["seed"], json.dumps(r.get("split_seed")))):
    g = results.group_of(r)
    if g != reference:
      out.setdefault(g, [])
      if _key(r) in ref:
        out[g].append((ref[_key(r)], r))
  return out


def sign_flip_p(d: Sequence[float], seed: int = 0) -> float:
  """Two-sided p-value of "the differences are symmetric about 0": the share of sign patterns
  whose mean is at least as far from 0 as the observed one (exact up to EXACT_UP_TO pairs)."""
  d = np.asarray(d, np.float64)
  observed = abs(d.mean())
  if len(d) <= EXACT_UP_TO:
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    means = np.abs(signs @ d) / len(d)
    return float(np.mean(means >= observed - 1e-12))
  signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(SAMPLED_PATTERNS, len(d)))
  hits = np.sum(np.abs(signs @ d) / len(d) >= observed - 1e-12)
  return float((hits + 1) / (SAMPLED_PATTERNS + 1))


def sign_test_p(d: Sequence[float]) -> float:
  """Two-sided exact binomial test on the signs of the nonzero differences."""
  d = np.asarray(d, np.float64)
  pos, neg = int(np.sum(d > 0)), int(np.sum(d < 0))
  if pos + neg == 0:
    return 1.0
  return float(stats.binomtest(pos, pos + neg, 0.5).pvalue)


def summary(d: Sequence[float]) -> dict[str, Any]:
  """Mean paired difference, its 95% t-interval half-width (None below 2 pairs), the
  p-values, and how many pairs went each way."""
  d = np.asarray([x for x in d if x is not None and math.isfinite(x)], np.float64)
  n = len(d)
  if n == 0:
    return {"n": 0, "mean": None, "half": None, "p_sign_flip": None, "p_sign": None,
            "up": 0, "down": 0}
  half = (float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)) if n > 1 else None)
  return {"n": n, "mean": float(d.mean()), "half": half, "p_sign_flip": sign_flip_p(d),
          "p_sign": sign_test_p(d), "up": int(np.sum(d > 0)), "down": int(np.sum(d < 0))}


def metrics() -> tuple[Metric, ...]:
  """What is compared within each pair: OWN_METRICS, then every registered audit's `paired`
  metrics in registry order (shown where a pair measured them)."""
  from miajax import audits  # pylint: disable=g-import-not-at-top
  return OWN_METRICS + tuple(m for a in audits.registered() for m in a.paired)


def compare(records: Sequence[dict], reference: str = REFERENCE) -> dict[str, dict]:
  """{group: {"pairs": n, "splits": distinct splits, metric key: summary of the differences
  (group - reference)}}; {} when the run has no reference group."""
  if not any(results.group_of(r) == reference for r in records):
    return {}
  out = {}
  for g, ps in pairs(records, reference).items():
    row: dict[str, Any] = {"pairs": len(ps), "splits": len({_key(r)[1] for _, r in ps})}
    for key, _, get, _ in metrics():
      diffs = [None if get(r) is None or get(b) is None else get(r) - get(b) for b, r in ps]
      row[key] = summary(diffs)
    out[g] = row
  return out


def gap(records: Sequence[dict]) -> float | None:
  """Mean over the records of the split-0 generalisation gap: accuracy on split 0's members
  minus on its reference non-members (`selection_train_accuracy - selection_accuracy`)."""
  gaps = [r["selection_train_accuracy"] - r["selection_accuracy"] for r in records
          if r.get("selection_train_accuracy") is not None
          and r.get("selection_accuracy") is not None]
  return float(np.mean(gaps)) if gaps else None


def matched(records: Sequence[dict], control: str = "regularised") -> dict[str, dict]:
  """For each group of another defence than `control` and the reference, the `control` group
  (e.g. one weight decay of a sweep) whose split-0 generalisation gap is nearest its own.

  A control for "does any regulariser do this?": the same memorisation, measured without the
  audit split, so nothing reported is chosen on it. {} without `control` groups."""
  groups = results.group_records(records)
  controls = {g: gap(rs) for g, rs in groups.items()
              if rs[0]["method"] == control and gap(rs) is not None}
  if not controls:
    return {}
  out = {}
  for g, rs in groups.items():
    if rs[0]["method"] in (control, REFERENCE) or gap(rs) is None:
      continue
    nearest = min(controls, key=lambda c: abs(controls[c] - gap(rs)))
    out[g] = {"control": nearest, "gap": gap(rs), "control_gap": controls[nearest],
              "control_gaps": controls}
  return out


def _cell(s: dict, kind: str) -> str:
  if s["mean"] is None:
    return "-"
  scale, spec = (100, "+.2f") if kind == "pct" else (1, "+.3f")
  text = format(s["mean"] * scale, spec)
  if s["half"] is not None:
    text += f"±{format(s['half'] * scale, spec.lstrip('+'))}"
  return f"{text} p={s['p_sign_flip']:.3g} ({s['down']}-,{s['up']}+)"


def table(comparison: dict[str, dict], reference: str = REFERENCE,
          matches: dict[str, dict] | None = None) -> str:
  """The paired table: one row per group, each metric's mean difference from the reference
  with its 95% t-interval, the exact sign-flip p-value and how many pairs fell and rose; with
  `matches` (`matched`), a line per group naming its matched control."""
  if not comparison:
    return ""
  # A metric no pair measured (an audit the run did not list) gets no column.
  shown = [m for m in metrics() if any(c[m[0]]["n"] for c in comparison.values())]
  header = ["method", "pairs", "splits"] + [f"Δ {h}" for _, h, _, _ in shown]
  rows = [header] + [[g, str(c["pairs"]), str(c["splits"])] +
                     [_cell(c[key], kind) for key, _, _, kind in shown]
                     for g, c in comparison.items()]
  lines = tables.text(rows)
  splits = max(c["splits"] for c in comparison.values())
  lines += [f"Δ: the method's trial minus the {reference} trial of the same seed and "
            "membership split (percentage points for accuracies and TPR); ±: 95% t-interval "
            "over the pairs; p: exact two-sided sign-flip test; (k-,m+): pairs that fell, rose",
            "covers the membership split's sampling too (one split per pair)" if splits > 1
            else "covers training randomness only: every pair shares one membership split"]
  for g, m in (matches or {}).items():
    lines.append(f"matched control for {g}: {m['control']} (split-0 train-test gap "
                 f"{100 * m['control_gap']:.2f} vs {100 * m['gap']:.2f} points; chosen "
                 "without the audit split)")
  return "\n".join(lines)
