"""The neural-network membership inference attack f_A(y, f(x)) -> P(member).

Two attack models (the paper's App. D):
  * `AttackModel`, the hierarchical attack of Nasr et al. 2018: the classifier's prediction
    vector f(x) goes through Dense 1024-512-64, the one-hot label through Dense 512-64, and
    their concatenation (128) through Dense 256-64-1. ReLU after every hidden layer.
  * `OneLayerAttack`, one Dense layer on [f(x), onehot(y)] (Rahman et al. 2018), the paper's
    attack for the CIFAR-10 4-layer CNN.

Both output one logit per example (member = 1). Kernels are initialised N(0, 0.01^2): the
paper writes N(0, 0.01), and Nasr et al.'s code draws with standard deviation 0.01; biases
start at zero. Inputs are a prediction vector (N, C) and integer labels (N,): softmax
probabilities in the paper and in Min-Max training, where the models are differentiable in
them (how Min-Max regularisation pushes the attack's gain back into the classifier); the
post-hoc audit may give log features instead (`features`), which do not saturate.

The attack is trained to maximise the empirical gain of Eq. 1 on balanced batches (a member
batch and a non-member batch of the same size), i.e. to minimise a balanced binary
cross-entropy: `train` for a fixed number of epochs, `train_early_stopped` keeping the epoch
with the best gain or AUC on a held-out set (the audit uses the AUC, so a small attack-train
set is not memorised for 100 epochs). Both take the training set as an `AttackSet` (members'
and non-members' `Examples`) and a `Schedule` (epochs, batch size, learning rate, and the early
stopping's patience and criterion); the held-out set is a `HeldOut`.
"""

import dataclasses
import functools
import math
import numbers
from typing import Any, NamedTuple

from flax import struct
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.special

from miajax import metrics
from miajax.errors import UserError

KINDS = ("nasr", "one_layer")
# What `train_early_stopped` maximises on its held-out set.
EARLY_STOPPING = ("gain", "auc")
# What the post-hoc attack sees of a prediction (`features`).
FEATURES = ("log_losses", "log_probs", "probs")
# Log features are clipped here: past ~100 nats of margin nothing is left to tell apart, and
# one extreme logit must not dominate the first layer's pre-activations.
LOG_FLOOR = -100.0

_kernel_init = nn.initializers.normal(stddev=0.01)
_Dense = functools.partial(nn.Dense, kernel_init=_kernel_init,
                           bias_init=nn.initializers.zeros)


class AttackModel(nn.Module):
  """Nasr et al.'s hierarchical attack; returns membership logits (N,)."""
  num_classes: int

  @nn.compact
  def __call__(self, probs, labels):
    onehot = jax.nn.one_hot(labels, self.num_classes, dtype=probs.dtype)
    h = probs
    for i, width in enumerate((1024, 512, 64)):
      h = nn.relu(_Dense(width, name=f"prediction_{i}")(h))
    g = onehot
    for i, width in enumerate((512, 64)):
      g = nn.relu(_Dense(width, name=f"label_{i}")(g))
    z = jnp.concatenate([h, g], axis=-1)
    for i, width in enumerate((256, 64)):
      z = nn.relu(_Dense(width, name=f"joint_{i}")(z))
    return _Dense(1, name="output")(z)[..., 0]


class OneLayerAttack(nn.Module):
  """One Dense layer on [f(x), onehot(y)] (Rahman et al.); returns logits (N,)."""
  num_classes: int

  @nn.compact
  def __call__(self, probs, labels):
    onehot = jax.nn.one_hot(labels, self.num_classes, dtype=probs.dtype)
    x = jnp.concatenate([probs, onehot], axis=-1)
    return _Dense(1, name="output")(x)[..., 0]


def create(kind: str, num_classes: int) -> nn.Module:
  """The attack model named `kind` ("nasr" or "one_layer") for `num_classes` classes.

  Args:
    kind: "nasr" or "one_layer" (`KINDS`).
    num_classes: the classes of the labels, an integer >= 2.

  Returns:
    The Flax module; its `__call__(probs, labels)` gives one membership logit per example.
  """
  if kind not in KINDS:
    raise UserError(f'attack.kind: {kind!r}; allowed: one of {", ".join(KINDS)}')
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
      or num_classes < 2:
    raise UserError(f"num_classes: {num_classes!r}; allowed: an integer >= 2")
  cls = AttackModel if kind == "nasr" else OneLayerAttack
  return cls(num_classes=int(num_classes))


def features(logits, representation: str = "log_losses") -> np.ndarray:
  """The prediction vector the post-hoc attack sees, (N, C) float32, from logits (N, C).

  "probs": softmax probabilities, the paper's (Nasr et al.'s) input. In float32, p_y rounds
  to exactly 1.0 once the margin z_y - max_{j != y} z_j passes ~17 nats, and the other
  classes' probabilities, e^-margin, differ by less than 1e-7 between a margin of 20 and of
  40: memorised members all look alike to a network whose weights start at N(0, 0.01^2).
  "log_probs": log p_i, in float64 then float32. The other classes' log-probabilities are
  about minus their margins (20 and 40 stay 20 apart), and the top class's,
  -log(1 + sum_{j != top} e^(z_j - z_top)), is taken with log1p so that it stays distinct
  too (-9e-18 is a normal float32; a plain float64 log-softmax rounds it to 0 past ~37 nats).
  "log_losses": log(-log p_i), the log of the cross-entropy the example would have with label
  i. For the top class it is about minus the margin (-17.8 and -37.8 for margins 20 and 40),
  so the near-certain predictions where members and non-members differ spread over tens of
  units, as the loss attack ranks them; for the other classes it is about log(margin), which
  keeps the noisy tail of tiny probabilities compressed.
  Both log features are clipped below at LOG_FLOOR.

  Args:
    logits: (N, C) finite logits.
    representation: "log_losses", "log_probs" or "probs" (`FEATURES`).

  Returns:
    (N, C) float32 features.
  """
  if representation not in FEATURES:
    raise UserError(f"attack.features: {representation!r}; allowed: one of "
                    f'{", ".join(FEATURES)}')
  z = np.asarray(logits)
  if z.ndim != 2 or not np.isfinite(z).all():
    raise UserError(f"logits: shape {z.shape}; allowed: finite (N, C) logits")
  if representation == "probs":
    # As Min-Max training computes them: float32 softmax.
    return np.asarray(jax.nn.softmax(jnp.asarray(z, jnp.float32), axis=-1), np.float32)
  z = z.astype(np.float64)
  top = z.argmax(axis=-1)
  rows = np.arange(z.shape[0])
  shifted = z - z[rows, top][:, None]
  rest = np.exp(shifted)
  rest[rows, top] = 0.0
  logp = shifted - np.log1p(rest.sum(axis=-1, keepdims=True))
  if representation == "log_losses":
    with np.errstate(divide="ignore"):     # -log p_i == 0: beyond float64, clipped below
      logp = np.log(-logp)
  return np.maximum(logp, LOG_FLOOR).astype(np.float32)


@functools.lru_cache(maxsize=None)
def optimizer(learning_rate: float) -> optax.GradientTransformation:
  """Adam at `learning_rate`; cached, so equal rates give the same object (one compile).

  Args:
    learning_rate: Adam's step size.

  Returns:
    The optax transformation, the same object for equal rates.
  """
  return optax.adam(learning_rate)


def gain_loss(attack_params, model, probs_in, labels_in, probs_out, labels_out):
  """Negative empirical gain, -G of Eq. 1: mean BCE over members + mean BCE over non-members.

  Args:
    attack_params: the model's "params" collection.
    model: the attack module.
    probs_in, labels_in: members' softmax outputs (B, C) and labels (B,).
    probs_out, labels_out: non-members' outputs and labels (the sizes may differ).

  Returns:
    A scalar, >= 0; log 4 for an attacker that always answers 0.5. log sigmoid is taken
    from the logits (-softplus), so it is exact and never -inf; differentiable in the params
    and in both probability arrays. The attack minimises it; a Min-Max classifier maximises
    it (adds -gamma * gain_loss to its own loss) through the probabilities.
  """
  logit_in = model.apply({"params": attack_params}, probs_in, labels_in)
  logit_out = model.apply({"params": attack_params}, probs_out, labels_out)
  return jnp.mean(jax.nn.softplus(-logit_in)) + jnp.mean(jax.nn.softplus(logit_out))


@struct.dataclass
class AttackState:
  """Attack parameters, their optimizer state and the step count."""
  params: Any
  opt_state: Any
  step: jax.Array


def init_state(key, model, num_classes, learning_rate, width=None) -> AttackState:
  """Fresh attack parameters and Adam state; pure (vmap it over keys for many trials).

  `attack_step` must then get `optimizer(learning_rate)` as its `tx`. `width`: the features
  per prediction (default `num_classes`, a prediction vector; more for an attack that also
  sees other per-example values, `audits/samia.py`).

  Args:
    key: the PRNG key of the initialisation.
    model: the attack module (`create`).
    num_classes: the classes of the labels.
    learning_rate: the rate of the Adam state (`optimizer`).
    width: features per prediction; None for `num_classes`.

  Returns:
    The AttackState at step 0.
  """
  probs = jnp.zeros((1, width or num_classes), jnp.float32)
  labels = jnp.zeros((1,), jnp.int32)
  params = model.init(key, probs, labels)["params"]
  return AttackState(params=params, opt_state=optimizer(learning_rate).init(params),
                     step=jnp.zeros((), jnp.int32))


def _attack_step(state, model, tx, batch_in, batch_out):
  """One optimizer step of the attack on a member batch and a non-member batch.

  Args:
    state: AttackState.
    model: the attack module (static under jit).
    tx: the optax transformation the state was made for, `optimizer(learning_rate)` (static
      under jit: pass the same object every call).
    batch_in: (probs (B, C), labels (B,)) of members.
    batch_out: (probs (B, C), labels (B,)) of non-members.

  Returns:
    (new state, {"loss": -gain, "gain": the batch's empirical gain before the step}).
  """
  probs_in, labels_in = batch_in
  probs_out, labels_out = batch_out

  def loss_fn(params):
    return gain_loss(params, model, probs_in, labels_in, probs_out, labels_out)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return (AttackState(params=params, opt_state=opt_state, step=state.step + 1),
          {"loss": loss, "gain": -loss})


# model and tx are static: a Flax module compares by its fields and `optimizer` is cached,
# so equal configurations reuse one compiled step.
attack_step = jax.jit(_attack_step, static_argnames=("model", "tx"))


class Examples(NamedTuple):
  """Prediction features (N, F) and integer labels (N,) of one set of examples."""
  probs: Any
  labels: Any


class AttackSet(NamedTuple):
  """What the attack trains on: member and non-member examples (the sizes may differ)."""
  members: Examples
  nonmembers: Examples

  @classmethod
  def of(cls, member_probs, member_labels, nonmember_probs, nonmember_labels) -> "AttackSet":
    """The set from its four arrays, members' first.

    Args:
      member_probs, member_labels: the members' features (N_in, F) and labels (N_in,).
      nonmember_probs, nonmember_labels: the non-members' (N_out, F) and (N_out,).
    """
    return cls(Examples(member_probs, member_labels), Examples(nonmember_probs,
                                                               nonmember_labels))


class HeldOut(NamedTuple):
  """The examples `train_early_stopped` measures each epoch on, disjoint from the training
  ones: features (N, F), labels (N,) and membership (N,) bool, with members and non-members."""
  probs: Any
  labels: Any
  is_member: Any


@dataclasses.dataclass(frozen=True)
class Schedule:
  """How long and how the attack trains; checked on construction.

  Attributes:
    epochs: the epochs to train (`train`), or the most to train (`train_early_stopped`).
    batch_size: examples per batch of each set (the smaller set's size if that is less).
    learning_rate: Adam's step size.
    patience: `train_early_stopped` stops once this many epochs have passed without a better
      held-out value; None runs all `epochs`.
    criterion: what `train_early_stopped` maximises on the held-out set, "gain" or "auc"
      (`EARLY_STOPPING`).
  """
  epochs: int
  batch_size: int = 64
  learning_rate: float = 1e-3
  patience: int | None = None
  criterion: str = "gain"

  def __post_init__(self):
    _check_hyperparameters(self.epochs, self.batch_size, self.learning_rate)
    if self.criterion not in EARLY_STOPPING:
      raise UserError(f"criterion: {self.criterion!r}; allowed: one of "
                      f'{", ".join(EARLY_STOPPING)}')
    p = self.patience
    if p is not None and (isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1):
      raise UserError(f"patience: {p!r}; allowed: None or an integer >= 1")

  @classmethod
  def of(cls, attack_config, **overrides) -> "Schedule":
    """The schedule of a config's `attack` section (epochs, batch_size, learning_rate).

    Args:
      attack_config: the config's `attack` section.
      **overrides: patience and criterion, which the section does not set.
    """
    return cls(epochs=int(attack_config.epochs), batch_size=int(attack_config.batch_size),
               learning_rate=float(attack_config.learning_rate), **overrides)


@functools.partial(jax.jit, static_argnames=("model", "tx", "steps", "batch_size"))
def _train_epoch(state, key, model, tx, data: AttackSet, *, steps, batch_size):
  """One epoch: fresh shuffles of both sets, `steps` balanced batches under lax.scan.

  A scan rather than a Python loop of `attack_step`: measured here (CPU, Nasr attack, 10
  classes, batch 64) about 4x faster, the per-step dispatch and gathers being most of the
  cost of so small a model.

  Args:
    state: AttackState.
    key: this epoch's PRNG key.
    model, tx: as for `attack_step` (static).
    data: the training set on device.
    steps: batches this epoch (static).
    batch_size: examples per batch of each set (static).

  Returns:
    (new state, each step's {"loss", "gain"}, stacked).
  """
  members, nonmembers = data
  key_in, key_out = jax.random.split(key)
  take = steps * batch_size
  idx_in = jax.random.permutation(key_in, members.probs.shape[0])[:take]
  idx_out = jax.random.permutation(key_out, nonmembers.probs.shape[0])[:take]
  idx_in = idx_in.reshape(steps, batch_size)
  idx_out = idx_out.reshape(steps, batch_size)

  def body(state, idx):
    # Gather on device: the data is uploaded once per `train` call, not per step.
    i, o = idx
    return _attack_step(state, model, tx, (members.probs[i], members.labels[i]),
                        (nonmembers.probs[o], nonmembers.labels[o]))

  return jax.lax.scan(body, state, (idx_in, idx_out))


def _probs_and_labels(prefix, probs, labels, num_classes, width=None):
  """Validates (N, width or C) probabilities and (N,) labels; returns float32 and int32
  arrays."""
  p = np.asarray(probs, dtype=np.float32)
  width = width or num_classes
  if p.ndim != 2 or p.shape[1] != width:
    raise UserError(f"{prefix}probs: shape {p.shape}; allowed: (N, {width})")
  if not np.isfinite(p).all():
    raise UserError(f"{prefix}probs: non-finite values; allowed: finite prediction features")
  y = np.asarray(labels)
  if y.shape != (p.shape[0],) or not np.issubdtype(y.dtype, np.integer):
    raise UserError(f"{prefix}labels: shape {y.shape}, dtype {y.dtype}; "
                    f"expected ({p.shape[0]},) integers")
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise UserError(f"{prefix}labels: values in [{y.min()}, {y.max()}]; allowed: classes in "
                    f"[0, {num_classes - 1}]")
  return p, y.astype(np.int32)


def _check_hyperparameters(epochs, batch_size, learning_rate):
  if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
    raise UserError(f"attack.epochs: {epochs!r}; allowed: an integer >= 0")
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
      or batch_size < 1:
    raise UserError(f"attack.batch_size: {batch_size!r}; allowed: an integer >= 1")
  if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real) \
      or not 0 < learning_rate < math.inf:
    raise UserError(f"attack.learning_rate: {learning_rate!r}; allowed: a finite number > 0")


def _epochs(key, kind, num_classes, data: AttackSet, schedule: Schedule, width=None):
  """Yields (0, initial params), then (epoch, params) after each of `schedule.epochs`."""
  model = create(kind, num_classes)
  p_in, y_in = _probs_and_labels("member_", *data.members, num_classes, width)
  p_out, y_out = _probs_and_labels("nonmember_", *data.nonmembers, num_classes, width)
  n = min(p_in.shape[0], p_out.shape[0])
  if n == 0:
    raise UserError(f"member_probs/nonmember_probs: {p_in.shape[0]} and {p_out.shape[0]} "
                    "examples; allowed: at least one of each")
  batch = int(min(schedule.batch_size, n))
  steps = n // batch
  learning_rate = float(schedule.learning_rate)
  tx = optimizer(learning_rate)
  init_key, epoch_key = jax.random.split(key)
  state = init_state(init_key, model, num_classes, learning_rate, width)
  on_device = jax.device_put(AttackSet.of(p_in, y_in, p_out, y_out))
  yield 0, state.params
  for epoch in range(int(schedule.epochs)):
    state, _ = _train_epoch(state, jax.random.fold_in(epoch_key, epoch), model, tx, on_device,
                            steps=steps, batch_size=batch)
    yield epoch + 1, state.params


def train(key, kind, num_classes, data: AttackSet, schedule: Schedule):
  """Trains an attack on fixed member / non-member outputs (the post-hoc protocol).

  Each epoch draws a fresh seeded shuffle of both sets and runs min(N_in, N_out) // B
  balanced steps (the remainder of each set sits out that epoch, a different one each
  time); B is `schedule.batch_size`, or the smaller set's size if that is less. One compiled
  epoch serves every epoch.

  Args:
    key: the PRNG key of the attack's initialisation and shuffles.
    kind: "nasr" or "one_layer" (`create`).
    num_classes: the classes of the labels; the features per example too.
    data: the members and non-members to train on.
    schedule: epochs, batch size and learning rate (patience and criterion are not read).

  Returns:
    The trained "params" collection of `create(kind, num_classes)`.
  """
  for _, params in _epochs(key, kind, num_classes, data, schedule):
    pass
  return params  # pylint: disable=undefined-loop-variable


def train_early_stopped(key, kind, num_classes, data: AttackSet, held: HeldOut,
                        schedule: Schedule, *, held_scores=False, width=None):
  """`train`, keeping the epoch whose attack scores best on a held-out set.

  The training sequence is `train`'s with the same arguments, so the result equals
  `train(..., Schedule(epochs=best_epoch, ...))`. Before training and after every epoch the
  attack scores the held-out examples (disjoint from the training ones, members and
  non-members) and `schedule.criterion` is measured; the earliest epoch with the largest value
  wins. An attack that memorises its training set stops improving on the held-out set, so the
  epoch count follows the signal there is.

  criterion "gain": the empirical gain (Eq. 1). Epoch 0, the untrained attack (P(member) ~0.5
  for all: gain -log 4, a coin), wins whenever no trained epoch is better calibrated than a
  coin, even one that ranks members higher; its AUC is then that of a random function.
  criterion "auc": the ROC AUC, which only asks the attack to rank members above non-members,
  what `attack_auc` and a threshold chosen afterwards use.

  Args:
    key, kind, num_classes, data: as for `train`.
    held: the held-out set, (N, F), (N,), (N,) bool.
    schedule: as for `train`, with `patience` and `criterion`; `epochs` is the most to train.
    held_scores: also return every epoch's P(member) on the held-out set.
    width: features per example (default num_classes; `init_state`).

  Returns:
    (params of the best epoch, that epoch, the held-out criterion from epoch 0 to the last
    run), and with `held_scores` a fourth element: (epochs run + 1, N held) float64 P(member).
  """
  measure = metrics.empirical_gain if schedule.criterion == "gain" else metrics.roc_auc
  patience = schedule.patience
  model = create(kind, num_classes)
  held_p, held_y = _probs_and_labels("held_", held.probs, held.labels, num_classes, width)
  held_m = np.asarray(held.is_member)
  if held_m.shape != held_y.shape or not np.isin(held_m, (0, 1)).all() \
      or held_m.all() or not held_m.any():
    raise UserError(f"held_is_member: shape {held_m.shape}, {int(held_m.sum())} members; "
                    f"expected ({held_y.size},) booleans with members and non-members")
  held_m = held_m.astype(bool)
  on_device = jax.device_put((held_p, held_y))
  best, best_epoch, values, scores = None, 0, [], []
  for epoch, params in _epochs(key, kind, num_classes, data, schedule, width):
    p = scipy.special.expit(np.asarray(_logits(params, model, *on_device), np.float64))
    values.append(measure(p, held_m))
    scores.append(p)
    if values[-1] > values[best_epoch] or best is None:
      best, best_epoch = params, epoch
    elif patience is not None and epoch - best_epoch >= patience:
      break
  if held_scores:
    return best, best_epoch, values, np.stack(scores)
  return best, best_epoch, values


@functools.partial(jax.jit, static_argnames=("model",))
def _logits(params, model, probs, labels):
  return model.apply({"params": params}, probs, labels)


def predict(params, kind, num_classes, probs, labels) -> np.ndarray:
  """P(member) for each example, (N,) float64 (sigmoid taken in float64 from the logits).

  Args:
    params: the attack's "params" collection (`train`, `train_early_stopped`).
    kind: the attack model it was trained as.
    num_classes: the classes of the labels.
    probs: (N, F) features, F the width the attack was trained on.
    labels: (N,) integer labels.

  Returns:
    (N,) float64 P(member).
  """
  model = create(kind, num_classes)
  p, y = _probs_and_labels("", probs, labels, num_classes, _width(params, kind, num_classes))
  logits = np.asarray(_logits(params, model, p, y), dtype=np.float64)
  return scipy.special.expit(logits)


def _width(params, kind, num_classes) -> int:
  """The features per example the attack's `params` take."""
  if kind == "nasr":
    return int(params["prediction_0"]["kernel"].shape[0])
  return int(params["output"]["kernel"].shape[0]) - num_classes


def evaluate(p_member, is_member, threshold=0.5) -> dict:
  """The attack's audit numbers for results.json.

  Args:
    p_member: the attack's P(member) for each audit example, (N,).
    is_member: the truth, (N,) bool.
    threshold: the decision threshold on P(member), chosen without these examples (`evaluate`
      never fits anything to them).

  Returns:
    {"attack_accuracy": balanced accuracy calling p >= threshold a member,
     "attack_accuracy_at_half": the same at p >= 0.5, the attack's own decision rule,
     "attack_auc": ROC AUC,
     "attack_tpr_at_fpr": {"0.001": TPR at FPR < 0.1%, "0.01": TPR at FPR < 1%; None where
     the non-members are too few to measure it},
     "gain": empirical gain (Eq. 1), "js_divergence": its Eq. 10 JS estimate,
     "notes": why any field is None}.
  """
  if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) \
      or not math.isfinite(threshold):
    raise UserError(f"threshold: {threshold!r}; allowed: a finite number")
  p = np.asarray(p_member, dtype=np.float64)
  gain = metrics.empirical_gain(p, is_member)
  tpr, notes = metrics.tpr_report(p, is_member)
  return {
      "attack_accuracy": metrics.balanced_accuracy(p >= threshold, is_member),
      "attack_accuracy_at_half": metrics.balanced_accuracy(p >= 0.5, is_member),
      "attack_auc": metrics.roc_auc(p, is_member),
      "attack_tpr_at_fpr": tpr,
      "gain": gain,
      "js_divergence": metrics.js_from_gain(gain),
      "notes": [f"attack_tpr_at_fpr: {n}" for n in notes],
  }
