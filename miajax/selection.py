"""Algorithm 1's choice among the configurations a sweep trained, from their records.

Per swept method, every configuration (a trial group: the same swept values over its seeds) is
ranked by its `selection_gain`, the paper's attack's gain measured by cross-validation on
split 0, clipped at GAIN_FLOOR, and averaged over seeds. Configurations at the floor are tied
(none leaks more than a coin lets through) and ordered by their selection accuracy, higher
first, then by fewer nonzero weights. The selection accuracy is measured on split 0's
non-members (`reference`). The audit split, on which results are reported, plays no part, so
the reported numbers of the chosen configuration are not biased by the choice. Two choices are
recorded: the first in that order, and the first among configurations whose mean selection
accuracy is at most `max_accuracy_drop` below the baseline's (null without baseline trials or
when none qualifies).
"""

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from miajax import paths
from miajax import tables

# The gain of an attacker that always answers 0.5: -log 4. The attacker class holds that
# constant, so the best achievable gain is never below it; a lower cross-validated gain only
# says how badly the attack overfits.
GAIN_FLOOR = -math.log(4.0)


def clipped(gain: float) -> float:
  return max(float(gain), GAIN_FLOOR)


CRITERION = ("mean over seeds of the attack model's gain (Eq. 1) by k-fold cross-validation "
             "on split 0 (attack-train members and reference non-members), each seed's "
             "clipped at -log 4 (a coin's gain); configurations at that floor are tied and "
             "ordered by higher selection accuracy (on split 0's reference non-members), then "
             "fewer nonzero weights; the accuracy bound is on the selection accuracy; the "
             "audit split is not used")


def choose(records: Sequence[dict], max_accuracy_drop: float, folds: int) -> dict | None:
  """selection.json's content, or None when no method was swept."""
  baseline = [r for r in records if r["method"] == "baseline"]
  baseline_acc = _mean([r.get("selection_accuracy") for r in baseline])
  methods = {}
  # A sweep whose gains were not measured (config.audits without selection_gain) has no
  # Algorithm 1 choice.
  for method in dict.fromkeys(r["method"] for r in records
                              if r.get("sweep") and r.get("selection_gain") is not None):
    groups: dict[str, list[dict]] = {}
    for r in records:
      if r["method"] == method:
        groups.setdefault(r["group"], []).append(r)
    candidates = [_summary(name, rs) for name, rs in groups.items()]
    ranked = sorted(candidates, key=_order)
    within = [c for c in ranked if baseline_acc is not None
              and c["selection_accuracy"] is not None
              and baseline_acc - c["selection_accuracy"] <= max_accuracy_drop + 1e-9]
    methods[method] = {"candidates": candidates, "selected": ranked[0]["group"],
                       "selected_within_accuracy_drop": within[0]["group"] if within else None}
  if not methods:
    return None
  return {"criterion": CRITERION, "folds": folds, "max_accuracy_drop": max_accuracy_drop,
          "gain_floor": GAIN_FLOOR, "baseline_selection_accuracy": baseline_acc,
          "baseline_test_accuracy": _mean([r.get("test_accuracy") for r in baseline]),
          "methods": methods}


def _order(c: dict) -> tuple:
  """Smaller gain first; at equal gain (the floor), higher selection accuracy, fewer weights."""
  acc = c["selection_accuracy"]
  return c["selection_gain"], -acc if acc is not None else math.inf, c["weights_nonzero"]


def _mean(values: list) -> float | None:
  return float(np.mean(values)) if values and None not in values else None


def _raw_gain(r: dict) -> float:
  """A trial's mean fold gain before clipping (records without folds hold it unclipped)."""
  folds = r.get("selection_gain_folds")
  return float(np.mean(folds)) if folds else float(r["selection_gain"])


def _summary(group: str, rs: list[dict]) -> dict:
  mean = lambda key: float(np.mean([r[key] for r in rs]))
  raw = [_raw_gain(r) for r in rs]
  at_floor = all(g <= GAIN_FLOOR for g in raw)
  folds = [r.get("selection_gain_folds") for r in rs]
  fold_gains = [g for f in folds if f for g in f]
  return {"group": group, "sweep": rs[0]["sweep"], "seeds": [r["seed"] for r in rs],
          "selection_gain": GAIN_FLOOR if at_floor else float(np.mean(list(map(clipped, raw)))),
          "selection_gain_raw": float(np.mean(raw)),
          # Every fold's raw gain over every seed: the spread the mean comes from.
          "selection_gain_interval": ([min(fold_gains), max(fold_gains)]
                                      if all(folds) else None),
          "at_floor": at_floor,
          "selection_accuracy": _mean([r.get("selection_accuracy") for r in rs]),
          "test_accuracy": mean("test_accuracy"),
          "audit_attack_auc": mean("attack_auc"), "audit_attack_accuracy": mean("attack_accuracy"),
          "weights_nonzero": mean("weights_nonzero")}


def write(workdir: str | Path, selection: dict) -> None:
  paths.write_text(paths.of(workdir) / "selection.json", json.dumps(selection, indent=1))


def table(selection: dict) -> str:
  """One row per candidate; `*` marks the choice, `+` the choice within the accuracy bound."""
  head = ("method", "configuration", "CV gain", "CV fold range", "select acc", "test acc",
          "audit AUC", "nonzero", "chosen")
  pct = lambda x: "-" if x is None else f"{100 * x:.2f}"
  rows = [head]
  for method, m in selection["methods"].items():
    for c in m["candidates"]:
      mark = ("*" if c["group"] == m["selected"] else "") + (
          "+" if c["group"] == m["selected_within_accuracy_drop"] else "")
      spread = c.get("selection_gain_interval")
      rows.append((method, c["group"],
                   f"{c['selection_gain']:.4f}" + (" floor" if c.get("at_floor") else ""),
                   "-" if spread is None else f"[{spread[0]:.2f}, {spread[1]:.2f}]",
                   pct(c.get("selection_accuracy")), pct(c["test_accuracy"]),
                   f"{c['audit_attack_auc']:.3f}", f"{c['weights_nonzero']:.0f}", mark))
  lines = tables.text(rows, left=(0, 1))
  if "gain_floor" not in selection:    # written before the floor and the selection accuracy
    return "\n".join(lines + [f"Algorithm 1: {selection['criterion']}."])
  drop = 100 * selection["max_accuracy_drop"]
  baseline = selection.get("baseline_selection_accuracy")
  lines += [
      f"Algorithm 1 (audit split unused): * the smallest attack gain by {selection['folds']}-"
      "fold cross-validation on split 0, each seed's clipped at the floor -log 4 = "
      f"{GAIN_FLOOR:.4f} (a coin's gain);",
      "configurations at the floor are tied and ordered by higher select acc (accuracy on "
      "split 0's reference non-members), then fewer nonzero weights;",
      f"+ the same among configurations whose select acc is within {drop:g} points of the "
      f"baseline's ({pct(baseline)}). CV fold range: min and max of the raw fold gains over "
      "all seeds."]
  return "\n".join(lines)
