"""The margin attack: a global threshold on z_y - max_{j != y} z_j, the label's logit over the
runner-up's (LiRA's "hinge" statistic). Opt-in: add "margin" to `config.audits`."""

import numpy as np

from miajax.audits.audit import Audit


def score(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """(N,) float64: how far the label's logit leads every other (higher = member)."""
  z = np.asarray(logits, np.float64)
  y = np.asarray(labels)
  rows = np.arange(y.size)
  others = z.copy()
  others[rows, y] = -np.inf
  return z[rows, y] - others.max(axis=1)


AUDIT = Audit(name="margin", title="threshold attacks", score=score)
