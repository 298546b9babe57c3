"""Threshold-style audits: one per-example score each, thresholded globally (and, for loss and
entropy, per class: Song & Mittal's loss_class and entropy_class)."""

from miajax import evaluate
from miajax.audits.audit import Audit

AUDITS = tuple(Audit(name=name, title="threshold attacks", score=score)
               for name, score in evaluate.THRESHOLD_ATTACKS.items())
