"""A pruning-aware attack in the manner of SAMIA (Yuan & Zhang, USENIX Security 2022): the
NN attack's features of a prediction plus two that pruning changes, fit on split 0 and
measured on the audit split.

- Confidence gap: top-1 minus top-2 probability. A member's prediction is confident and its
  runner-up far behind; pruning narrows the gap of the examples it forgets. Fed as
  log(1 - gap) = log(p_2 + sum of all but the top probability), from the logits in float64,
  which does not round to 0 where the gap rounds to 1.
- Sensitivity: how much the prediction moves under small input noise, the mean over `DRAWS`
  Gaussian perturbations (std `SIGMA`, in normalised pixel units) of |phi(x + d) - phi(x)|,
  phi the label's logit-scaled confidence (`lira.logit_scaled_confidence`, which does not
  saturate). A model is flat around what it fit: members move less. The perturbations are
  the same for every example and every trial (common random numbers, drawn from the run's
  seed), so differences come from the models, not the draws.

The attack model is the paper's (`attack.kind`), trained on [log-losses (C), log(1 - gap),
log sensitivity] of the audited model itself. Its shadows are thus the audited model's own
split-0 outputs: the model the attack learns from was pruned by the same pipeline. Not a
headline candidate: one NN candidate per trial competes (`audits.audit_stack`). Opt-in: add
"samia" to `config.audits` (DRAWS + 1 forward passes per audited example).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from miajax import attack
from miajax import lira
from miajax import steps
from miajax.audits import fitted
from miajax.audits.audit import Audit, Result

SIGMA = 0.1
DRAWS = 8
# Folded into the run's seed for the perturbations, apart from every other draw of the run.
_STREAM = 0x5A3A


def confidence_gap(logits: np.ndarray) -> np.ndarray:
  """(N,) top-1 minus top-2 softmax probability."""
  p = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1), np.float64)
  top2 = np.sort(p, axis=-1)[:, -2:]
  return top2[:, 1] - top2[:, 0]


def log_one_minus_gap(logits: np.ndarray) -> np.ndarray:
  """(N,) log(1 - gap) = log(p_2 + sum_{j != top} p_j), stable for confident predictions."""
  z = np.asarray(logits, np.float64)
  order = np.argsort(z, axis=-1)
  rows = np.arange(z.shape[0])
  top, second = z[rows, order[:, -1]], z[rows, order[:, -2]]
  shifted = np.exp(z - top[:, None])
  shifted[rows, order[:, -1]] = 0.0                        # e^0 for the top, summed apart
  rest = shifted.sum(-1) + np.exp(second - top)            # the others, the runner-up twice
  with np.errstate(divide="ignore"):
    return np.maximum(np.log(rest) - np.log1p(shifted.sum(-1)), attack.LOG_FLOOR)


def sensitivity(state, batch, *, model, noise):
  """(B,) for one trial: mean over the perturbations `noise` (K, H, W, C) of the change of
  the label's logit-scaled confidence."""
  images, labels = batch

  def phi(x):
    logits, _ = steps.forward(model, state.params, state.batch_stats, x, train=False)
    return lira.logit_scaled_confidence(logits, labels)

  clean = phi(images)
  moved = jax.vmap(lambda d: phi(images + d))(noise)                # (K, B)
  return jnp.mean(jnp.abs(moved - clean[None]), axis=0)


def noise(seed: int, input_shape) -> np.ndarray:
  """The perturbations, (DRAWS, *input_shape) float32, a pure function of the run's seed."""
  key = jax.random.fold_in(jax.random.PRNGKey(seed), _STREAM)
  return np.asarray(SIGMA * jax.random.normal(key, (DRAWS, *input_shape)), np.float32)


def _run(target, rng):
  out = target.stack.membership(target.k)
  logits = out.logits[target.k]
  fn = functools.partial(sensitivity, noise=noise(int(target.config.seed),
                                                  target.stack.data.input_shape))
  sens = target.stack.membership_values(target.k, "samia_sensitivity", fn)[target.k]
  gap = log_one_minus_gap(logits)
  log_sens = fitted.log_feature(sens)
  feats = np.concatenate([attack.features(logits, "log_losses"), gap[:, None],
                          log_sens[:, None]], axis=1)
  fields, score = fitted.nn_fields(target, feats, rng)
  fields |= {
      # Each feature alone, its direction fixed beforehand (members: larger gap, smaller
      # sensitivity): AUC on the audit split, nothing fit.
      "gap_auc": fitted.split1_auc(-gap, out),
      "sensitivity_auc": fitted.split1_auc(-log_sens, out),
      "sigma": SIGMA, "draws": DRAWS}
  return Result({"samia": fields}, {"score_samia": score, "samia_gap": confidence_gap(logits),
                                    "samia_sensitivity": sens.astype(np.float32)})


# Compared within each pair of a trial and the baseline's (`paired`), where the run measures it.
PAIRED = (
    ("samia_auc", "SAMIA AUC", lambda r: (r.get("samia") or {}).get("auc"), "f3"),
    ("samia_tpr_at_0.001", "SAMIA TPR@0.1%",
     lambda r: ((r.get("samia") or {}).get("tpr_at_fpr") or {}).get("0.001"), "pct"),
)

AUDIT = Audit(name="samia", title="pruning-aware attack", run=_run, fields=("samia",),
              paired=PAIRED)
