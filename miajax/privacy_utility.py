"""The report's privacy-utility figure: each attack's AUC and TPR at 0.1% FPR against test
accuracy, one point per method or control (a group of trials: baseline, each pruning level,
keep 1.0, each weight decay, narrow, Min-Max, DP-SGD), with intervals.

Intervals: over seeds (95% t-interval of the mean, `results.mean_interval`) where a group has
two or more trials, else the single trial's 95% bootstrap interval over its audit examples
(which examples were audited, not training randomness); each point says which.
"""

from pathlib import Path
from typing import Any, Callable

from miajax import results

FPR = "0.001"


def _get(r: dict, *path):
  for key in path:
    if not isinstance(r, dict):
      return None
    r = r.get(key)
  return r


# name -> (AUC, TPR at FPR, AUC's bootstrap interval, TPR's bootstrap interval) of a record.
ATTACKS: dict[str, Callable[[dict], tuple]] = {
    "NN attack": lambda r: (r.get("attack_auc"), _get(r, "attack_tpr_at_fpr", FPR),
                            _get(r, "intervals", "attack_auc"),
                            _get(r, "intervals", "attack_tpr_at_fpr", FPR)),
    "best attack (chosen on split 0)": lambda r: (
        r.get("headline_auc"), _get(r, "headline_tpr_at_fpr", FPR),
        _get(r, "intervals", "headline_auc"), _get(r, "intervals", "headline_tpr_at_fpr", FPR)),
    "pruning-aware (SAMIA-style)": lambda r: (
        _get(r, "samia", "auc"), _get(r, "samia", "tpr_at_fpr", FPR),
        _get(r, "samia", "intervals", "auc"), _get(r, "samia", "intervals", "tpr_at_fpr", FPR)),
    "differencing (dense checkpoint)": lambda r: (
        _get(r, "differencing", "auc"), _get(r, "differencing", "tpr_at_fpr", FPR),
        _get(r, "differencing", "intervals", "auc"),
        _get(r, "differencing", "intervals", "tpr_at_fpr", FPR)),
    "LiRA online": lambda r: (_get(r, "lira", "online", "auc"),
                              _get(r, "lira", "online", "tpr_at_fpr", FPR), None, None),
}


def _estimate(values: list, intervals: list) -> dict | None:
  """{mean, lo, hi, over}: over seeds with two or more values, else the trial's bootstrap."""
  mean, half, n = results.mean_interval(values)
  if mean is None:
    return None
  if n >= 2:
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "over": f"{n} seeds"}
  interval = next((i for v, i in zip(values, intervals) if v is not None), None)
  lo, hi = interval if interval else (None, None)
  return {"mean": mean, "lo": lo, "hi": hi, "over": "bootstrap" if interval else "one trial"}


def points(records: list[dict]) -> dict[str, dict[str, dict]]:
  """{attack: {group: {test_accuracy, auc, tpr_at_fpr: {mean, lo, hi, over}}}} for each
  attack some record measured; the TPR is at FPR 0.1%."""
  out: dict[str, dict[str, dict]] = {}
  for attack, get in ATTACKS.items():
    for group, rs in results.group_records(records).items():
      got = [get(r) for r in rs]
      auc = _estimate([g[0] for g in got], [g[2] for g in got])
      if auc is None:
        continue
      acc = _estimate([r["test_accuracy"] for r in rs], [None] * len(rs))
      out.setdefault(attack, {})[group] = {
          "test_accuracy": acc, "auc": auc,
          "tpr_at_fpr": _estimate([g[1] for g in got], [g[3] for g in got])}
  return out


def plot(data: dict[str, dict[str, dict]], path: Path, pyplot, save) -> None:
  """Two panels (AUC; TPR at 0.1% FPR) against test accuracy: colour = method or control,
  marker = attack; bars = the intervals `points` gives."""
  plt = pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
  groups = list(dict.fromkeys(g for per in data.values() for g in per))
  cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  colour = {g: cycle[i % len(cycle)] for i, g in enumerate(groups)}
  markers = dict(zip(ATTACKS, ("o", "s", "^", "D", "v")))
  for ax, key, label in zip(axes, ("auc", "tpr_at_fpr"),
                            ("attack AUC (audit split)", "TPR at 0.1% FPR (audit split)")):
    drawn = 0
    for attack, per in data.items():
      for group, p in per.items():
        y, x = p[key], p["test_accuracy"]
        if y is None or y["mean"] is None:
          continue
        drawn += 1
        yerr = _err(y)
        xerr = _err(x)
        ax.errorbar(100 * x["mean"], y["mean"], yerr=yerr,
                    xerr=None if xerr is None else [[100 * e for e in xerr[0]],
                                                    [100 * e for e in xerr[1]]],
                    marker=markers[attack], color=colour[group], ms=6, capsize=3,
                    linestyle="none", alpha=0.85)
    if key == "auc":
      ax.axhline(0.5, color="grey", linestyle=":", linewidth=0.8)
    if not drawn:
      ax.text(0.5, 0.5, "not measured: too few audit non-members for this FPR",
              ha="center", va="center", transform=ax.transAxes, fontsize=9)
    ax.set(xlabel="test accuracy (%)", ylabel=label)
  handles = [plt.Line2D([], [], color=colour[g], marker="o", linestyle="none", label=g)
             for g in groups]
  handles += [plt.Line2D([], [], color="black", marker=markers[a], linestyle="none", label=a)
              for a in data]
  axes[1].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
  fig.suptitle("Attacks against utility per method and control (bars: 95% interval over "
               "seeds; one trial: its bootstrap over audit examples)", fontsize=10)
  save(fig, path)


def _err(p: dict[str, Any] | None):
  if p is None or p["lo"] is None or p["hi"] is None:
    return None
  return [[max(p["mean"] - p["lo"], 0.0)], [max(p["hi"] - p["mean"], 0.0)]]
