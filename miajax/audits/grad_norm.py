"""A white-box audit: each example's loss-gradient norm over the weights the model keeps
(`steps.example_grad_norms`), thresholded globally. Members, fit in training, tend to small
gradients; on a pruned model only the surviving weights count. Opt-in: add "grad_norm" to
`config.audits` (a backward pass per audited example)."""

from miajax.audits.audit import Audit


def _score(target):
  # Higher = member: the smaller the gradient, the likelier a member.
  return -target.stack.membership_grad_norms(target.k)[target.k].astype("float64")


def _threshold_attack(r):
  return (r.get("threshold_attacks") or {}).get("grad_norm") or {}


# Compared within each pair of a trial and the baseline's, where the run measures it.
PAIRED = (
    ("grad_norm_auc", "grad-norm AUC", lambda r: _threshold_attack(r).get("auc"), "f3"),
    ("grad_norm_tpr_at_0.001", "grad-norm TPR@0.1%",
     lambda r: (_threshold_attack(r).get("tpr_at_fpr") or {}).get("0.001"), "pct"),
)

AUDIT = Audit(name="grad_norm", title="gradient norms", example_score=_score, paired=PAIRED)
