"""Empirical epsilon: a lower bound on the privacy loss of each trial, whatever its defence,
from a threshold audit's per-example scores (`canaries.score`, default the loss), so that
pruning, Min-Max and DP-SGD are read on the one scale DP-SGD is accounted on.

On the canaries (`canaries.count` > 0, miajax/canaries.py; their membership a fair coin):
  - the threshold bound (`epsilon.threshold_audit`), the threshold chosen on a seeded half of
    the canaries and the bound computed on the other half;
  - the one-run bound of Steinke et al. (`epsilon.one_run`), how many to guess chosen on the
    same half, the bound on the other.
On the ordinary examples: the threshold bound with the threshold chosen on split 0 and the
bound computed on the audit split (split 1), which chooses nothing.

`epsilon_lower_bound` is the canaries' threshold bound, or without canaries the ordinary
examples' (`epsilon_audit.method` says which); each holds at `epsilon_lower_bound_confidence`
on its own. delta is `dp.delta`, for every method. Opt-in: add "epsilon" to `config.audits`.
"""

import numpy as np

from miajax import epsilon as epsilon_lib
from miajax.audits.audit import Audit, Result

FIELDS = ("epsilon_lower_bound", "epsilon_lower_bound_confidence", "epsilon_lower_bound_one_run",
          "epsilon_lower_bound_ordinary", "epsilon_audit")


def _run(target, rng):
  del rng                        # its halves draw from their own generator: nothing shifts
  from miajax import audits      # pylint: disable=g-import-not-at-top
  config, k = target.config, target.k
  score = audits.get(config.canaries.score).score
  delta, level = float(config.dp.delta), epsilon_lib.LEVEL
  out = target.stack.membership(k)
  s = score(out.logits[k], out.labels)
  ordinary = epsilon_lib.threshold_audit(s, out.is_member, out.split == 0, out.split == 1,
                                         delta, level)
  details = {"score": config.canaries.score, "level": level, "delta": delta,
             "ordinary": ordinary, "canaries": None, "one_run": None}
  fields = {"epsilon_lower_bound_confidence": level,
            "epsilon_lower_bound_ordinary": ordinary["epsilon_lower_bound"],
            "epsilon_lower_bound_one_run": None}
  files = {}
  if len(target.stack.splits[k].canaries):
    logits, labels, member = target.stack.canaries(k)
    c = score(logits[k], labels)
    chooses = epsilon_lib.halves(member, np.random.default_rng(
        [int(config.canaries.seed), int(target.seed), 0xE95]))
    details["canaries"] = epsilon_lib.threshold_audit(c, member, chooses, ~chooses, delta,
                                                      level) | {
        "kind": config.canaries.kind, "count": int(member.size),
        "count_members": int(member.sum())}
    details["one_run"] = epsilon_lib.one_run(c, member, chooses, ~chooses, delta, level)
    details["method"] = ("canaries: threshold chosen on half of them, Clopper-Pearson bound on "
                         "the other half")
    fields |= {"epsilon_lower_bound": details["canaries"]["epsilon_lower_bound"],
               "epsilon_lower_bound_one_run": details["one_run"]["epsilon_lower_bound"]}
    files["canary_scores.npz"] = dict(
        index=target.stack.splits[k].canaries, labels=labels, is_member=member, score=c,
        chooses=chooses, logits=logits[k].astype(np.float32))
  else:
    details["method"] = ("ordinary examples: threshold chosen on split 0, Clopper-Pearson "
                         "bound on the audit split")
    fields["epsilon_lower_bound"] = ordinary["epsilon_lower_bound"]
  return Result(fields | {"epsilon_audit": details}, files=files)


AUDIT = Audit(name="epsilon", title="empirical epsilon", run=_run, fields=FIELDS)
