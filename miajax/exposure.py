"""Per-example exposure: do a defence's gains reach the examples that leak most?

An average AUC can fall while the most exposed examples stay exposed (the "privacy onion",
Carlini et al. 2022). In a LiRA run every method's target trains on the same half of the same
pool (one `lira_keep.npz`), so each member's online LiRA score can be followed from the
baseline's target to each defence's. For the baseline's most exposed 1% of members this
reports their median score under each defence and the share of them each defence's own
LiRA still calls members at 0.1% FPR. One target's top 1% is a few dozen examples; with every
model of the stacks in turn as the target (`lira.rotated`), the same is pooled over all of them.
"""

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from miajax import paths
from miajax import results
from miajax import tables

TOP_FRACTION = 0.01
FPR = 0.001
REFERENCE = "baseline"


def threshold_at_fpr(scores: np.ndarray, is_member: np.ndarray, fpr: float = FPR) -> float:
  """The lowest threshold t with FPR(score > t) < fpr: at most ceil(fpr * n) - 1 of the n
  non-members score above it (none where fpr * n <= 1)."""
  out = np.sort(scores[~is_member])[::-1]
  allowed = max(0, math.ceil(fpr * out.size) - 1)
  return float(out[allowed])


def _target_scores(workdir: Path, record: dict) -> tuple[np.ndarray, np.ndarray] | None:
  path = workdir / record["name"] / "lira_scores.npz"
  if not path.is_file():
    return None
  with paths.load_npz(path) as f:
    if "score_lira_online" not in f:
      return None
    return np.asarray(f["score_lira_online"], np.float64), np.asarray(f["is_member"], bool)


def _rotated_scores(workdir: Path, record: dict) -> tuple[np.ndarray, np.ndarray] | None:
  """Every model of the stack as the target: scores and membership, (models, pool) each."""
  with paths.load_npz(workdir / record["name"] / "lira_scores.npz") as f:
    if "rotated_score" not in f:
      return None
    member = np.asarray(f["rotated_is_member"], bool)
    models = member.size // len(f["is_member"])
    return (np.asarray(f["rotated_score"], np.float64).reshape(models, -1),
            member.reshape(models, -1))


def _top(base: np.ndarray, member: np.ndarray) -> np.ndarray:
  """The members with the highest 1% of one target's scores."""
  members = np.flatnonzero(member)
  k = max(1, math.ceil(TOP_FRACTION * members.size))
  return members[np.argsort(-base[members], kind="stable")[:k]]


def _followed(tops, members, scores) -> dict[str, float]:
  """The baseline's top members of each target (`tops`), followed into the defence's target
  on the same half (`members`, `scores`), pooled over the targets."""
  picked = [s[t] for s, t in zip(scores, tops)]
  called = [s[t] > threshold_at_fpr(s, m) for s, t, m in zip(scores, tops, members)]
  return {"median_score": float(np.median(np.concatenate(picked))),
          "still_called_members": float(np.mean(np.concatenate(called)))}


def compare(workdir: str | Path, records: Sequence[dict], notes: list[str]) -> dict[str, Any]:
  """{"top": k, "members": n, "fpr": FPR, "methods": {group: {median_score,
  still_called_members, median_score_all_members}}, "rotated": {"targets": m, "top": m * k,
  "methods": {group: {median_score, still_called_members}}}} for a LiRA run with a baseline
  target ("rotated" where every stack saved its rotated scores, over its m models, each model
  followed into the same model of each defence's stack); {} otherwise (a note says why where
  it matters)."""
  workdir = paths.of(workdir)
  targets = {results.group_of(r): r for r in records if r.get("lira")}
  if REFERENCE not in targets:
    return {}
  loaded = {g: _target_scores(workdir, r) for g, r in targets.items()}
  if loaded[REFERENCE] is None:
    notes.append("exposure: the baseline target has no lira_scores.npz")
    return {}
  base, member = loaded[REFERENCE]
  top = _top(base, member)
  out = {"top": len(top), "members": int(member.sum()), "fpr": FPR, "methods": {}}
  for g, got in loaded.items():
    if got is None or not np.array_equal(got[1], member):
      notes.append(f"exposure: {g} is not scored on the baseline target's members; left out")
      continue
    scores, _ = got
    out["methods"][g] = _followed([top], [member], [scores]) | {
        "median_score_all_members": float(np.median(scores[member]))}
  rotated = {g: _rotated_scores(workdir, targets[g]) for g in out["methods"]}
  if all(r is not None for r in rotated.values()):
    base_all, member_all = rotated[REFERENCE]
    tops = [_top(b, m) for b, m in zip(base_all, member_all)]
    out["rotated"] = {"targets": len(tops), "top": sum(map(len, tops)), "methods": {}}
    for g, (scores_all, member_g) in rotated.items():
      if not np.array_equal(member_g, member_all):
        notes.append(f"exposure: {g}'s models are not on the baseline's halves; left out")
        continue
      out["rotated"]["methods"][g] = _followed(tops, member_all, scores_all)
  return out


def table(exposure: dict[str, Any]) -> str:
  if not exposure:
    return ""
  rotated = exposure.get("rotated", {})
  rows = [["method", "top-1% median score", "called at 0.1% FPR", "all members' median"]]
  if rotated:
    rows[0] += [f"called, {rotated['targets']} targets", "their median score"]
  for g, e in exposure["methods"].items():
    rows.append([g, f"{e['median_score']:.3g}", f"{100 * e['still_called_members']:.0f}%",
                 f"{e['median_score_all_members']:.3g}"])
    if rotated:
      r = rotated["methods"].get(g)
      rows[-1] += (["-", "-"] if r is None else
                   [f"{100 * r['still_called_members']:.1f}%", f"{r['median_score']:.3g}"])
  lines = tables.text(rows)
  lines.append(f"the baseline target's {exposure['top']} most exposed of {exposure['members']} "
               "members (highest online LiRA score), followed into each method's target "
               "(same pool, same half); called: above that target's own 0.1%-FPR threshold")
  if rotated:
    lines.append(f"{rotated['targets']} targets: each model of the baseline's stack in turn, "
                 f"its top 1% ({rotated['top']} in all) followed into the same model of each "
                 "method's stack, scored against that stack's other models")
  return "\n".join(lines)
