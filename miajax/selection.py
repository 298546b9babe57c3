"""Algorithm 1's choice among the configurations a sweep trained, from their records.

Per swept method, every configuration (a trial group: the same swept values over its seeds) is
ranked by its mean `selection_gain`, the paper's attack's gain measured by cross-validation on
split 0; the audit split, on which results are reported, plays no part, so the reported numbers
of the chosen configuration are not biased by the choice. Two choices are recorded: the smallest
gain, and the smallest gain among configurations whose mean test accuracy is at most
`max_accuracy_drop` below the baseline's (null without baseline trials or when none qualifies).
"""

import json
from pathlib import Path
from typing import Sequence

import numpy as np

CRITERION = ("mean over seeds of the attack model's gain (Eq. 1) by k-fold cross-validation "
             "on split 0 (attack-train members and reference non-members); the audit split is "
             "not used")


def choose(records: Sequence[dict], max_accuracy_drop: float, folds: int) -> dict | None:
  """selection.json's content, or None when no method was swept."""
  baseline = [r["test_accuracy"] for r in records if r["method"] == "baseline"]
  baseline_acc = float(np.mean(baseline)) if baseline else None
  methods = {}
  for method in dict.fromkeys(r["method"] for r in records if r.get("sweep")):
    groups: dict[str, list[dict]] = {}
    for r in records:
      if r["method"] == method:
        groups.setdefault(r["group"], []).append(r)
    candidates = [_summary(name, rs) for name, rs in groups.items()]
    ranked = sorted(candidates, key=lambda c: c["selection_gain"])
    within = [c for c in ranked if baseline_acc is not None
              and baseline_acc - c["test_accuracy"] <= max_accuracy_drop + 1e-9]
    methods[method] = {"candidates": candidates, "selected": ranked[0]["group"],
                       "selected_within_accuracy_drop": within[0]["group"] if within else None}
  if not methods:
    return None
  return {"criterion": CRITERION, "folds": folds, "max_accuracy_drop": max_accuracy_drop,
          "baseline_test_accuracy": baseline_acc, "methods": methods}


def _summary(group: str, rs: list[dict]) -> dict:
  mean = lambda key: float(np.mean([r[key] for r in rs]))
  return {"group": group, "sweep": rs[0]["sweep"], "seeds": [r["seed"] for r in rs],
          "selection_gain": mean("selection_gain"), "test_accuracy": mean("test_accuracy"),
          "audit_attack_auc": mean("attack_auc"), "audit_attack_accuracy": mean("attack_accuracy"),
          "weights_nonzero": mean("weights_nonzero")}


def write(workdir: str | Path, selection: dict) -> None:
  (Path(workdir) / "selection.json").write_text(json.dumps(selection, indent=1))


def table(selection: dict) -> str:
  """One row per candidate; `*` marks the choice, `+` the choice within the accuracy bound."""
  head = ("method", "configuration", "CV gain", "test acc", "audit AUC", "nonzero", "chosen")
  rows = [head]
  for method, m in selection["methods"].items():
    for c in m["candidates"]:
      mark = ("*" if c["group"] == m["selected"] else "") + (
          "+" if c["group"] == m["selected_within_accuracy_drop"] else "")
      rows.append((method, c["group"], f"{c['selection_gain']:.4f}",
                   f"{100 * c['test_accuracy']:.2f}", f"{c['audit_attack_auc']:.3f}",
                   f"{c['weights_nonzero']:.0f}", mark))
  widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
  lines = ["  ".join(cell.rjust(w) if i > 1 else cell.ljust(w)
                     for i, (cell, w) in enumerate(zip(r, widths))) for r in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  drop = 100 * selection["max_accuracy_drop"]
  lines.append(f"Algorithm 1: * smallest attack gain by {selection['folds']}-fold "
               f"cross-validation on split 0 (audit split unused); + the same among "
               f"configurations within {drop:g} points of the baseline's test accuracy.")
  return "\n".join(lines)
