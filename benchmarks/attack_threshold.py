"""The NN attack's decision threshold and training, before and after, on a finished run.

  python benchmarks/attack_threshold.py DIR [--ablation] [--json PATH]

For every trial DIR/<name>/scores.npz (logits, labels, is_member, split) and its config.json,
re-audits the trial's outputs two ways, both fit on split 0 only and measured on split 1:

  before  the attack as it was: `attack.train` for attack.epochs on all of split 0, members
          called at p >= 0.5;
  after   `evaluate.audit`: the attack trained on split 0 with equal member and non-member
          counts per class, less a 20% held-out share on which its epochs (best held-out gain)
          and decision threshold (best held-out balanced accuracy) are chosen.

With --ablation, also "hold-out only": `evaluate.audit` without the per-class matching.
Beside them, the loss-threshold attack (fit on split 0) and, for diagnosis only, "best": the
best balanced accuracy any threshold reaches on the split-1 scores (chosen on split 1, so never
a reportable number; it says what the scores allow). Prints a table and the mean per column.
"""

import argparse
import json
import sys
import types
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from miajax import attack, evaluate, metrics  # pylint: disable=g-import-not-at-top,multiple-imports


def _best(scores, is_member) -> float:
  fpr, tpr, _ = metrics._roc_points(scores, is_member)  # pylint: disable=protected-access
  return float(0.5 * (1.0 + (tpr - fpr).max()))


def _before(out, num_classes, cfg, seed) -> dict:
  probs = np.asarray(jax.nn.softmax(out.logits[0], axis=-1), np.float32)
  fit_in, fit_out = out.select(True, 0), out.select(False, 0)
  params = attack.train(jax.random.PRNGKey(seed), cfg.kind, num_classes,
                        attack.AttackSet.of(probs[fit_in], out.labels[fit_in], probs[fit_out],
                                            out.labels[fit_out]), attack.Schedule.of(cfg))
  test = out.split == 1
  p = attack.predict(params, cfg.kind, num_classes, probs[test], out.labels[test])
  m = out.is_member[test]
  return {"acc@0.5": metrics.balanced_accuracy(p >= 0.5, m), "auc": metrics.roc_auc(p, m),
          "best": _best(p, m)}


def _after(out, num_classes, cfg, seed) -> dict:
  fields, scores = evaluate.audit(out, 0, num_classes, cfg, seed)
  test = out.split == 1
  return {"epochs": fields["attack_epochs"], "threshold": fields["attack_threshold"],
          "acc": fields["attack_accuracy"], "acc@0.5": fields["attack_accuracy_at_half"],
          "auc": fields["attack_auc"],
          "best": _best(scores["score_nn"][test], out.is_member[test]),
          "loss acc": fields["threshold_attacks"]["loss"]["accuracy"],
          "loss auc": fields["threshold_attacks"]["loss"]["auc"]}


def _unmatched(members, nonmembers, labels, rng):  # pylint: disable=unused-argument
  return members, nonmembers


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir", type=Path)
  parser.add_argument("--ablation", action="store_true",
                      help="also audit with the held-out share but without class matching")
  parser.add_argument("--json", type=Path, help="write the numbers here")
  args = parser.parse_args()
  rows = []
  for path in sorted(args.workdir.glob("*/scores.npz")):
    trial = json.loads((path.parent / "config.json").read_text())
    cfg = types.SimpleNamespace(**trial["attack"])
    seed = int(trial["trial"]["seed"])
    with np.load(path) as z:
      out = evaluate.Outputs(logits=z["logits"][None], labels=z["labels"],
                             is_member=z["is_member"].astype(bool), split=z["split"],
                             index=z["index"])
    num_classes = out.logits.shape[-1]
    row = {"trial": path.parent.name, "before": _before(out, num_classes, cfg, seed),
           "after": _after(out, num_classes, cfg, seed)}
    if args.ablation:
      matched, evaluate._class_matched = evaluate._class_matched, _unmatched  # pylint: disable=protected-access
      try:
        row["held-out only"] = _after(out, num_classes, cfg, seed)
      finally:
        evaluate._class_matched = matched  # pylint: disable=protected-access
    rows.append(row)
    print(f"{row['trial']}: done", file=sys.stderr, flush=True)

  columns = [("before", "acc@0.5"), ("before", "auc"), ("before", "best")]
  if args.ablation:
    columns += [("held-out only", k) for k in ("epochs", "acc", "acc@0.5", "auc")]
  columns += [("after", k) for k in ("epochs", "threshold", "acc", "acc@0.5", "auc", "best",
                                     "loss acc", "loss auc")]
  prefix = {"before": "old ", "held-out only": "ho ", "after": ""}
  header = ["trial"] + [prefix[a] + k for a, k in columns]

  def cell(v):
    return f"{v:d}" if isinstance(v, int) else f"{v:.4f}"

  table = [[r["trial"]] + [cell(r[a][k]) for a, k in columns] for r in rows]
  table.append(["mean"] + [cell(float(np.mean([r[a][k] for r in rows]))) for a, k in columns])
  widths = [max(len(x) for x in col) for col in zip(header, *table)]
  for line in [header, ["-" * w for w in widths]] + table:
    print("  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in
                    enumerate(zip(line, widths))))
  print("old: attack.epochs on all of split 0, p >= 0.5; ho: held-out epochs and threshold, "
        "no class matching;\nacc: at the threshold chosen on held-out split 0; best: the best "
        "threshold on split 1 (diagnosis only); all measured on split 1")
  if args.json:
    args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
  main()
