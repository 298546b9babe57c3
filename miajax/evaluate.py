"""What a finished trial stack is measured on: logits on the membership splits, accuracies.

The four sets an audit needs (see `splits`): attack-train members and `reference` non-members
(split 0, where an attacker learns), `audit_members` and `audit` non-members (split 1, where the
attack is measured). Test accuracy is measured on `audit` only; train accuracy on the members of
both attack sets (a sample of D the size of D').
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from miajax import attack
from miajax import lira
from miajax import metrics
from miajax import rmia
from miajax import selection
from miajax import splits as splits_lib
from miajax.data import pipeline


class Roles(NamedTuple):
  """What each audited example is: its label (None where unknown), membership and split."""
  labels: np.ndarray | None   # (N,)
  is_member: np.ndarray       # (N,) bool
  split: np.ndarray           # (N,) 0 = attack-train, 1 = audit


@dataclasses.dataclass(frozen=True)
class Outputs:
  """Logits (trials, N, C) of every example an audit uses, with its labels and roles."""
  logits: np.ndarray
  labels: np.ndarray      # (N,)
  is_member: np.ndarray   # (N,) bool
  split: np.ndarray       # (N,) 0 = attack-train, 1 = audit
  index: np.ndarray       # (N,) index into the dataset split the example comes from

  def select(self, member: bool, split: int) -> np.ndarray:
    """The examples of one membership and split.

    Args:
      member: members (True) or non-members (False).
      split: 0 (attack-train) or 1 (audit).

    Returns:
      (N,) bool, True for the examples of that membership and split.
    """
    return (self.is_member == member) & (self.split == split)

  @property
  def roles(self) -> Roles:
    return Roles(self.labels, self.is_member, self.split)


def logits(state, data: pipeline.Data, split: str, indices: np.ndarray, eval_fn, sharding,
           batch_size: int, with_labels: bool = False) -> np.ndarray:
  """(trials, len(indices), classes) float32 logits of the whole stack: `eval_fn(state,
  images)` batch by batch; with `with_labels`, `eval_fn(state, (images, labels))` and whatever
  per-example values it gives, (trials, len(indices), ...).

  Args:
    state: the stack's state.
    data: the dataset.
    split: the dataset split, "train" or "test".
    indices: the examples of that split to evaluate, in order.
    eval_fn: the stack's jitted evaluation.
    sharding: how a batch is laid out over the devices.
    batch_size: examples per evaluated batch.
    with_labels: pass labels with the images.
  """
  out = []
  for batch, valid in pipeline.eval_batches(data, split, indices, batch_size):
    images = jax.make_array_from_process_local_data(sharding, batch["image"])
    if with_labels:
      images = (images, jax.make_array_from_process_local_data(sharding, batch["label"]))
    result = eval_fn(state, images)
    if jax.process_count() > 1:
      result = multihost_utils.process_allgather(result, tiled=True)
    out.append(np.asarray(jax.device_get(result), np.float32)[:, :valid])
  return np.concatenate(out, axis=1)


def outputs(state, data, s: splits_lib.Splits, eval_fn, sharding, batch_size) -> Outputs:
  """The stack's logits on the four audit sets of `s`, with their labels and roles.

  Args:
    state, data, eval_fn, sharding, batch_size: as for `logits`.
    s: the membership split whose four audit sets are evaluated.

  Returns:
    The stack's `Outputs` on those sets: attack members, reference, audit members, audit.
  """
  return _outputs(lambda split, idx: logits(state, data, split, idx, eval_fn, sharding,
                                            batch_size), data, s)


def _outputs(evaluate, data, s: splits_lib.Splits) -> Outputs:
  parts = [("train", s.attack_members, True, 0), ("test", s.reference, False, 0),
           ("train", s.audit_members, True, 1), ("test", s.audit, False, 1)]
  logit_parts, label_parts = [], []
  for split, idx, _, _ in parts:
    logit_parts.append(evaluate(split, idx))
    label_parts.append(labels(data, split, idx))
  return Outputs(
      logits=np.concatenate(logit_parts, axis=1),
      labels=np.concatenate(label_parts),
      is_member=np.concatenate([np.full(len(p[1]), p[2]) for p in parts]),
      split=np.concatenate([np.full(len(p[1]), p[3], np.int8) for p in parts]),
      index=np.concatenate([p[1] for p in parts]).astype(np.int64))


class StackOutputs:
  """A trained stack's logits on whatever its audits read, each set evaluated once.

  Two layouts: "splits" (each trial on its own membership split: `membership(k)`) and
  "lira" (a LiRA stack: every model on the pool, the audit non-members and RMIA's population).
  """

  def __init__(self, evaluate, data: pipeline.Data, *, splits: list[splits_lib.Splits],
               split_keys: list, keep: np.ndarray | None = None, grad_norms=None,
               per_example=None, extra_keys: tuple[str, ...] = ()):
    """`evaluate(split, indices)` gives the stack's (trials, N, C) logits on those examples
    of the dataset split (`logits`); `splits[k]` is trial k's membership split, `split_keys[k]`
    the same for trials that share one; `keep` (models, pool) the LiRA stack's membership of
    its pool (`splits[0]`'s members), or None for the "splits" layout; `grad_norms(split,
    indices)` (optional) the stack's (trials, N) per-example gradient norms
    (`steps.example_grad_norms`), evaluated only if an audit asks; `per_example(fn,
    batch_size)` (optional) lifts a single-trial `fn(state, (images, labels), *, model)` over
    the stack and gives its `(split, indices) -> (trials, N, ...)` evaluator
    (`membership_values`); `extra_keys` the keys of the stack's method state (`state.extra`),
    which says what such a function may read there."""
    self._evaluate = evaluate
    self._grad_norms = grad_norms
    self._per_example = per_example
    self.extra_keys = tuple(extra_keys)
    self.data, self.splits, self.split_keys, self.keep = data, splits, split_keys, keep
    self.layout = "splits" if keep is None else "lira"
    self._cache: dict = {}

  def _once(self, key, compute):
    if key not in self._cache:
      self._cache[key] = compute()
    return self._cache[key]

  def membership(self, k: int) -> Outputs:
    """Trial k's four audit sets (`outputs`), for every trial of the stack."""
    return self._once(("membership", self.split_keys[k]), lambda: _outputs(
        self._evaluate, self.data, self.splits[k]))

  def membership_grad_norms(self, k: int) -> np.ndarray:
    """(trials, N) gradient norms on trial k's four audit sets, in `membership(k)`'s order."""
    if self._grad_norms is None:
      raise ValueError("this stack was evaluated without gradient norms")
    s = self.splits[k]
    return self._once(("grad_norms", self.split_keys[k]), lambda: np.concatenate(
        [self._grad_norms(split, idx) for split, idx in (
            ("train", s.attack_members), ("test", s.reference), ("train", s.audit_members),
            ("test", s.audit))], axis=1))

  def membership_values(self, k: int, name: str, fn, batch_size: int = 64) -> np.ndarray:
    """(trials, N, ...) values of the single-trial per-example `fn(state, (images, labels), *,
    model)` on trial k's four audit sets, in `membership(k)`'s order. `name` identifies `fn`:
    it is lifted and compiled once per stack, and evaluated once per split."""
    if self._per_example is None:
      raise ValueError("this stack was evaluated without per-example functions")
    evaluator = self._once(("per_example", name), lambda: self._per_example(fn, batch_size))
    s = self.splits[k]
    return self._once((name, self.split_keys[k]), lambda: np.concatenate(
        [evaluator(split, idx) for split, idx in (
            ("train", s.attack_members), ("test", s.reference), ("train", s.audit_members),
            ("test", s.audit))], axis=1))

  def canaries(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every trial's (trials, canaries, C) logits on trial k's canaries, their labels and
    membership coins (`Splits.canaries`, `Splits.canary_member`)."""
    s = self.splits[k]
    return self._once(("canaries", self.split_keys[k]), lambda: (
        self._evaluate("train", s.canaries), labels(self.data, "train", s.canaries),
        np.asarray(s.canary_member, bool)))

  def pool(self) -> tuple[np.ndarray, np.ndarray]:
    """A LiRA stack's (models, pool, C) logits and the pool's labels."""
    s = self.splits[0]
    return self._once("pool", lambda: (self._evaluate("train", s.train),
                                       labels(self.data, "train", s.train)))

  def audit_set(self) -> tuple[np.ndarray, np.ndarray]:
    """Every model's logits on the audit non-members, and their labels."""
    s = self.splits[0]
    return self._once("audit", lambda: (self._evaluate("test", s.audit),
                                        labels(self.data, "test", s.audit)))

  def population(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RMIA's population samples (`rmia_population`): indices, logits, labels."""
    split, index = rmia_population(self.splits[0])
    return self._once("population", lambda: (index, self._evaluate(split, index),
                                             labels(self.data, split, index)))

  def accuracies(self, k: int) -> tuple[float, float]:
    """Trial k's (train accuracy on its members, test accuracy on the audit non-members)."""
    if self.layout == "splits":
      train, test = accuracies(self.membership(k))
      return float(train[k]), float(test[k])
    pool_logits, pool_labels = self.pool()
    audit_logits, audit_labels = self.audit_set()
    return (float((pool_logits[k].argmax(-1) == pool_labels)[self.keep[k]].mean()),
            float((audit_logits[k].argmax(-1) == audit_labels).mean()))


def labels(data: pipeline.Data, split: str, idx: np.ndarray) -> np.ndarray:
  """The labels of examples `idx` of a dataset split.

  Args:
    data: the dataset.
    split: "train" or "test".
    idx: indices into that split.

  Returns:
    (len(idx),) int32 labels.
  """
  source = getattr(data, split)
  if isinstance(source, dict):
    return source["label"][idx].astype(np.int32)
  return np.asarray([source[int(i)]["label"] for i in idx], np.int32)


def accuracies(out: Outputs) -> tuple[np.ndarray, np.ndarray]:
  """Per-trial (train accuracy on members, test accuracy on the audit non-members).

  Args:
    out: the stack's outputs on a trial's audit sets.
  """
  correct = out.logits.argmax(-1) == out.labels[None]
  train = correct[:, out.is_member].mean(-1)
  test = correct[:, out.select(member=False, split=1)].mean(-1)
  return train, test


# Global-threshold attacks: name -> per-example score (higher = member), from logits and labels.
THRESHOLD_ATTACKS = {
    "loss": metrics.loss_score,
    "confidence": metrics.confidence_score,
    "entropy": metrics.modified_entropy_score,
    "logit": metrics.logit_score,
}
# Song & Mittal's class-dependent thresholds: name -> the THRESHOLD_ATTACKS score thresholded
# per class. Its per-example score is that score minus the example's class threshold.
CLASS_THRESHOLD_ATTACKS = {"loss_class": "loss", "entropy_class": "entropy"}
# The NN attack's share of split 0 held out from its training, to choose its epochs and its
# decision threshold (members and non-members held out separately, at this fraction each).
HELD_OUT_FRACTION = 0.2
# Bootstrap replicates behind each 95% interval over audit examples.
BOOTSTRAP_REPLICATES = 1000
# The headline's candidates: every attack fit on split 0. The one with the best out-of-sample
# AUC on split 0 is reported as the headline (ties go to the first here).
HEADLINE_CANDIDATES = ("nn", *THRESHOLD_ATTACKS, *CLASS_THRESHOLD_ATTACKS)


def _class_matched(members: np.ndarray, nonmembers: np.ndarray, labels: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Per class, a seeded random min(#members, #non-members) of each; indices sorted.

  Split 0's members and non-members are drawn without regard to class, so their class counts
  differ by chance (e.g. 108 vs 151 examples of one class among 1,250). The NN attack sees the
  label and would learn those counts as a class prior: no property of the model, and not
  shared by split 1, whose own chance counts differ. Equal counts per class leave nothing to
  learn from the label alone.
  """
  order_in = rng.permutation(members)
  order_out = rng.permutation(nonmembers)

  def rank_in_class(idx):
    """Each example's rank within its class in the shuffled order, and the class counts."""
    y = labels[idx]
    by_class = np.argsort(y, kind="stable")
    counts = np.bincount(y, minlength=int(labels.max()) + 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(idx.size, np.int64)
    rank[by_class] = np.arange(idx.size) - starts[y[by_class]]
    return rank, counts

  rank_in, count_in = rank_in_class(order_in)
  rank_out, count_out = rank_in_class(order_out)
  keep = np.minimum(count_in, count_out)
  return (np.sort(order_in[rank_in < keep[labels[order_in]]]),
          np.sort(order_out[rank_out < keep[labels[order_out]]]))


class AttackInput(NamedTuple):
  """Every audited example as the NN attack sees it: features (N, F), labels (N,), and
  membership (N,) bool."""
  feats: np.ndarray
  labels: np.ndarray
  is_member: np.ndarray


class Fold(NamedTuple):
  """Indices into an `AttackInput`: the NN attack's fit members and fit non-members, and the
  held-out examples that choose its epochs and threshold."""
  members: np.ndarray
  nonmembers: np.ndarray
  held: np.ndarray


def _held_out(members: np.ndarray, nonmembers: np.ndarray, rng: np.random.Generator) -> Fold:
  """(fit members, fit non-members, held-out examples): HELD_OUT_FRACTION of each group."""
  members, nonmembers = rng.permutation(members), rng.permutation(nonmembers)
  a = max(1, round(HELD_OUT_FRACTION * members.size))
  b = max(1, round(HELD_OUT_FRACTION * nonmembers.size))
  return Fold(members[a:], nonmembers[b:], np.concatenate([members[:a], nonmembers[:b]]))


def _nn_attack(x: AttackInput, members, nonmembers, num_classes, attack_config, key, rng):
  """The NN attack on (members, non-members), its epochs (best gain, Algorithm 1's measure)
  and threshold chosen on a held-out share of them. The audit's attack is `_nn_fit` with
  criterion "auc".

  Args:
    x: every example; `x.feats` the attack's input, whichever `attack.features` gave it.
    members, nonmembers: indices into `x` of the examples to fit on and hold out.
    num_classes: the classes of the labels.
    attack_config: the config's `attack` section (kind, epochs, batch_size, learning_rate).
    key: the attack's PRNG key.
    rng: draws the class matching and the held-out share.

  Returns:
    (params, epochs, threshold), the threshold on P(member).
  """
  members, nonmembers = _class_matched(members, nonmembers, x.labels, rng)
  return _nn_fit(x, _held_out(members, nonmembers, rng), num_classes, attack_config, key,
                 criterion="gain")[:3]


def _nn_fit(x: AttackInput, fold: Fold, num_classes, attack_config, key, criterion):
  """`_nn_attack` on a given fold, its epochs chosen by `criterion` ("gain" or "auc",
  `attack.train_early_stopped`).

  Returns (params, epochs, threshold, every epoch's P(member) on `fold.held` (epochs + 1,
  N))."""
  fit_in, fit_out, held = fold
  feats, labels, is_member = x
  params, epochs, _, p_by_epoch = attack.train_early_stopped(
      key, attack_config.kind, num_classes,
      attack.AttackSet.of(feats[fit_in], labels[fit_in], feats[fit_out], labels[fit_out]),
      attack.HeldOut(feats[held], labels[held], is_member[held]),
      attack.Schedule.of(attack_config, criterion=criterion), held_scores=True,
      width=feats.shape[1])
  p_held = attack.predict(params, attack_config.kind, num_classes, feats[held], labels[held])
  return params, epochs, metrics.fit_threshold(p_held, is_member[held]), p_by_epoch


def _halves(is_member: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A seeded random half of the members and half of the non-members: (N,) bool, True = A."""
  half = np.zeros(is_member.size, bool)
  for group in (is_member, ~is_member):
    idx = rng.permutation(np.flatnonzero(group))
    half[idx[:idx.size // 2]] = True
  return half


def _cross_fitted_auc(p_by_epoch: np.ndarray, is_member: np.ndarray,
                      rng: np.random.Generator) -> float:
  """The held-out AUC of "the epoch with the best held-out AUC", not measured on the examples
  that chose the epoch (there the best of ~100 noisy AUCs reads a few points high).

  The held-out set is halved, members and non-members separately; the epoch best on one half
  is measured on the other, both ways, and the two AUCs averaged. With fewer than two members
  or non-members there is nothing to halve: the chosen epoch's AUC on the whole set.
  """
  if min(is_member.sum(), (~is_member).sum()) < 2:
    return float(max(metrics.roc_auc(p, is_member) for p in p_by_epoch))
  half = _halves(is_member, rng)
  out = []
  for a, b in ((half, ~half), (~half, half)):
    best = int(np.argmax([metrics.roc_auc(p[a], is_member[a]) for p in p_by_epoch]))
    out.append(metrics.roc_auc(p_by_epoch[best][b], is_member[b]))
  return float(np.mean(out))


def audit(out: Outputs, k: int, num_classes: int, attack_config, seed: int,
          attacks: dict | None = None) -> tuple[dict, dict[str, np.ndarray]]:
  """Every attack on trial k: learned on split 0, measured on split 1 (the audit set).

  The NN attack (`attack_config`) trains on split 0 with the same number of members and of
  non-members in every class (`_class_matched`), less a held-out share (HELD_OUT_FRACTION of
  each group) on which its number of epochs (the best held-out AUC, at most
  `attack_config.epochs`; not the gain, by which a weak attack that ranks members well but is
  overconfident loses to the untrained one) and its decision threshold (the best held-out
  balanced accuracy) are chosen. It sees `attack_config.features` of each prediction
  (`attack.features`; default log-losses, which do not saturate). The threshold attacks fit
  their thresholds on all of split 0: one global threshold for each of THRESHOLD_ATTACKS, one
  per class for CLASS_THRESHOLD_ATTACKS. Split 1 is only measured.

  The headline is the strongest of them chosen on split 0 alone (`_headline_selection`):
  whichever has the best out-of-sample AUC on split 0, reported with its split-1 numbers.

  Args:
    out: the stack's outputs on trial k's audit sets.
    k: the trial audited.
    num_classes: the classes of the labels.
    attack_config: the config's `attack` section.
    seed: the trial's seed, which seeds every draw of the audit.
    attacks: the global-threshold attacks, name -> score function; None for THRESHOLD_ATTACKS.

  Returns:
    The record fields: `attack.evaluate`'s (attack_accuracy at the chosen threshold,
    attack_accuracy_at_half at p >= 0.5, AUC, TPR, gain, notes), attack_epochs,
    attack_threshold, threshold_attacks {name: {accuracy, auc, tpr_at_fpr}}, the headline
    (headline_attack, headline_auc, headline_accuracy, headline_tpr_at_fpr, headline_selection
    {candidate: split-0 AUC}), intervals (95% stratified bootstrap intervals over audit examples:
    attack_accuracy, attack_auc, attack_tpr_at_fpr, threshold_attacks {name: {accuracy, auc}},
    headline_accuracy, headline_auc, headline_tpr_at_fpr), per_class; and the per-example
    scores of every example of both splits for scores.npz: score_nn (P(member)), score_<name>
    for each threshold attack (for a class-threshold attack, the score minus its class's
    threshold). `attacks` replaces THRESHOLD_ATTACKS (name -> score function) where given.
  """
  rng = np.random.default_rng(seed)
  fields, scores, nn = nn_audit(out, k, num_classes, attack_config, seed, rng)
  attacks = THRESHOLD_ATTACKS if attacks is None else attacks
  for name, score_fn in attacks.items():
    scores[f"score_{name}"] = score_fn(out.logits[k], out.labels)
  more, _ = score_audit(scores, out.roles, num_classes, seed, rng=rng,
                        replicates=bootstrap_replicates(attack_config), nn=nn,
                        notes=fields["notes"], attacks=tuple(attacks))
  return fields | more, scores


def nn_audit(out: Outputs, k: int, num_classes: int, attack_config, seed: int,
             rng: np.random.Generator, feats: np.ndarray | None = None
             ) -> tuple[dict, dict[str, np.ndarray], "NNCandidate"]:
  """`audit`'s NN attack on trial k: its record fields (`attack.evaluate`'s, attack_epochs,
  attack_threshold, per_class), its score_nn on every example, and the headline candidate it
  makes. Draws from `rng` (then `score_audit` goes on drawing from it). `feats` (N, F)
  replaces `attack.features` of the logits as the attack's input (an attack that sees more
  than one prediction vector, `audits/samia.py`, `audits/differencing.py`).

  Args:
    out: the stack's outputs on trial k's audit sets.
    k: the trial audited.
    num_classes: the classes of the labels.
    attack_config: the config's `attack` section.
    seed: seeds the attack's PRNG key.
    rng: draws the class matching, the held-out share and the halves of `_cross_fitted_auc`.
    feats: (N, F) the attack's input; None for `attack.features` of trial k's logits.

  Returns:
    (record fields, {"score_nn": (N,) P(member)}, the `NNCandidate`).
  """
  logits = out.logits[k]
  if feats is None:
    feats = attack.features(logits, getattr(attack_config, "features", "log_losses"))
  labels, is_member = out.labels, out.is_member
  test = out.split == 1
  members, nonmembers = _class_matched(np.flatnonzero(out.select(True, 0)),
                                       np.flatnonzero(out.select(False, 0)), labels, rng)
  fold = _held_out(members, nonmembers, rng)
  held = fold.held
  params, epochs, threshold, p_by_epoch = _nn_fit(
      AttackInput(feats, labels, is_member), fold, num_classes, attack_config,
      jax.random.PRNGKey(seed), criterion="auc")
  scores = {"score_nn": attack.predict(params, attack_config.kind, num_classes, feats, labels)}
  fields = attack.evaluate(scores["score_nn"][test], is_member[test], threshold=threshold)
  fields["attack_epochs"] = int(epochs)
  fields["attack_threshold"] = float(threshold)
  nn = NNCandidate(calls=scores["score_nn"] >= threshold,
                   auc=_cross_fitted_auc(p_by_epoch, is_member[held], rng))
  correct = logits.argmax(-1) == labels
  nonmember_audit = out.select(False, 1)
  fields["per_class"] = metrics.per_class(
      correct[is_member], labels[is_member], correct[nonmember_audit], labels[nonmember_audit],
      nn.calls[test], is_member[test], labels[test], num_classes)
  return fields, scores, nn


def bootstrap_replicates(attack_config) -> int:
  """The bootstrap replicates behind each interval: `attack.bootstrap_replicates`.

  Args:
    attack_config: the config's `attack` section.
  """
  return int(getattr(attack_config, "bootstrap_replicates", BOOTSTRAP_REPLICATES))


@dataclasses.dataclass(frozen=True)
class NNCandidate:
  """What the headline's choice needs of an NN attack fit on split 0: its member calls on
  every example, and its out-of-sample AUC on split 0 (`_cross_fitted_auc`)."""
  calls: np.ndarray
  auc: float


def score_audit(scores: dict[str, np.ndarray], roles: Roles, num_classes: int | None,
                seed: int, *, rng: np.random.Generator, replicates: int = BOOTSTRAP_REPLICATES,
                nn: NNCandidate | None = None, notes=(),
                attacks: tuple[str, ...] = tuple(THRESHOLD_ATTACKS)
                ) -> tuple[dict, dict[str, np.ndarray]]:
  """The threshold attacks on whichever scores `scores` holds, the headline and intervals.

  `audit`'s second half, shared with an audit of scores alone (`miajax.audit`, where a model
  brought from elsewhere may give only its losses). For each `score_<name>` of `attacks` in
  `scores`, a global threshold fit on split 0 and measured on split 1; with labels, the
  CLASS_THRESHOLD_ATTACKS of those scores too (their scores are added to `scores`). An attack
  whose score is absent is null in `threshold_attacks` and no headline candidate. The headline
  is the candidate (these, and `nn` when given) with the best out-of-sample AUC on split 0
  (`_headline_selection`, which draws from `rng`).

  Args:
    scores: per-example scores by "score_<name>", (N,) each, higher = member.
    roles: the examples' labels (None where unknown: no class-threshold attacks), membership
      and split.
    num_classes: the classes of the labels (None without labels).
    seed: seeds the bootstrap intervals.
    rng: draws the headline selection's halves.
    replicates: bootstrap replicates behind each interval.
    nn: the NN attack's headline candidate, if it ran.
    notes: the record's notes so far, kept first.
    attacks: the global-threshold attacks run: THRESHOLD_ATTACKS, or the run's `audits`.

  Returns:
    (the record fields threshold_attacks, headline_selection, headline_attack, headline_auc,
    headline_accuracy, headline_tpr_at_fpr, notes (`notes` and the headline's), intervals;
    each attack's member calls on every example, by name).
  """
  labels, is_member, split = roles
  fit, test = split == 0, split == 1
  calls = {} if nn is None else {"nn": nn.calls}
  fields = {"threshold_attacks": {}}
  for name in attacks:
    if f"score_{name}" not in scores:
      fields["threshold_attacks"][name] = None
      continue
    s = scores[f"score_{name}"]
    fitted = metrics.threshold_attack(s[fit], is_member[fit], s[test], is_member[test])
    fields["threshold_attacks"][name] = {"accuracy": fitted["accuracy"], "auc": fitted["auc"],
                                         "tpr_at_fpr": metrics.tpr_report(s[test],
                                                                          is_member[test])[0]}
    calls[name] = s >= fitted["threshold"]
  for name, base in CLASS_THRESHOLD_ATTACKS.items():
    if labels is None or f"score_{base}" not in scores:
      fields["threshold_attacks"][name] = None
      continue
    thresholds, _ = metrics.class_thresholds(scores[f"score_{base}"][fit], is_member[fit],
                                             labels[fit], num_classes)
    shifted = scores[f"score_{base}"] - thresholds[labels]
    fields["threshold_attacks"][name] = {
        "accuracy": metrics.balanced_accuracy(shifted[test] >= 0, is_member[test]),
        "auc": metrics.roc_auc(shifted[test], is_member[test]),
        "tpr_at_fpr": metrics.tpr_report(shifted[test], is_member[test])[0]}
    scores[f"score_{name}"], calls[name] = shifted, shifted >= 0

  fields["headline_selection"] = _headline_selection(
      scores, labels, is_member, fit, num_classes, None if nn is None else nn.auc, rng, attacks)
  name = max(fields["headline_selection"], key=fields["headline_selection"].get)
  tpr, tpr_notes = metrics.tpr_report(scores[f"score_{name}"][test], is_member[test])
  fields |= {"headline_attack": name,
             "headline_auc": metrics.roc_auc(scores[f"score_{name}"][test], is_member[test]),
             "headline_accuracy": metrics.balanced_accuracy(calls[name][test], is_member[test]),
             "headline_tpr_at_fpr": tpr,
             "notes": list(notes) + [f"headline_tpr_at_fpr: {n}" for n in tpr_notes]}
  fields["intervals"] = _intervals(scores, calls, is_member, test, seed, replicates, name,
                                   attacks)
  return fields, calls


def _headline_selection(scores, labels, is_member, fit, num_classes, nn_auc, rng,
                        attacks=tuple(THRESHOLD_ATTACKS)) -> dict:
  """Each headline candidate's ROC AUC on split 0, out of sample; split 1 is never read.

  The global-threshold scores need no fit: their AUC over all of split 0. Class thresholds
  are fit on one half of split 0 (members and non-members halved separately) and applied to
  the other, both ways; the AUC is that of these out-of-fold shifted scores. The NN attack
  trained on split 0 less its held-out share, and chose its epochs there: `nn_auc` is its
  cross-fitted AUC on that share (`_cross_fitted_auc`). Each is an estimate of the attack's
  AUC on unseen examples, the NN attack's the noisiest (the fewest examples). Candidates
  whose scores are absent (and the NN attack when `nn_auc` is None) are left out.
  """
  idx = np.flatnonzero(fit)
  m = is_member[idx]
  out = {name: metrics.roc_auc(scores[f"score_{name}"][idx], m) for name in attacks
         if f"score_{name}" in scores}
  if nn_auc is not None:
    out["nn"] = nn_auc
  half = _halves(m, rng)
  for name, base in CLASS_THRESHOLD_ATTACKS.items():
    if f"score_{name}" not in scores:
      continue
    s, y = scores[f"score_{base}"][idx], labels[idx]
    shifted = np.empty_like(s)
    for a, b in ((half, ~half), (~half, half)):
      thresholds, _ = metrics.class_thresholds(s[a], m[a], y[a], num_classes)
      shifted[b] = s[b] - thresholds[y[b]]
    out[name] = metrics.roc_auc(shifted, m)
  return {name: out[name] for name in _candidates(attacks) if name in out}


def _candidates(attacks: tuple[str, ...]) -> tuple[str, ...]:
  """The headline's candidates in tie-breaking order: HEADLINE_CANDIDATES' order, with the
  global-threshold attacks `attacks`."""
  return ("nn", *attacks, *CLASS_THRESHOLD_ATTACKS)


def _intervals(scores, calls, is_member, test, seed, replicates, headline,
               attacks=tuple(THRESHOLD_ATTACKS)) -> dict:
  """95% stratified bootstrap intervals over the audit examples, shaped like the record;
  `headline` names the attack behind the headline_* fields. An attack not in `calls` (not
  run) has null intervals."""
  def boot(name):
    return metrics.bootstrap_intervals(
        scores[f"score_{name}"][test], is_member[test], calls[name][test],
        replicates=replicates, seed=seed)

  boots = {name: boot(name) for name in _candidates(attacks) if name in calls}
  nn, top = boots.get("nn", dict.fromkeys(("accuracy", "auc", "tpr_at_fpr"))), boots[headline]
  out = {"level": 0.95, "replicates": replicates,
         "covers": "resampling of the audit examples (members and non-members separately)",
         "attack_accuracy": nn["accuracy"], "attack_auc": nn["auc"],
         "attack_tpr_at_fpr": nn["tpr_at_fpr"], "threshold_attacks": {},
         "headline_accuracy": top["accuracy"], "headline_auc": top["auc"],
         "headline_tpr_at_fpr": top["tpr_at_fpr"]}
  for name in (*attacks, *CLASS_THRESHOLD_ATTACKS):
    out["threshold_attacks"][name] = (
        {"accuracy": boots[name]["accuracy"], "auc": boots[name]["auc"]} if name in boots
        else None)
  return out


def selection_accuracy(out: Outputs) -> np.ndarray:
  """Per-trial accuracy on split 0's non-members (`reference`), Algorithm 1's accuracy bound.

  Test examples no model trained on and no audit measures: the test accuracy, on the audit's
  non-members, is reported and never chosen on.
  """
  correct = out.logits.argmax(-1) == out.labels[None]
  return correct[:, out.select(member=False, split=0)].mean(-1)


def selection_train_accuracy(out: Outputs) -> np.ndarray:
  """Per-trial accuracy on split 0's members (the attack's training members): with
  `selection_accuracy`, a generalisation gap measured without the audit split."""
  correct = out.logits.argmax(-1) == out.labels[None]
  return correct[:, out.select(member=True, split=0)].mean(-1)


def selection_gain(out: Outputs, k: int, num_classes: int, attack_config, seed: int,
                   folds: int) -> dict:
  """Algorithm 1's criterion for trial k without the audit split: the paper's attack trained
  on `folds - 1` folds of split 0 and its gain (Eq. 1) measured on the fold left out.

  Members and non-members of split 0 are cut into folds separately, so every fold stays
  balanced; the audit split (split 1) is never read. Each fold's attack is the audit's
  (`_nn_attack`: class-matched, its epochs chosen on a held-out share of the training folds),
  so the fold left out is only measured.

  Args:
    out: the stack's outputs on trial k's audit sets (split 1 is not read).
    k: the trial.
    num_classes: the classes of the labels.
    attack_config: the config's `attack` section.
    seed: seeds the folds and each fold's attack.
    folds: the number of folds, >= 2.

  Returns:
    The record fields `selection_gain`, the mean over folds clipped below at
    `selection.GAIN_FLOOR` (-log 4: an attacker can always answer 0.5, so a lower mean only
    says how badly the attack overfits), and `selection_gain_folds`, each fold's raw gain.
  """
  probs = np.asarray(jax.nn.softmax(out.logits[k], axis=-1), np.float32)
  members, nonmembers = np.flatnonzero(out.select(True, 0)), np.flatnonzero(out.select(False, 0))
  rng = np.random.default_rng(seed)
  member_fold = rng.permutation(len(members)) % folds
  nonmember_fold = rng.permutation(len(nonmembers)) % folds
  gains = []
  for f in range(folds):
    held = np.concatenate([members[member_fold == f], nonmembers[nonmember_fold == f]])
    params, _, _ = _nn_attack(
        AttackInput(probs, out.labels, out.is_member), members[member_fold != f],
        nonmembers[nonmember_fold != f], num_classes, attack_config,
        jax.random.fold_in(jax.random.PRNGKey(seed), f), np.random.default_rng([seed, f]))
    p = attack.predict(params, attack_config.kind, num_classes, probs[held], out.labels[held])
    gains.append(metrics.empirical_gain(p, out.is_member[held]))
  return {"selection_gain": selection.clipped(float(np.mean(gains))),
          "selection_gain_folds": gains}


def save_scores(path, out: Outputs, k: int, scores: dict[str, np.ndarray]) -> None:
  """scores.npz: anyone can audit the trial from this file alone (see DESIGN.md).

  Args:
    path: the file to write.
    out, k, scores: as for `scores_file`.
  """
  np.savez(path, **scores_file(out, k, scores))


def scores_file(out: Outputs, k: int, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """scores.npz's arrays: trial k's logits, the examples' labels and roles, and `scores`.

  Args:
    out: the stack's outputs on trial k's audit sets.
    k: the trial.
    scores: per-example scores by name, (N,) each.
  """
  return dict(logits=out.logits[k].astype(np.float32), labels=out.labels,
              is_member=out.is_member, split=out.split, index=out.index, **scores)


def lira_audit(logits: np.ndarray, labels: np.ndarray, keep: np.ndarray,
               population_logits: np.ndarray | None = None,
               population_labels: np.ndarray | None = None, *,
               rmia_offline_a: float | None = None,
               rmia_gamma: float = rmia.DEFAULT_GAMMA) -> tuple[dict, dict[str, np.ndarray]]:
  """LiRA and RMIA of model 0 (the target) with models 1.. as shadows, over the whole pool.

  Args:
    logits: (models, N, C) logits of every model on every pool example.
    labels: (N,) labels.
    keep: (models, N) bool, which examples each model trained on.
    population_logits: (models, Z, C) logits on RMIA's population samples, which no model
      trained on; None skips RMIA (its fields are then None).
    population_labels: (Z,) their labels.
    rmia_offline_a: the `a` of RMIA's offline approximation of Pr(x); None chooses it from
      the shadows alone (`rmia.choose_offline_a`, the target never read), falling back to
      rmia.DEFAULT_OFFLINE_A, with a note, where no shadow can stand in as the target.
    rmia_gamma: RMIA's threshold on LR(x) / LR(z).

  Returns:
    {variant: {auc, tpr_at_fpr {"0.001", "0.01"}}} for LiRA's online and offline tests with
    per-example and fixed variance and for RMIA online and offline, RMIA's `a` and how it was
    chosen, gamma and number of population samples, and the per-example scores of each variant.
  """
  conf = np.asarray(lira.logit_scaled_confidence(jnp.asarray(logits), jnp.asarray(labels)))
  fields, scores = {"num_shadows": int(len(keep) - 1)}, {}
  for online in (True, False):
    for fixed in (False, True):
      name = ("online" if online else "offline") + ("_fixed_variance" if fixed else "")
      scores[f"lira_{name}"] = lira.scores(conf[0], conf[1:], keep[1:], online=online,
                                           fixed_variance=fixed)
  rmia_fields = dict.fromkeys(("rmia_online", "rmia_offline", "rmia_offline_a",
                               "rmia_offline_a_chosen_by", "rmia_gamma", "rmia_num_population"))
  all_notes = []
  if population_logits is not None:
    logp = rmia.log_true_label_prob(logits, labels)
    pop_logp = rmia.log_true_label_prob(population_logits, population_labels)
    a, chosen_by = _rmia_offline_a(rmia_offline_a, logp, keep, pop_logp, rmia_gamma)
    if chosen_by.startswith("default"):
      all_notes.append(f"rmia_offline_a: {chosen_by}")
    for online in (True, False):
      scores["rmia_" + ("online" if online else "offline")] = rmia.scores(
          logp[0], logp[1:], keep[1:], pop_logp[0], pop_logp[1:], online=online,
          offline_a=a, gamma=rmia_gamma)
    rmia_fields |= {"rmia_offline_a": a, "rmia_offline_a_chosen_by": chosen_by,
                    "rmia_gamma": float(rmia_gamma), "rmia_num_population": int(pop_logp.shape[1])}
  for key, s in scores.items():
    name = key.removeprefix("lira_")
    tpr, notes = metrics.tpr_report(s, keep[0])
    fields[name] = {"auc": metrics.roc_auc(s, keep[0]), "tpr_at_fpr": tpr}
    all_notes.extend(f"{name}: {n}" for n in notes)
  return {**rmia_fields, **fields, "notes": all_notes}, scores


def lira_rotated(logits: np.ndarray, labels: np.ndarray, keep: np.ndarray,
                 fprs=(0.001, 0.01)) -> tuple[dict, np.ndarray, np.ndarray]:
  """Online LiRA with every model of the stack in turn as the target and all the others as
  its shadows (leave one out), the scores of all targets pooled.

  One target gives one score per pool example; M targets give M times as many, so a TPR at
  0.1% FPR rests on M times the non-members and members (Carlini et al. 2022 evaluate over
  many targets the same way). Scores are likelihood ratios, comparable across targets.

  Args:
    logits: (models, N, C) logits of every model on every pool example.
    labels: (N,) labels.
    keep: (models, N) bool, which examples each model trained on.
    fprs: the false positive rates at which the TPR is read.

  Returns:
    ({targets, scores, auc, auc_per_target, tpr_at_fpr {fpr: TPR or None},
    tpr_interval {fpr: 95% Clopper-Pearson [lo, hi] of the TPR among the pooled members, or
    None}, notes}, the pooled scores, their membership).
  """
  conf = np.asarray(lira.logit_scaled_confidence(jnp.asarray(logits), jnp.asarray(labels)))
  scores, members, aucs = [], [], []
  for t in range(len(keep)):
    others = np.arange(len(keep)) != t
    s = lira.scores(conf[t], conf[others], keep[others], online=True, fixed_variance=False)
    scores.append(s)
    members.append(keep[t])
    aucs.append(metrics.roc_auc(s, keep[t]))
  s, m = np.concatenate(scores), np.concatenate(members)
  tpr, notes = metrics.tpr_report(s, m, fprs)
  n = int(m.sum())
  interval = {f: None if v is None else list(metrics.clopper_pearson(round(v * n), n))
              for f, v in tpr.items()}
  return ({"targets": int(len(keep)), "scores": int(s.size), "auc": metrics.roc_auc(s, m),
           "auc_per_target": aucs, "tpr_at_fpr": tpr, "tpr_interval": interval,
           "notes": notes}, s, m)


def _rmia_offline_a(override, logp, keep, pop_logp, gamma) -> tuple[float, str]:
  """(a, how it was chosen): the override, else the shadows' choice (models 1.. only)."""
  if override is not None:
    return rmia.check_offline_a(override), "config override"
  choice = rmia.choose_offline_a(logp[1:], keep[1:], pop_logp[1:], gamma=gamma)
  if choice.a is None:
    return rmia.DEFAULT_OFFLINE_A, (f"default {rmia.DEFAULT_OFFLINE_A}: no shadow can stand in "
                                    "as the target (each needs members and non-members with "
                                    "an OUT reference among the other shadows)")
  models = ", ".join(str(k + 1) for k in choice.stand_ins)
  grid = choice.grid
  return choice.a, (f"reference model{'s' if len(choice.stand_ins) > 1 else ''} {models} as "
                    f"target: best mean AUC over a = {grid[0]:g}, {grid[1]:g}, ..., {grid[-1]:g}")


def rmia_population(s: splits_lib.Splits) -> tuple[str, np.ndarray]:
  """RMIA's population samples in a LiRA run: (dataset split, indices).

  A LiRA stack trains only on its pool, the train split's members, so no model has seen a
  test example; the `reference` half of the test split serves (the `audit` half measures
  test accuracy).
  """
  return "test", s.reference
