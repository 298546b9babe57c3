"""What a finished trial stack is measured on: logits on the membership splits, accuracies.

The four sets an audit needs (see `splits`): attack-train members and `reference` non-members
(split 0, where an attacker learns), `audit_members` and `audit` non-members (split 1, where the
attack is measured). Test accuracy is measured on `audit` only; train accuracy on the members of
both attack sets (a sample of D the size of D').
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from miajax import attack
from miajax import lira
from miajax import metrics
from miajax import splits as splits_lib
from miajax.data import pipeline


@dataclasses.dataclass(frozen=True)
class Outputs:
  """Logits (trials, N, C) of every example an audit uses, with its labels and roles."""
  logits: np.ndarray
  labels: np.ndarray      # (N,)
  is_member: np.ndarray   # (N,) bool
  split: np.ndarray       # (N,) 0 = attack-train, 1 = audit
  index: np.ndarray       # (N,) index into the dataset split the example comes from

  def select(self, member: bool, split: int) -> np.ndarray:
    return (self.is_member == member) & (self.split == split)


def logits(state, data: pipeline.Data, split: str, indices: np.ndarray, eval_fn, sharding,
           batch_size: int) -> np.ndarray:
  """(trials, len(indices), classes) float32 logits of the whole stack."""
  out = []
  for batch, valid in pipeline.eval_batches(data, split, indices, batch_size):
    images = jax.make_array_from_process_local_data(sharding, batch["image"])
    result = eval_fn(state, images)
    if jax.process_count() > 1:
      result = multihost_utils.process_allgather(result, tiled=True)
    out.append(np.asarray(jax.device_get(result), np.float32)[:, :valid])
  return np.concatenate(out, axis=1)


def outputs(state, data, s: splits_lib.Splits, eval_fn, sharding, batch_size) -> Outputs:
  parts = [("train", s.attack_members, True, 0), ("test", s.reference, False, 0),
           ("train", s.audit_members, True, 1), ("test", s.audit, False, 1)]
  logit_parts, label_parts = [], []
  for split, idx, _, _ in parts:
    logit_parts.append(logits(state, data, split, idx, eval_fn, sharding, batch_size))
    label_parts.append(labels(data, split, idx))
  return Outputs(
      logits=np.concatenate(logit_parts, axis=1),
      labels=np.concatenate(label_parts),
      is_member=np.concatenate([np.full(len(p[1]), p[2]) for p in parts]),
      split=np.concatenate([np.full(len(p[1]), p[3], np.int8) for p in parts]),
      index=np.concatenate([p[1] for p in parts]).astype(np.int64))


def labels(data: pipeline.Data, split: str, idx: np.ndarray) -> np.ndarray:
  source = getattr(data, split)
  if isinstance(source, dict):
    return source["label"][idx].astype(np.int32)
  return np.asarray([source[int(i)]["label"] for i in idx], np.int32)


def accuracies(out: Outputs) -> tuple[np.ndarray, np.ndarray]:
  """Per-trial (train accuracy on members, test accuracy on the audit non-members)."""
  correct = out.logits.argmax(-1) == out.labels[None]
  train = correct[:, out.is_member].mean(-1)
  test = correct[:, out.select(member=False, split=1)].mean(-1)
  return train, test


THRESHOLD_ATTACKS = {
    "loss": metrics.loss_score,
    "confidence": metrics.confidence_score,
    "entropy": metrics.modified_entropy_score,
}


def audit(out: Outputs, k: int, num_classes: int, attack_config, seed: int
          ) -> tuple[dict, dict[str, np.ndarray]]:
  """Every attack on trial k: learned on split 0, measured on split 1 (the audit set).

  Returns the record fields and the per-example scores (higher = more likely member) of all
  audit and reference examples, for scores.npz.
  """
  logits = out.logits[k]
  probs = np.asarray(jax.nn.softmax(logits, axis=-1), np.float32)
  fit = out.split == 0
  members_fit, nonmembers_fit = out.select(True, 0), out.select(False, 0)
  params = attack.train(
      jax.random.PRNGKey(seed), attack_config.kind, num_classes,
      probs[members_fit], out.labels[members_fit],
      probs[nonmembers_fit], out.labels[nonmembers_fit],
      epochs=int(attack_config.epochs), batch_size=int(attack_config.batch_size),
      learning_rate=float(attack_config.learning_rate))
  scores = {"score_nn": attack.predict(params, attack_config.kind, num_classes, probs,
                                       out.labels)}
  for name, score_fn in THRESHOLD_ATTACKS.items():
    scores[f"score_{name}"] = score_fn(logits, out.labels)

  test = ~fit
  fields = attack.evaluate(scores["score_nn"][test], out.is_member[test])
  fields["threshold_attacks"] = {
      name: {key: value for key, value in metrics.threshold_attack(
          scores[f"score_{name}"][fit], out.is_member[fit],
          scores[f"score_{name}"][test], out.is_member[test]).items() if key != "threshold"}
      for name in THRESHOLD_ATTACKS}
  correct = logits.argmax(-1) == out.labels
  nonmember_audit = out.select(False, 1)
  fields["per_class"] = metrics.per_class(
      correct[out.is_member], out.labels[out.is_member],
      correct[nonmember_audit], out.labels[nonmember_audit],
      scores["score_nn"][test] >= 0.5, out.is_member[test], out.labels[test], num_classes)
  return fields, scores


def selection_gain(out: Outputs, k: int, num_classes: int, attack_config, seed: int,
                   folds: int) -> float:
  """Algorithm 1's criterion for trial k without the audit split: the paper's attack trained
  on `folds - 1` folds of split 0 and its gain (Eq. 1) measured on the fold left out, averaged.

  Members and non-members of split 0 are cut into folds separately, so every fold stays
  balanced; the audit split (split 1) is never read.
  """
  probs = np.asarray(jax.nn.softmax(out.logits[k], axis=-1), np.float32)
  members, nonmembers = np.flatnonzero(out.select(True, 0)), np.flatnonzero(out.select(False, 0))
  rng = np.random.default_rng(seed)
  member_fold = rng.permutation(len(members)) % folds
  nonmember_fold = rng.permutation(len(nonmembers)) % folds
  gains = []
  for f in range(folds):
    fit_in, fit_out = members[member_fold != f], nonmembers[nonmember_fold != f]
    held = np.concatenate([members[member_fold == f], nonmembers[nonmember_fold == f]])
    params = attack.train(
        jax.random.fold_in(jax.random.PRNGKey(seed), f), attack_config.kind, num_classes,
        probs[fit_in], out.labels[fit_in], probs[fit_out], out.labels[fit_out],
        epochs=int(attack_config.epochs), batch_size=int(attack_config.batch_size),
        learning_rate=float(attack_config.learning_rate))
    p = attack.predict(params, attack_config.kind, num_classes, probs[held], out.labels[held])
    gains.append(metrics.empirical_gain(p, out.is_member[held]))
  return float(np.mean(gains))


def save_scores(path, out: Outputs, k: int, scores: dict[str, np.ndarray]) -> None:
  """scores.npz: anyone can audit the trial from this file alone (see DESIGN.md)."""
  np.savez(path, logits=out.logits[k].astype(np.float32), labels=out.labels,
           is_member=out.is_member, split=out.split, index=out.index, **scores)


def lira_audit(logits: np.ndarray, labels: np.ndarray, keep: np.ndarray
               ) -> tuple[dict, dict[str, np.ndarray]]:
  """LiRA of model 0 (the target) with models 1.. as shadows, over the whole pool.

  Args:
    logits: (models, N, C) logits of every model on every pool example.
    labels: (N,) labels.
    keep: (models, N) bool, which examples each model trained on.

  Returns:
    {variant: {auc, tpr_at_fpr {"0.001", "0.01"}}} for the online and offline tests with
    per-example and fixed variance, and the per-example scores of each variant.
  """
  conf = np.asarray(lira.logit_scaled_confidence(jnp.asarray(logits), jnp.asarray(labels)))
  fields, scores = {"num_shadows": int(len(keep) - 1)}, {}
  for online in (True, False):
    for fixed in (False, True):
      name = ("online" if online else "offline") + ("_fixed_variance" if fixed else "")
      s = lira.scores(conf[0], conf[1:], keep[1:], online=online, fixed_variance=fixed)
      scores[f"lira_{name}"] = s
      tpr, notes = metrics.tpr_report(s, keep[0])
      fields[name] = {"auc": metrics.roc_auc(s, keep[0]), "tpr_at_fpr": tpr}
      fields.setdefault("notes", []).extend(f"{name}: {n}" for n in notes)
  return fields, scores
