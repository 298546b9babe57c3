"""A white-box audit: each example's loss-gradient norm over the weights the model keeps
(`steps.example_grad_norms`), thresholded globally. Members, fit in training, tend to small
gradients; on a pruned model only the surviving weights count. Opt-in: add "grad_norm" to
`config.audits` (a backward pass per audited example)."""

from miajax.audits.audit import Audit


def _score(target):
  # Higher = member: the smaller the gradient, the likelier a member.
  return -target.stack.membership_grad_norms(target.k)[target.k].astype("float64")


AUDIT = Audit(name="grad_norm", title="gradient norms", example_score=_score)
