"""The report's figures read as a paper's: the cross-entropy on its own axis, the methods'
added terms apart, ROC curves under readable names, distinguishable, with one note for what is
not measured. Checked on the matplotlib objects, from made-up inputs (no run needed)."""

import numpy as np
import pytest

from miajax import report

ATTACKS = ("nn", "loss", "confidence", "entropy", "logit", "loss_class", "entropy_class")


@pytest.fixture
def figures(monkeypatch):
  """Every figure a plot function saves, kept open for inspection."""
  saved = []
  monkeypatch.setattr(report, "_save", lambda fig, path, rect=None: saved.append(fig))
  yield saved
  for fig in saved:
    report._pyplot().close(fig)


def _texts(fig) -> list[str]:
  out = [t.get_text() for t in fig.texts]
  for ax in fig.axes:
    out += [t.get_text() for t in ax.texts] + [ax.get_title()]
    if ax.get_legend():
      out += [t.get_text() for t in ax.get_legend().get_texts()]
  return out


def _roc(non_members: int, attacks=ATTACKS) -> dict:
  fpr = np.linspace(0, 1, 50)
  low = None if non_members <= 1000 else 0.004
  return {"trial": "t", "seed": 0, "members": non_members, "non_members": non_members,
          "attacks": {a: {"auc": 0.6, "tpr_at_fpr": {"0.001": low, "0.01": 0.02},
                          "fpr": fpr.tolist(), "tpr": np.sqrt(fpr).tolist()} for a in attacks}}


def test_roc_names_attacks_for_readers_and_notes_unmeasured_tprs_once(figures):
  methods = ("baseline", "pruning", "minmax", "pruning_minmax", "dp")
  report.plot_roc({m: _roc(500) for m in methods}, path=None)       # 5 x 7 curves
  texts = _texts(figures[0])
  assert sum("not measured" in t for t in texts) == 1               # once, not once per curve
  legend = [t for t in texts if "AUC" in t]
  assert len(legend) == 35 and not any("TPR@0.1%" in t for t in legend)
  assert "NN attack: AUC 0.600" in legend
  assert "class-dependent loss threshold: AUC 0.600" in legend
  assert not any(t.split(":")[0] in ATTACKS for t in legend)       # no code names


def test_roc_curves_that_overlap_stay_apart_and_the_legend_covers_none(figures):
  report.plot_roc({"baseline": _roc(2000)}, path=None)
  fig = figures[0]
  ax = fig.axes[0]
  assert ax.get_xscale() == "log" and ax.get_yscale() == "log"     # the low-FPR corner
  styles = {(l.get_color(), l.get_linestyle(), l.get_marker()) for l in ax.get_lines()
            if l.get_label() != "chance"}
  assert len(styles) == len(ATTACKS)
  assert len({(ls, m) for _, ls, m in styles}) == len(ATTACKS)      # apart even in grey
  texts = _texts(fig)
  assert "NN attack: AUC 0.600, TPR@0.1% 0.4%" in texts
  assert not any("not measured" in t for t in texts)
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  assert ax.get_legend().get_window_extent(renderer).y1 < ax.get_window_extent(renderer).y0


def _curve(group, method, phases, ce, extra):
  steps = list(range(10, 10 * len(phases) + 1, 10))
  return {"group": group, "method": method, "seed": 0, "step": steps, "phase": phases,
          "cross_entropy": ce, "objective": None if extra is None else
          [c + e for c, e in zip(ce, extra)]}


def test_fig2_plots_the_cross_entropy_alone_and_added_terms_in_their_own_panels(figures):
  phases = ["pretrain"] * 3 + ["admm"] * 3 + ["retrain"] * 3
  ce = [2.0, 1.0, 0.5, 0.9, 0.6, 0.5, 0.4, 0.3, 0.3]
  curves = {
      "baseline-seed0": _curve("baseline", "baseline", ["train"] * 9, ce, None),
      "pruning-seed0": _curve("pruning", "pruning", phases, ce,
                              [0, 0, 0, 22.0, 5.0, 1.0, 0, 0, 0]),          # ADMM's ~22 peak
      "minmax-seed0": _curve("minmax", "minmax", ["train"] * 9, ce, [-0.6] * 9)}
  report.plot_loss(curves, path=None)
  axes = [ax for ax in figures[0].axes if ax.get_visible()]
  titles = [ax.get_title() for ax in axes]
  assert titles == ["baseline", "pruning",
                    "pruning: terms added to the objective\nproximal (admm)", "minmax",
                    "minmax: terms added to the objective\nadversarial (train)"]
  for ax in axes:
    ys = np.concatenate([l.get_ydata() for l in ax.get_lines()
                         if l.get_label().startswith("seed")])
    if "terms" in ax.get_title():
      assert ax.get_ylabel() == "objective - cross-entropy"
    else:
      assert ax.get_ylabel() == "training cross-entropy" and list(ys) == ce
  pruning_terms = axes[2]
  ys = pruning_terms.get_lines()[0].get_ydata()
  assert max(ys) == pytest.approx(22.0)
  assert {"pretrain", "admm", "retrain"} <= {t.get_text() for t in pruning_terms.texts}
  assert report.terms_summary("pruning_minmax", phases) == (
      "adversarial (every phase), proximal (admm)")
  assert report.added_terms("pruning_minmax", "admm") == "proximal+adversarial"
  assert report.added_terms("pruning_minmax", "retrain") == "adversarial"
  assert report.added_terms("baseline", "train") is None


def _record(group, method, seed, test, auc, tpr, samia=None):
  return {"name": f"{group}-seed{seed}", "group": group, "method": method, "seed": seed,
          "test_accuracy": test, "attack_auc": auc, "attack_tpr_at_fpr": {"0.001": tpr},
          "headline_auc": None,
          "intervals": {"attack_auc": [auc - 0.02, auc + 0.02],
                        "attack_tpr_at_fpr": {"0.001": None if tpr is None else [0, 2 * tpr]}},
          "samia": samia}


def test_attack_vs_accuracy_takes_intervals_over_seeds_or_else_the_trials_bootstrap(figures):
  from miajax import privacy_utility
  records = [_record("baseline", "baseline", s, 0.80 + 0.01 * s, 0.64 + 0.01 * s, 0.02)
             for s in range(3)]
  records.append(_record("narrow", "narrow", 0, 0.70, 0.55, None,
                         samia={"auc": 0.6, "tpr_at_fpr": {"0.001": 0.01},
                                "intervals": {"auc": [0.57, 0.63],
                                              "tpr_at_fpr": {"0.001": [0.0, 0.03]}}}))
  data = privacy_utility.points(records)
  base = data["NN attack"]["baseline"]
  assert base["auc"]["over"] == "3 seeds" and base["auc"]["mean"] == pytest.approx(0.65)
  assert base["auc"]["lo"] < 0.64 and base["auc"]["hi"] > 0.66
  assert base["test_accuracy"]["mean"] == pytest.approx(0.81)
  narrow = data["NN attack"]["narrow"]
  assert {k: narrow["auc"][k] for k in ("mean", "lo", "hi")} == pytest.approx(
      {"mean": 0.55, "lo": 0.53, "hi": 0.57})
  assert narrow["auc"]["over"] == "bootstrap"
  assert narrow["tpr_at_fpr"] is None                  # not measured: nothing drawn for it
  assert list(data["pruning-aware (SAMIA-style)"]) == ["narrow"]   # only where measured
  assert "differencing (dense checkpoint)" not in data
  privacy_utility.plot(data, None, report._pyplot, report._save)
  fig, = figures
  labels = _texts(fig)
  assert {"baseline", "narrow", "NN attack", "pruning-aware (SAMIA-style)"} <= set(labels)
