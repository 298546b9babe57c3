"""Threshold-style audits: one per-example score each, thresholded globally (and, for loss and
entropy, per class: Song & Mittal's loss_class and entropy_class)."""

from miajax import evaluate
from miajax.audits.audit import Audit, Column

# The loss attack's column of the printed comparison (the others' are in results.json only).
COLUMNS = {"loss": (Column(
    "loss AUC", lambda r: (r["threshold_attacks"] or {}).get("loss", {}).get("auc"), "f3",
    interval=lambda r: ((r.get("intervals") or {}).get("threshold_attacks") or {}).get(
        "loss", {}).get("auc")),)}

AUDITS = tuple(Audit(name=name, title="threshold attacks", score=score,
                     columns=COLUMNS.get(name, ()))
               for name, score in evaluate.THRESHOLD_ATTACKS.items())
