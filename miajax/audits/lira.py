"""LiRA and RMIA on a LiRA stack: model 0 the target, models 1.. its shadows (RMIA's reference
models), over the pool of members each model took half of (`evaluate.lira_audit`); and online
LiRA with every model in turn as the target, scores pooled (`evaluate.lira_rotated`)."""

from miajax import evaluate
from miajax.audits.audit import Audit, Column, Result

COLUMNS = (
    Column("LiRA AUC", lambda r: (r.get("lira") or {}).get("online", {}).get("auc"), "f3"),
    Column("LiRA TPR@0.1%", lambda r: (r.get("lira") or {}).get("online", {}).get(
        "tpr_at_fpr", {}).get("0.001"), "pct"),
    Column("RMIA AUC", lambda r: ((r.get("lira") or {}).get("rmia_online") or {}).get("auc"),
           "f3"),
    Column("RMIA TPR@0.1%", lambda r: ((r.get("lira") or {}).get("rmia_online") or {}).get(
        "tpr_at_fpr", {}).get("0.001"), "pct"),
)
LEGEND = ("LiRA/RMIA: online attacks on the target (model 0), the run's other models its "
          "shadows; TPR@0.1%: at 0.1% FPR",)


def _run(target, rng):
  del rng
  stack, config = target.stack, target.config
  pool_logits, pool_labels = stack.pool()
  pop_index, pop_logits, pop_labels = stack.population()
  keep = stack.keep
  fields, scores = evaluate.lira_audit(pool_logits, pool_labels, keep, pop_logits, pop_labels,
                                       rmia_offline_a=config.lira.rmia_offline_a)
  # Every model in turn as the target: many more scores behind the low-FPR TPRs.
  fields["rotated"], rotated, rotated_member = evaluate.lira_rotated(pool_logits, pool_labels,
                                                                     keep)
  saved = dict(index=stack.splits[0].train, labels=pool_labels, is_member=keep[0], keep=keep,
               logits=pool_logits[0], shadow_logits=pool_logits[1:],
               population_index=pop_index, population_labels=pop_labels,
               population_logits=pop_logits[0], shadow_population_logits=pop_logits[1:],
               rotated_score=rotated, rotated_is_member=rotated_member,
               **{f"score_{k}": v for k, v in scores.items()})
  return Result({"lira": fields}, files={"lira_scores.npz": saved})


AUDIT = Audit(name="lira", title="LiRA and RMIA", layout="lira", run=_run, fields=("lira",),
              once=True, columns=COLUMNS, legend=LEGEND)
