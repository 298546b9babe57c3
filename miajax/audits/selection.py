"""Algorithm 1's inputs, from split 0 only: the selection accuracy (on split 0's reference
non-members), and in a swept stack the cross-validated attack gain (`selection.choose`)."""

from miajax import evaluate
from miajax.audits.audit import Audit, Result


def _run(target, rng):
  del rng                        # the folds draw from their own seeded generators
  out = target.stack.membership(target.k)
  fields = {"selection_accuracy": float(evaluate.selection_accuracy(out)[target.k])}
  if target.swept:
    fields |= evaluate.selection_gain(out, target.k, target.num_classes, target.config.attack,
                                      target.seed, target.config.select.folds)
  return Result(fields)


AUDIT = Audit(name="selection", title="selection folds", run=_run,
              fields=("selection_accuracy", "selection_gain", "selection_gain_folds"))
