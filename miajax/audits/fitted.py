"""An NN attack on features beyond one prediction vector, fit on split 0 and measured on the
audit split exactly as the paper's attack (`evaluate.nn_audit`: class-matched, its epochs and
threshold chosen on a held-out share of split 0), its numbers in one record field."""

import numpy as np

from miajax import evaluate
from miajax import metrics


def nn_fields(target, feats: np.ndarray, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
  """The attack on `feats` (N, F) of trial k's `membership(k)` examples.

  Returns ({auc, accuracy, tpr_at_fpr {"0.001", "0.01"}, intervals {level, replicates,
  covers, auc, accuracy, tpr_at_fpr}, split0_auc (cross-fitted on split 0's held-out share,
  as the headline's candidates), epochs, notes}, P(member) of every example).
  """
  out = target.stack.membership(target.k)
  fields, scores, candidate = evaluate.nn_audit(
      out, target.k, target.num_classes, target.config.attack, target.seed, rng,
      feats=np.asarray(feats, np.float32))
  score, test = scores["score_nn"], out.split == 1
  replicates = evaluate.bootstrap_replicates(target.config.attack)
  boots = metrics.bootstrap_intervals(score[test], out.is_member[test], candidate.calls[test],
                                      replicates=replicates, seed=target.seed)
  return {
      "auc": fields["attack_auc"], "accuracy": fields["attack_accuracy"],
      "tpr_at_fpr": fields["attack_tpr_at_fpr"],
      "intervals": {"level": 0.95, "replicates": replicates,
                    "covers": "resampling of the audit examples (members and non-members "
                              "separately)",
                    "auc": boots["auc"], "accuracy": boots["accuracy"],
                    "tpr_at_fpr": boots["tpr_at_fpr"]},
      "split0_auc": candidate.auc, "epochs": fields["attack_epochs"],
      "notes": list(fields["notes"])}, score


def split1_auc(score: np.ndarray, out) -> float:
  """A fixed-direction score's AUC on the audit split (nothing fit)."""
  test = out.split == 1
  return metrics.roc_auc(score[test], out.is_member[test])


def log_feature(x: np.ndarray) -> np.ndarray:
  """log x for nonnegative x, floored as the attack's log features (`attack.LOG_FLOOR`)."""
  from miajax import attack  # pylint: disable=g-import-not-at-top
  with np.errstate(divide="ignore"):
    return np.maximum(np.log(np.asarray(x, np.float64)), attack.LOG_FLOOR)
