"""A differencing attack: the attacker also holds the dense checkpoint from before pruning
(pruning's pretraining end, kept in its state's `dense` field by a defence with a `dense_phase`
when `pruning.keep_dense` is set) and sees how each example's prediction changed.

- `differencing`: the NN attack (`attack.kind`) on both models' log-loss features, [final
  (C), dense (C)], fit on split 0 and measured on the audit split.
- `loss_difference`: loss under the dense model minus loss under the final one, its sign
  (which way members move) chosen on split 0; a global threshold's AUC and TPR on split 1.
- `dense_loss_auc`: the loss attack on the dense checkpoint alone, for reference: what
  releasing the checkpoint before pruning would leak.

Applies to stacks that kept their dense weights; on any other the field is null. Opt-in: add
"differencing" to `config.audits`. For a model with batch statistics the dense weights are
evaluated with the final statistics (only the weights are kept).
"""

import numpy as np

from miajax import attack
from miajax import metrics
from miajax import steps
from miajax.audits import fitted
from miajax.audits.audit import Audit, Result
from miajax.defences.defence import kept_dense


def dense_logits(state, batch, *, model):
  """(B, C) logits of one trial's dense weights (its pretraining end)."""
  images, _ = batch
  return steps.forward(model, kept_dense(state.extra), state.batch_stats, images, train=False)[0]


def _run(target, rng):
  if "dense" not in target.stack.extra_keys:
    return Result({"differencing": None})
  out = target.stack.membership(target.k)
  final = out.logits[target.k]
  dense = target.stack.membership_values(target.k, "dense_logits", dense_logits)[target.k]
  feats = np.concatenate([attack.features(final, "log_losses"),
                          attack.features(dense, "log_losses")], axis=1)
  fields, score = fitted.nn_fields(target, feats, rng)
  # loss_dense - loss_final (loss_score is the negative loss).
  change = metrics.loss_score(final, out.labels) - metrics.loss_score(dense, out.labels)
  fit, test = out.split == 0, out.split == 1
  sign = 1.0 if metrics.roc_auc(change[fit], out.is_member[fit]) >= 0.5 else -1.0
  tpr, notes = metrics.tpr_report(sign * change[test], out.is_member[test])
  fields["notes"] += [f"loss_difference: {n}" for n in notes]
  fields |= {
      "loss_difference": {"sign": sign, "auc": fitted.split1_auc(sign * change, out),
                          "tpr_at_fpr": tpr},
      "dense_loss_auc": fitted.split1_auc(metrics.loss_score(dense, out.labels), out),
      "dense_test_accuracy": float((dense.argmax(-1) == out.labels)[
          out.select(member=False, split=1)].mean())}
  return Result({"differencing": fields}, {"score_differencing": score,
                                           "dense_logits": dense.astype(np.float32)})


AUDIT = Audit(name="differencing", title="differencing attack", run=_run,
              fields=("differencing",))
