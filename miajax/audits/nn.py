"""The paper's attack: a neural network on the model's outputs (Nasr et al.'s, App. D),
trained on split 0 and measured on the audit split (`evaluate.nn_audit`)."""

from miajax import evaluate
from miajax.audits.audit import Audit, Column, Result

COLUMNS = (
    Column("attack acc", lambda r: r["attack_accuracy"], "pct",
           interval=lambda r: (r.get("intervals") or {}).get("attack_accuracy")),
    Column("attack AUC", lambda r: r["attack_auc"], "f3",
           interval=lambda r: (r.get("intervals") or {}).get("attack_auc")),
)


def _run(target, rng):
  fields, scores, candidate = evaluate.nn_audit(
      target.stack.membership(target.k), target.k, target.num_classes, target.config.attack,
      target.seed, rng)
  return Result(fields, scores, candidate)


AUDIT = Audit(
    name="nn", title="attack model", run=_run,
    fields=("attack_accuracy", "attack_accuracy_at_half", "attack_auc", "attack_tpr_at_fpr",
            "gain", "js_divergence", "notes", "attack_epochs", "attack_threshold",
            "per_class"),
    columns=COLUMNS)
