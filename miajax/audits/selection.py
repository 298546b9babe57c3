"""Algorithm 1's inputs, from split 0 only.

`selection`: each trial's accuracy on split 0's reference non-members (`selection_accuracy`,
the accuracy bound of Algorithm 1) and on split 0's attack members
(`selection_train_accuracy`): a generalisation gap read without the audit split, on which
controls are matched (`paired.matched`). `selection_gain`: in a swept stack, the paper's
attack's gain by cross-validation on split 0 (`selection.choose`), the costly part.
"""

from miajax import evaluate
from miajax.audits.audit import Audit, Result


def _accuracies(target, rng):
  del rng
  out = target.stack.membership(target.k)
  return Result({"selection_accuracy": float(evaluate.selection_accuracy(out)[target.k]),
                 "selection_train_accuracy": float(
                     evaluate.selection_train_accuracy(out)[target.k])})


def _gain(target, rng):
  del rng                        # the folds draw from their own seeded generators
  if not target.swept:
    return Result({})
  out = target.stack.membership(target.k)
  return Result(evaluate.selection_gain(out, target.k, target.num_classes,
                                        target.config.attack, target.seed,
                                        target.config.select.folds))


AUDIT = Audit(name="selection", title="selection accuracies", run=_accuracies,
              fields=("selection_accuracy", "selection_train_accuracy"))
GAIN = Audit(name="selection_gain", title="selection folds", run=_gain,
             fields=("selection_gain", "selection_gain_folds"))
