"""python -m miajax.report DIR [--out OUT]: the paper's tables and figures from a workdir.

Reads only what a run left on disk (results.json, each trial's metrics.jsonl, scores.npz and
final checkpoint) and writes, to OUT (default DIR/report):

  table1.md             the method comparison (mean ± 95% interval over seeds, Table 1/2),
                        each method paired against the baseline of the same seed and split
                        (`paired`: t-interval, exact sign-flip p-value, matched controls),
                        in a LiRA run the baseline's most exposed members under each
                        defence (`exposure`),
                        the weight-pruning table (Table 4) and the DP-SGD rows with epsilon;
                        also printed
  fig2_loss.png         training cross-entropy against step per method, phases marked
                        (Fig. 2, top); where the method adds terms to its objective (ADMM's
                        proximal term, Min-Max's adversarial term), those in a panel of
                        their own
  fig4_gap_vs_attack.png  per-class attack accuracy against the train/non-train accuracy gap
                        (Fig. 4)
  roc.png               log-log ROC curves of every attack in scores.npz on the audit split,
                        one seed per method (Carlini et al. 2022), attacks by their display
                        names (ATTACK_NAMES)
  fig3_weights.png      histogram of the nonzero prunable weights of the final checkpoint,
                        one seed per method (Fig. 3)
  privacy.png           empirical epsilon (95% lower bound) and TPR at 0.1% FPR against test
                        accuracy, a point per group of trials, with the table in table1.md
                        (`privacy`; only for a run with the epsilon audit)
  tradeoff.png          attack AUC, attack accuracy and test accuracy against nonzero weights
                        across a sweep, a line per method, 95% intervals over seeds; with
                        selection.md, Algorithm 1's choice (both only for a swept run)
  attack_vs_accuracy.png  each attack's AUC and TPR at 0.1% FPR against test accuracy, a
                        point per method or control, 95% intervals (`privacy_utility`)
  report.json           the numbers behind all of the above

A figure whose inputs are absent is skipped with a note. Nothing in DIR is modified except
OUT, which is created when missing.
"""

import io
import json
import math
from pathlib import Path
from typing import Any

from absl import flags

from miajax import cli
from miajax import exposure
from miajax import paired
from miajax import paths
from miajax import privacy
from miajax import privacy_utility
from miajax import results
from miajax import selection
from miajax import tables
from miajax import workdir as workdir_lib
from miajax.errors import UserError

_OUT = flags.DEFINE_string("out", None, "Output directory (default: DIR/report).")

# The FPRs at which TPR is reported beside each ROC curve, as in results.json.
_FPRS = (0.001, 0.01)
_HIST_BINS = 101
# What the figures call each attack of scores.npz (score_<name>); results.json and report.json
# keep the short names, which are a contract. A name not here is shown as it is.
ATTACK_NAMES = {
    "nn": "NN attack", "loss": "loss threshold", "confidence": "confidence threshold",
    "entropy": "modified-entropy threshold", "logit": "logit-confidence threshold",
    "loss_class": "class-dependent loss threshold",
    "entropy_class": "class-dependent entropy threshold"}
# Cycled with the colours, so that curves lying on top of each other stay apart.
_LINESTYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "v", "D", "x", "+", "*")


def _seed_order(record: dict):
  seed = record.get("seed")
  return (not isinstance(seed, int), seed if isinstance(seed, int) else 0, record["name"])


def _representative(records: list[dict], has) -> dict | None:
  """The record of lowest seed (then name) for which `has(record)` holds."""
  return min((r for r in records if has(r)), key=_seed_order, default=None)


def _finite(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ---------------------------------------------------------------- tables


def comparison(records: list[dict]) -> dict[str, Any]:
  """The numbers of results.table: per group, every column's mean, half-width and count."""
  out = {}
  for name, rs in results.group_records(records).items():
    row: dict[str, Any] = {"seeds": len(rs), "trials": [r["name"] for r in rs]}
    for c in results.columns():
      values = [c.get(r) for r in rs]
      mean, half, n = results.mean_interval(values)
      row[c.header] = {"mean": mean, "half": half, "n": n, "values": values}
      if c.named is not None:
        row[c.header]["attacks"] = [c.named(r) for r in rs]
    out[name] = row
  return out


def compression(records: list[dict]) -> dict[str, Any]:
  """Table 4's numbers per group of trials with weights_total: per layer and in total."""
  out = {}
  for name, rs in results.group_records(records).items():
    rs = [r for r in rs if r.get("weights_total") is not None]
    if not rs:
      continue
    layers: dict[str, dict] = {}
    for r in rs:
      for layer, c in (r.get("layer_sparsity") or {}).items():
        if not isinstance(c, dict) or not {"total", "nonzero"} <= set(c):
          continue
        entry = layers.setdefault(layer, {"total": c["total"], "nonzero": []})
        entry["nonzero"].append(c["nonzero"])
    for entry in layers.values():
      entry["nonzero"] = _mean(entry["nonzero"])
      entry["pruned_pct"] = _pruned_pct(entry["total"], entry["nonzero"])
    total = rs[0]["weights_total"]
    nonzero = _mean([r["weights_nonzero"] for r in rs])
    mean, half, n = results.mean_interval(r.get("compression_ratio") for r in rs)
    out[name] = {
        "trials": [r["name"] for r in rs], "layers": layers, "weights_total": total,
        "weights_nonzero": nonzero, "pruned_pct": _pruned_pct(total, nonzero),
        "compression_ratio": {"mean": mean, "half": half, "n": n}}
  return out


def _mean(values: list) -> float | int | None:
  """An int when all seeds agree (keep counts are fixed), else the float mean."""
  values = [v for v in values if v is not None]
  if not values:
    return None
  if all(v == values[0] for v in values):
    return values[0]
  return sum(values) / len(values)


def _pruned_pct(total, nonzero) -> float | None:
  if not total or nonzero is None:
    return None
  return 100.0 * (1.0 - nonzero / total)


def dp_rows(records: list[dict]) -> list[dict]:
  keys = ("name", "method", "seed", "dp_epsilon", "dp_delta", "test_accuracy",
          "attack_accuracy")
  return [{k: r.get(k) for k in keys} for r in records if r.get("dp_epsilon") is not None]


def _num(x, spec: str) -> str:
  if x is None:
    return "-"
  if isinstance(x, int) and not spec.endswith("%"):
    return f"{x:,}"
  return format(x, spec)


def markdown(workdir: Path, records: list[dict], comp: dict, dp: list[dict],
             expo: dict | None = None, priv: dict | None = None) -> str:
  lines = [f"# miajax report: {workdir}", "",
           *[f"**{line}**\n" for line in results.synthetic_banner(records)],
           "## Table 1: method comparison",
           "", "Mean ± 95% t-interval over seeds; accuracies in %. attack acc: the NN attack's "
           "balanced accuracy on the audit split, at the decision threshold chosen on held-out "
           "split 0 (attack_accuracy_at_half in results.json: at p >= 0.5). attack AUC: the NN "
           "attack's; loss AUC: the global loss threshold's. best attack AUC: the audit-split AUC "
           "of the attack (named after it; with counts where seeds differ) that had the best "
           "out-of-sample AUC on split 0 among the NN and threshold attacks (headline_* in "
           "results.json): chosen without the audit split.", "", "```",
           results.table(records), "```"]
  pairs = paired.table(paired.compare(records), matches=paired.matched(records))
  if pairs:
    lines += ["", "## Paired against the baseline", "",
              "Each trial minus the baseline trial of the same seed and membership split.", "",
              "```", pairs, "```"]
  if expo:
    lines += ["", "## Exposure of the most exposed members", "", "```",
              exposure.table(expo), "```"]
  if priv:
    sentence = privacy.comparison(priv)
    lines += ["", "## One privacy scale: empirical epsilon against test accuracy", "", "```",
              privacy.table(priv), "```"] + (["", sentence + "."] if sentence else [])
  lines += ["", "## Table 4: weight pruning", ""]
  if not comp:
    lines.append("No trial has weight counts.")
  else:
    rows = [[name, _num(c["weights_total"], ",d"), _num(c["weights_nonzero"], ",.1f"),
             _num(c["pruned_pct"], ".2f"), _ratio(c["compression_ratio"])]
            for name, c in comp.items()]
    lines += tables.markdown(["method", "weights", "nonzero", "pruned %", "reduction"], rows)
  # Per layer only where something was pruned: unpruned methods would repeat the same counts.
  for name, c in comp.items():
    if not c["pruned_pct"]:
      continue
    rows = [[layer, _num(e["total"], ",d"), _num(e["nonzero"], ",.1f"),
             _num(e["pruned_pct"], ".2f")] for layer, e in c["layers"].items()]
    rows.append(["total", _num(c["weights_total"], ",d"), _num(c["weights_nonzero"], ",.1f"),
                 _num(c["pruned_pct"], ".2f")])
    n = len(c["trials"])
    lines += ["", f"### {name}: per layer ({n} trial{'' if n == 1 else 's'})", ""]
    lines += tables.markdown(["layer", "weights", "nonzero", "pruned %"], rows)
    lines += ["", f"Total reduction ratio: {_ratio(c['compression_ratio'])}"]
  lines += ["", "## DP-SGD (Table 2)", ""]
  if not dp:
    lines.append("No DP-SGD trial.")
  else:
    rows = [[r["name"], r["method"], str(r["seed"]), _num(r["dp_epsilon"], ".2f"),
             _num(r["dp_delta"], ".0e"), _pct(r["test_accuracy"]), _pct(r["attack_accuracy"])]
            for r in dp]
    lines += tables.markdown(["trial", "method", "seed", "epsilon", "delta", "test acc",
                        "attack acc"], rows)
  return "\n".join(lines).rstrip() + "\n"


def _ratio(ratio: dict) -> str:
  if ratio["mean"] is None:
    return "-"
  return f"{ratio['mean']:.2f}x" + ("" if ratio["half"] is None else f" ± {ratio['half']:.2f}")


def _pct(x) -> str:
  return "-" if x is None else f"{100 * x:.2f}"


# ---------------------------------------------------------------- inputs of the figures


def read_metrics(path: Path) -> list[dict]:
  """metrics.jsonl's lines with a step and a finite loss; a torn last line is skipped."""
  if not path.is_file():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(row, dict) and _finite(row.get("step")) and _finite(row.get("loss")):
      rows.append(row)
  return sorted(rows, key=lambda r: r["step"])


def loss_curves(workdir: Path, records: list[dict]) -> dict[str, dict]:
  out = {}
  for r in records:
    rows = read_metrics(workdir / r["name"] / "metrics.jsonl")
    if rows:
      # "loss" is the objective; runs that log "cross_entropy" as well have it plotted
      # (older runs logged the objective only, which for plain training is the same).
      objective = [row["loss"] for row in rows]
      task = [row.get("cross_entropy", row["loss"]) for row in rows]
      out[r["name"]] = {"group": results.group_of(r), "method": r["method"], "seed": r.get("seed"),
                        "step": [row["step"] for row in rows],
                        "cross_entropy": task,
                        "objective": objective if objective != task else None,
                        "phase": [row.get("phase") for row in rows]}
  return out


def phase_spans(steps: list, phases: list) -> list[tuple[str, float, float]]:
  """The runs of one phase in a loss curve, as (phase, start step, end step).

  The run logs every phase's last step, so a run's last logged step is exactly where its phase
  ended and the next one's span starts there.
  """
  spans: list[list] = []
  previous_end = 0
  for step, phase in zip(steps, phases):
    if spans and spans[-1][0] == phase:
      spans[-1][2] = step
    else:
      if spans:
        previous_end = spans[-1][2]
      spans.append([phase, previous_end, step])
  return [tuple(s) for s in spans]


def class_points(records: list[dict]) -> dict[str, list[dict]]:
  out: dict[str, list[dict]] = {}
  for r in records:
    for cls, c in (r.get("per_class") or {}).items():
      if isinstance(c, dict) and _finite(c.get("gap")) and _finite(c.get("attack_accuracy")):
        out.setdefault(results.group_of(r), []).append(
            {"trial": r["name"], "class": cls, "gap": c["gap"],
             "attack_accuracy": c["attack_accuracy"]})
  return out


def roc_curves(workdir: Path, records: list[dict], notes: list[str]) -> dict[str, dict]:
  """Per group, one seed's ROC curve of every score_<attack> on the audit split."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from miajax import metrics  # pylint: disable=g-import-not-at-top
  out = {}
  for name, rs in results.group_records(records).items():
    r = _representative(rs, lambda r: (workdir / r["name"] / "scores.npz").is_file())
    if r is None:
      continue
    path = workdir / r["name"] / "scores.npz"
    try:
      with paths.load_npz(path) as z:
        arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
      notes.append(f"roc: {path} not readable ({e}); {name} left out")
      continue
    if "is_member" not in arrays or "split" not in arrays:
      notes.append(f"roc: {path} has no is_member/split arrays; {name} left out")
      continue
    audit = arrays["split"] == 1
    members = arrays["is_member"].astype(bool)[audit]
    attacks = {}
    for key in sorted(k for k in arrays if k.startswith("score_")):
      scores = np.asarray(arrays[key], np.float64)[audit]
      try:
        auc = metrics.roc_auc(scores, members)
      except UserError as e:
        notes.append(f"roc: {r['name']} {key} left out: {e}")
        continue
      # The curve at every distinct score, ties kept on one point, as roc_auc computes it.
      fpr, tpr, _ = metrics._roc_points(scores, members)  # pylint: disable=protected-access
      attacks[key.removeprefix("score_")] = {
          "auc": auc,
          "tpr_at_fpr": {str(f): metrics.tpr_at_fpr(scores, members, f) for f in _FPRS},
          "fpr": fpr.tolist(), "tpr": tpr.tolist()}
    if attacks:
      out[name] = {"trial": r["name"], "seed": r.get("seed"), "members": int(members.sum()),
                   "non_members": int((~members).sum()), "attacks": attacks}
  return out


def _final_params(checkpoint_dir: Path, notes: list[str]):
  """(step, params) of the latest checkpoint, or None with a note saying why not."""
  try:
    steps = workdir_lib.checkpoint_steps(checkpoint_dir)
    if not steps:
      notes.append(f"fig3_weights: {checkpoint_dir} holds no checkpoint")
      return None
    params = workdir_lib.restore(checkpoint_dir, steps[-1])[1]["params"]
  except Exception as e:  # pylint: disable=broad-except
    notes.append(f"fig3_weights: {checkpoint_dir} not readable ({type(e).__name__})")
    return None
  return steps[-1], params


def weight_histograms(workdir: Path, records: list[dict], notes: list[str]) -> dict[str, dict]:
  """Per group, one seed's nonzero prunable weights at its final checkpoint, histogrammed.

  The seed is the lowest whose checkpoint can be read.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from miajax import pruning  # pylint: disable=g-import-not-at-top
  out = {}
  for name, rs in results.group_records(records).items():
    candidates = sorted((r for r in rs if (workdir / r["name"] / "checkpoints").is_dir()),
                        key=_seed_order)
    for r in candidates:
      final = _final_params(workdir / r["name"] / "checkpoints", notes)
      if final is None:
        continue
      step, params = final
      kernels = [np.asarray(leaf, np.float64).ravel()
                 for path, leaf in traverse_util.flatten_dict(params).items()
                 if pruning.is_prunable(path, leaf)]
      weights = np.concatenate(kernels) if kernels else np.zeros(0)
      nonzero = weights[weights != 0]
      if nonzero.size == 0:
        notes.append(f"fig3_weights: {r['name']} has no nonzero prunable weights")
        continue
      limit = float(np.abs(nonzero).max())
      counts, edges = np.histogram(nonzero, bins=_HIST_BINS, range=(-limit, limit))
      out[name] = {"trial": r["name"], "seed": r.get("seed"), "step": step,
                   "total": int(weights.size), "nonzero": int(nonzero.size),
                   "counts": counts.tolist(), "edges": edges.tolist()}
      break
  return out


# ---------------------------------------------------------------- figures


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _colours(names) -> dict[str, Any]:
  cycle = _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
  return {n: cycle[i % len(cycle)] for i, n in enumerate(names)}


def _grid(n: int, width: float = 4.5, height: float = 3.6):
  plt = _pyplot()
  cols = min(n, 3)
  rows = math.ceil(n / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
  for ax in axes.ravel()[n:]:
    ax.set_visible(False)
  return fig, list(axes.ravel()[:n])


def _save(fig, path: Path, rect=(0, 0, 1, 1)) -> None:
  fig.tight_layout(rect=rect)
  if paths.is_remote(path):
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    paths.write_bytes(path, buffer.getvalue())
  else:
    fig.savefig(path, dpi=110)
  _pyplot().close(fig)


def added_terms(method: str, phase: str) -> str | None:
  """What `method` adds to the cross-entropy in `phase`, named as the run's log lines name it
  (its defence's terms: ADMM's proximal term, Min-Max's adversarial term); None for plain
  training or a method this version does not know."""
  from miajax import defences  # pylint: disable=g-import-not-at-top
  if method not in defences.NAMES:
    return None
  return "+".join(defences.get(method).added_terms(phase)) or None


def plot_loss(curves: dict[str, dict], path: Path) -> None:
  """Per method, the training cross-entropy on its own axis; where the method adds terms to
  its objective, those terms (objective - cross-entropy) in a panel of their own, whose scale
  (ADMM's proximal term starts at ~20, Min-Max's is negative) would flatten the curves."""
  groups: dict[str, list[dict]] = {}
  for c in curves.values():
    groups.setdefault(c["group"], []).append(c)
  panels = [(name, cs, kind) for name, cs in groups.items() for kind in ("cross_entropy", "terms")
            if kind == "cross_entropy" or any(c["objective"] is not None for c in cs)]
  fig, axes = _grid(len(panels))
  for ax, (name, cs, kind) in zip(axes, panels):
    for c in cs:
      ys = c["cross_entropy"]
      if kind == "terms":
        objective = c["objective"] or ys
        ys = [o - ce for o, ce in zip(objective, c["cross_entropy"])]
      ax.plot(c["step"], ys, marker="." if len(c["step"]) < 30 else None,
              label=f"seed {c['seed']}")
    _mark_phases(ax, cs[0])
    if kind == "terms":
      ax.axhline(0, color="grey", linewidth=0.6)
      ax.set(title=f"{name}: terms added to the objective\n"
             f"{terms_summary(cs[0].get('method', name), cs[0]['phase'])}",
             xlabel="step", ylabel="objective - cross-entropy")
    else:
      ax.set(title=name, xlabel="step", ylabel="training cross-entropy")
    ax.legend(fontsize=7, loc="best")
  _save(fig, path)


def terms_summary(method: str, phases: list) -> str:
  """Which term each phase adds, e.g. "adversarial (every phase), proximal (admm)"."""
  order = list(dict.fromkeys(str(p) for p in phases))
  where: dict[str, list[str]] = {}
  for phase in order:
    for term in (added_terms(method, phase) or "").split("+"):
      if term:
        where.setdefault(term, []).append(phase)
  return ", ".join(f"{term} ({'every phase' if ps == order and len(ps) > 1 else ', '.join(ps)})"
                   for term, ps in where.items()) or "none"


def _mark_phases(ax, curve: dict) -> None:
  """The phases of one curve (every seed of a method runs the same), shaded and named."""
  shade = ("#f2f2f2", "#ffffff")
  for i, (phase, start, end) in enumerate(phase_spans(curve["step"], curve["phase"])):
    ax.axvspan(start, end, color=shade[i % 2], zorder=0)
    if start > 0:
      ax.axvline(start, color="grey", linestyle="--", linewidth=0.8)
    ax.text((start + end) / 2, 0.98, str(phase), transform=ax.get_xaxis_transform(),
            ha="center", va="top", fontsize=7, color="dimgrey")


def plot_gap_vs_attack(points: dict[str, list[dict]], path: Path) -> None:
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 4.2))
  colours = _colours(points)
  for name, ps in points.items():
    ax.scatter([100 * p["gap"] for p in ps], [100 * p["attack_accuracy"] for p in ps],
               color=colours[name], label=name, s=18, alpha=0.8)
  ax.axhline(50, color="grey", linestyle=":", linewidth=0.8)
  ax.set(xlabel="train - non-train accuracy gap per class (%)",
         ylabel="attack accuracy per class (%)",
         title="Attack accuracy vs. accuracy gap (Fig. 4)")
  ax.legend(fontsize=8)
  _save(fig, path)


def tradeoff(records: list[dict]) -> dict[str, list[dict]]:
  """Per method with more than one configuration: each configuration's nonzero weights and the
  mean and 95% interval over seeds of its attack AUC, attack accuracy and test accuracy."""
  out: dict[str, list[dict]] = {}
  for name, rs in results.group_records(records).items():
    point = {"group": name, "weights_nonzero": _mean([r["weights_nonzero"] for r in rs])}
    for key in ("attack_auc", "attack_accuracy", "test_accuracy"):
      mean, half, _ = results.mean_interval(r[key] for r in rs)
      point[key] = {"mean": mean, "half_width": half}
    out.setdefault(rs[0]["method"], []).append(point)
  swept = {m for r in records if r.get("sweep") for m in [r["method"]]}
  return {m: sorted(ps, key=lambda p: p["weights_nonzero"]) for m, ps in out.items()
          if m in swept or (swept and m == "baseline")}


def plot_tradeoff(points: dict[str, list[dict]], path: Path) -> None:
  fig, axes = _grid(3, width=4.6, height=3.8)
  colours = _colours(points)
  for ax, key, label in zip(axes, ("attack_auc", "attack_accuracy", "test_accuracy"),
                            ("attack AUC (audit split)", "attack accuracy (%)",
                             "test accuracy (%)")):
    scale = 1 if key == "attack_auc" else 100
    for method, ps in points.items():
      ps = [p for p in ps if p[key]["mean"] is not None]   # e.g. a run without the NN attack
      if not ps:
        continue
      ys = [scale * p[key]["mean"] for p in ps]
      errs = [scale * (p[key]["half_width"] or 0) for p in ps]
      ax.errorbar([p["weights_nonzero"] for p in ps], ys, yerr=errs, marker="o", ms=4,
                  capsize=3, color=colours[method], label=method)
    if key != "test_accuracy":
      ax.axhline(0.5 * scale, color="grey", linestyle=":", linewidth=0.8)
    ax.set(xscale="log", xlabel="nonzero weights", ylabel=label)
    ax.xaxis.set_minor_formatter(_pyplot().NullFormatter())
  axes[0].legend(fontsize=8)
  fig.suptitle("Privacy and utility against model size across the sweep (95% intervals)")
  _save(fig, path)


def roc_labels(curves: dict[str, dict]) -> tuple[dict[str, list[str]], str | None]:
  """The legend entries of each ROC panel (attack display name, AUC, TPR at 0.1% FPR where
  measured), and the one note the figure needs where some TPR@0.1% is not measured."""
  from miajax import metrics  # pylint: disable=g-import-not-at-top
  labels, unmeasured = {}, []
  for name, c in curves.items():
    labels[name] = []
    for attack, a in c["attacks"].items():
      low_tpr = a["tpr_at_fpr"]["0.001"]
      if low_tpr is None:
        unmeasured.append(c["non_members"])
      labels[name].append(f"{ATTACK_NAMES.get(attack, attack)}: AUC {a['auc']:.3f}" + (
          "" if low_tpr is None else f", TPR@0.1% {100 * low_tpr:.1f}%"))
  note = None
  if unmeasured:
    note = (f"TPR at 0.1% FPR not shown where it is not measured: it takes "
            f"{metrics.min_nonmembers(0.001):,} audited non-members (here {min(unmeasured):,})")
  return labels, note


def plot_roc(curves: dict[str, dict], path: Path) -> None:
  """Log-log ROC curves (the low-FPR corner spread out, Carlini et al. 2022), one panel per
  method, the legend below each panel so that no text covers the curves."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  labels, note = roc_labels(curves)
  most = max(len(c["attacks"]) for c in curves.values())
  fig, axes = _grid(len(curves), width=4.6, height=4.2 + 0.17 * most)
  colours = _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, (name, c) in zip(axes, curves.items()):
    # Below one non-member (or member) the rates are not measured: that is the plot's floor.
    low = 1.0 / max(min(c["members"], c["non_members"]), 1)
    for i, (a, label) in enumerate(zip(c["attacks"].values(), labels[name])):
      fpr, tpr = np.asarray(a["fpr"]), np.asarray(a["tpr"])
      ax.plot(np.maximum(fpr, low / 2), np.maximum(tpr, low / 2), label=label,
              color=colours[i % len(colours)], linestyle=_LINESTYLES[i % len(_LINESTYLES)],
              marker=_MARKERS[i % len(_MARKERS)], markevery=0.12, markersize=4,
              linewidth=1.2)
    ax.plot([low / 2, 1], [low / 2, 1], color="grey", linestyle=":", linewidth=0.8,
            label="chance")
    ax.set(xscale="log", yscale="log", xlim=(low / 2, 1), ylim=(low / 2, 1),
           xlabel="false positive rate", ylabel="true positive rate",
           title=f"{name} (seed {c['seed']}, audit split)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
  if note:
    fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=8, color="dimgrey")
  _save(fig, path, rect=(0, 0.03 if note else 0, 1, 1))


def plot_weights(hists: dict[str, dict], path: Path) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  fig, axes = _grid(len(hists))
  colours = _colours(hists)
  for ax, (name, h) in zip(axes, hists.items()):
    edges = np.asarray(h["edges"])
    ax.stairs(h["counts"], edges, fill=True, color=colours[name], alpha=0.8)
    ax.set(title=f"{name} (seed {h['seed']}, step {h['step']})", xlabel="weight value",
           ylabel="count")
    ax.text(0.02, 0.97, f"nonzero {h['nonzero']:,} of {h['total']:,}",
            transform=ax.transAxes, va="top", fontsize=8)
  _save(fig, path)


# ---------------------------------------------------------------- the report


def _prepare_out(out: Path) -> None:
  if out.exists() and not out.is_dir():
    raise UserError(f"--out={out} is a file; allowed: a directory (created when missing)")
  try:
    paths.mkdir(out)
  except OSError as e:
    raise UserError(f"--out={out} cannot be created ({e.strerror}); allowed: a directory "
                    "you can write") from None


def build(path: str | Path, out: str | Path | None = None) -> dict[str, Any]:
  """Writes the report of the workdir `path` to `out` (default: path/report).

  Args:
    path: a workdir holding results.json.
    out: the output directory, created when missing.

  Returns:
    report.json's contents, plus "markdown": the text of table1.md.

  Raises:
    UserError: `path` is not a workdir with a readable results.json, or `out` is not usable.
  """
  target = workdir_lib.resolve(path)
  workdir = target.path
  if target.kind != "workdir":
    raise UserError(f"{workdir} is a trial directory; allowed: the workdir holding it and "
                    "results.json" + (f" ({target.workdir})" if target.workdir else ""))
  if not (workdir / "results.json").is_file():
    raise UserError(f"{workdir} has no results.json (the run has not finished); allowed: a "
                    "workdir where python -m miajax.main has written results.json")
  records = workdir_lib.load_records(workdir)
  for r in records:
    missing = [f for f in results.FIELDS if f not in r]
    if missing or not isinstance(r["method"], str):
      raise UserError(f"{workdir / 'results.json'}: record {r['name']} lacks "
                      f"{missing[0] if missing else 'a method'}; allowed: records with every "
                      "field of the results schema, as python -m miajax.main writes them")
  out = paths.of(out) if out is not None else workdir / "report"
  _prepare_out(out)

  notes: list[str] = results.synthetic_banner(records)   # printed with the report, too
  comp = compression(records)
  dp = dp_rows(records)
  expo = exposure.compare(workdir, records, notes)
  priv = privacy.points(records)
  text = markdown(workdir, records, comp, dp, expo, priv)
  (out / "table1.md").write_text(text)

  figures: dict[str, str] = {}
  curves = loss_curves(workdir, records)
  points = class_points(records)
  rocs = roc_curves(workdir, records, notes)
  hists = weight_histograms(workdir, records, notes)
  trade = tradeoff(records)
  attacks = privacy_utility.points(records)
  choice = None
  if (workdir / "selection.json").is_file():
    choice = json.loads((workdir / "selection.json").read_text())
    (out / "selection.md").write_text(selection.table(choice) + "\n")
  for filename, data, plot, absent in (
      ("fig2_loss.png", curves, plot_loss, "no trial has a metrics.jsonl with losses"),
      ("fig4_gap_vs_attack.png", points, plot_gap_vs_attack,
       "no record has per_class gaps and attack accuracies"),
      ("roc.png", rocs, plot_roc, "no trial has a scores.npz with score_* arrays"),
      ("fig3_weights.png", hists, plot_weights, "no trial has a readable checkpoint"),
      *([("tradeoff.png", trade, plot_tradeoff, "")] if trade else []),
      ("attack_vs_accuracy.png", attacks,
       lambda data, path: privacy_utility.plot(data, path, _pyplot, _save),
       "no record has an attack AUC"),
      *([("privacy.png", priv, lambda d, p: privacy.plot(d, p, _pyplot), "")] if priv
        else [])):
    if data:
      plot(data, out / filename)
      figures[filename] = "written"
    else:
      figures[filename] = f"skipped: {absent}"
      notes.append(f"{filename} skipped: {absent}")

  report = {
      "workdir": str(workdir), "out": str(out), "trials": [r["name"] for r in records],
      "synthetic": any(bool(r.get("synthetic")) for r in records),
      "table1": comparison(records), "paired": paired.compare(records),
      "matched_controls": paired.matched(records), "exposure": expo,
      "table4_compression": comp, "dp": dp,
      "fig2_loss": curves, "fig4_gap_vs_attack": points, "roc": rocs,
      "fig3_weights": hists, "tradeoff": trade, "attack_vs_accuracy": attacks, "privacy": priv,
      "selection": choice, "figures": figures,
      "notes": notes}
  (out / "report.json").write_text(json.dumps(_strict(report), indent=1, allow_nan=False))
  return report | {"markdown": text}


def _strict(x):
  """NaN and infinities (e.g. copied from a results.json) as null: report.json is strict JSON."""
  if isinstance(x, dict):
    return {k: _strict(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_strict(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def main(argv):
  if len(argv) != 2:
    what = "missing DIR" if len(argv) < 2 else f"unexpected arguments: {' '.join(argv[2:])}"
    raise UserError(f"{what}; usage: python -m miajax.report DIR [--out OUT]")
  workdir_lib.quiet_orbax()
  report = build(argv[1], _OUT.value)
  print(report["markdown"], end="")
  for note in report["notes"]:
    print(f"note: {note}")
  print(f"wrote {report['out']}: table1.md, report.json, "
        f"{', '.join(f for f, s in report['figures'].items() if s == 'written') or 'no figures'}")


if __name__ == "__main__":
  cli.run(main)
