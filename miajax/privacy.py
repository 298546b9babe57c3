"""The privacy-utility picture: every defence on one scale, empirical epsilon against test
accuracy (records of a run with the `epsilon` audit, audits/epsilon.py).

Per group of trials (method and swept values): test accuracy, the empirical epsilon lower
bound (95%, from the canaries where the run planted them) with the interval of the epsilon the
chosen threshold's rates require, the one-run bound, TPR at 0.1% FPR of the headline attack,
and for DP-SGD the accounted epsilon beside it: an empirical bound above the accounted one
says the implementation does not do what its accountant assumes.
"""

import math
from typing import Any

from miajax import epsilon as epsilon_lib
from miajax import results

FPR = "0.001"


def _canary_or_ordinary(r: dict) -> dict | None:
  audit = r.get("epsilon_audit") or {}
  return audit.get("canaries") or audit.get("ordinary")


def _interval(r: dict) -> list | None:
  """The trial's `level` interval of the epsilon its threshold's rates require, recomputed
  from the counts (records from before the interval was recorded have the counts)."""
  got = _canary_or_ordinary(r)
  if not got or got.get("tp") is None:
    return None
  return list(epsilon_lib.counts_interval(got["tp"], got["members"], got["fp"],
                                          got["nonmembers"], got["delta"], got["level"]))


def points(records: list[dict]) -> dict[str, dict[str, Any]]:
  """{group: {method, trials, test_accuracy, epsilon_lower_bound, epsilon_lower_bound_one_run,
  tpr_at_0.1%_fpr (each {mean, half, n, values}: mean and 95% t-interval over seeds),
  epsilon_intervals (per trial), dp_epsilon (accounted, per trial), within_accounted (every
  DP trial's bounds at or below its accounted epsilon; None for other methods), source}} for
  the groups whose records carry an epsilon audit; {} without one."""
  out = {}
  for name, rs in results.group_records(records).items():
    rs = [r for r in rs if r.get("epsilon_audit")]
    if not rs:
      continue
    stat = lambda values: dict(zip(("mean", "half", "n"), results.mean_interval(values))) | {
        "values": values}
    tpr = [(r.get("headline_tpr_at_fpr") or {}).get(FPR) for r in rs]
    accounted = [r.get("dp_epsilon") for r in rs]
    bounds = [(r.get("epsilon_lower_bound"), r.get("epsilon_lower_bound_one_run"))
              for r in rs]
    within = None
    if any(a is not None for a in accounted):
      within = all(b is None or b <= a for a, pair in zip(accounted, bounds) for b in pair)
    out[name] = {
        "method": rs[0]["method"], "trials": [r["name"] for r in rs],
        "source": "canaries" if (rs[0]["epsilon_audit"].get("canaries")) else "ordinary",
        "test_accuracy": stat([r.get("test_accuracy") for r in rs]),
        "epsilon_lower_bound": stat([b for b, _ in bounds]),
        "epsilon_lower_bound_one_run": stat([b for _, b in bounds]),
        "epsilon_intervals": [_interval(r) for r in rs],
        "tpr_at_0.1%_fpr": stat(tpr),
        "dp_epsilon": accounted, "within_accounted": within}
  return out


def _mean(s: dict, spec: str, scale: float = 1.0) -> str:
  if s["mean"] is None:
    return "-"
  text = format(scale * s["mean"], spec)
  return text if s["half"] is None else f"{text}±{format(scale * s['half'], spec)}"


def _span(intervals: list) -> str:
  """One trial's interval as [lo, hi] (hi "inf" where unbounded); several: their hull."""
  got = [i for i in intervals if i]
  if not got:
    return "-"
  lo = min(i[0] for i in got)
  his = [i[1] for i in got]
  hi = "inf" if any(h is None for h in his) else f"{max(his):.2f}"
  return f"[{lo:.2f}, {hi}]"


def table(pts: dict[str, dict[str, Any]]) -> str:
  if not pts:
    return ""
  rows = [["group", "seeds", "test acc", "eps lower bound", "eps interval", "one-run bound",
           "TPR@0.1%FPR", "accounted eps", "audit"]]
  for g, p in pts.items():
    accounted = [a for a in p["dp_epsilon"] if a is not None]
    rows.append([
        g, str(len(p["trials"])), _mean(p["test_accuracy"], ".2f", 100),
        _mean(p["epsilon_lower_bound"], ".2f"), _span(p["epsilon_intervals"]),
        _mean(p["epsilon_lower_bound_one_run"], ".2f"),
        _mean(p["tpr_at_0.1%_fpr"], ".2f", 100),
        "-" if not accounted else ", ".join(f"{a:.2f}" for a in accounted),
        {None: "-", True: "within", False: "EXCEEDED"}[p["within_accounted"]]])
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
           for r in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  source = {p["source"] for p in pts.values()}
  lines += [
      "eps lower bound: with 95% confidence the training is not (eps, delta)-DP for any "
      "smaller eps (delta = dp.delta), from the loss on "
      + (" and ".join(sorted(source)).replace("canaries", "the canaries (threshold chosen on "
                                              "half of them, bound on the other half)")
         .replace("ordinary", "ordinary examples (threshold on split 0, bound on the audit "
                  "split)")) + "; mean±95% t-interval over seeds",
      "eps interval: 95% interval of the eps that the chosen threshold's true TPR/FPR require "
      "(lower end = the bound); one-run: Steinke et al. 2023 on the same canaries",
      "TPR@0.1%FPR: the headline attack's, in %, on the audit split's ordinary examples; "
      "audit: DP-SGD's bounds against its accounted eps"]
  return "\n".join(lines)


def comparison(pts: dict[str, dict[str, Any]], a: str = "pruning", b: str = "dp") -> str:
  """"at equal test accuracy, A's empirical epsilon is X vs B's Y": the groups of methods a
  and b closest in mean test accuracy; "" when either method is absent."""
  ga = {g: p for g, p in pts.items() if p["method"] == a and p["test_accuracy"]["mean"]
        is not None}
  gb = {g: p for g, p in pts.items() if p["method"] == b and p["test_accuracy"]["mean"]
        is not None}
  if not ga or not gb:
    return ""
  x, y = min(((x, y) for x in ga for y in gb), key=lambda xy: abs(
      ga[xy[0]]["test_accuracy"]["mean"] - gb[xy[1]]["test_accuracy"]["mean"]))

  def says(p):
    return (f"{_mean(p['epsilon_lower_bound'], '.2f')} (95% lower bound; interval "
            f"{_span(p['epsilon_intervals'])}, one-run {_mean(p['epsilon_lower_bound_one_run'], '.2f')})")

  acc = lambda p: _mean(p["test_accuracy"], ".2f", 100)
  gap = abs(ga[x]["test_accuracy"]["mean"] - gb[y]["test_accuracy"]["mean"]) * 100
  return (f"at equal test accuracy ({x} {acc(ga[x])}% vs {y} {acc(gb[y])}%, the closest pair, "
          f"{gap:.2f} points apart), {a}'s empirical epsilon is {says(ga[x])} vs {b}'s "
          f"{says(gb[y])}")


def plot(pts: dict[str, dict[str, Any]], path, pyplot) -> None:
  """Empirical epsilon and TPR at 0.1% FPR against test accuracy, a marker per method."""
  plt = pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  methods = list(dict.fromkeys(p["method"] for p in pts.values()))
  markers = dict(zip(methods, "osD^vx+*"))
  for m in methods:
    ps = [(g, p) for g, p in pts.items() if p["method"] == m]
    for ax, key in zip(axes, ("epsilon_lower_bound", "tpr_at_0.1%_fpr")):
      xs = [100 * p["test_accuracy"]["mean"] for _, p in ps]
      ys = [p[key]["mean"] for _, p in ps]
      keep = [i for i, y in enumerate(ys) if y is not None and math.isfinite(y)]
      if not keep:
        continue
      err = [p[key]["half"] or 0.0 for _, p in ps]
      ax.errorbar([xs[i] for i in keep], [ys[i] for i in keep],
                  yerr=[err[i] for i in keep], marker=markers[m], linestyle="", label=m,
                  capsize=3)
      for i in keep:
        ax.annotate(ps[i][0].removeprefix(m).strip("-") or m, (xs[i], ys[i]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
  axes[0].set_ylabel("empirical epsilon (95% lower bound)")
  axes[1].set_ylabel("TPR at 0.1% FPR (headline attack)")
  for ax in axes:
    ax.set_xlabel("test accuracy (%)")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
