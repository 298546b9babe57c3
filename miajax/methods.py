"""Each method as a list of phases; a phase is a number of steps of one pure step function.

| method          | phases                                                                  |
|-----------------|-------------------------------------------------------------------------|
| baseline        | train                                                                   |
| pruning         | pretrain -> admm (W-step; Z/U update every admm.update_every) -> retrain |
| minmax          | train, each step k attack-model steps then a classifier step on         |
|                 | loss + gamma * the attack's gain on the classifier's member batch        |
| pruning_minmax  | the pruning phases, every step with the Min-Max term (Eq. 3)             |
| dp              | train with DP-SGD on Poisson-sampled batches: per-example clipping,     |
|                 | Gaussian noise                                                          |

A phase may have an `enter` function, applied to the state when the phase begins (ADMM's
Z = Pi(W), U = 0; the hard prune before retraining), and a `periodic` function applied after
every `every`-th step of the phase (ADMM's Z-projection and dual update). Both are pure
functions of (state, hp); `enter` also runs when a resumed run restarts exactly at the phase's
first step, which is safe because the checkpoint there was written before it.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from miajax import attack as attack_lib
from miajax import config as config_lib
from miajax import dp as dp_lib
from miajax import models
from miajax import pruning
from miajax import steps


@dataclasses.dataclass(frozen=True)
class Phase:
  name: str
  steps: int
  step: Callable                    # single trial: (state, batch, hp) -> (state, metrics)
  enter: Callable | None = None     # single trial: (state, hp) -> state
  periodic: Callable | None = None  # single trial: (state, hp) -> (state, metrics)
  every: int = 0


@dataclasses.dataclass(frozen=True)
class Recipe:
  phases: list[Phase]
  extra: Callable[[Any], Any] | None = None   # params -> method state at init
  hp: Callable[[Any], dict] | None = None     # one trial's params -> its traced hyperparameters
  attack_batches: int = 0   # Min-Max: attack-member and reference batches read per step
  report: dict = dataclasses.field(default_factory=dict)   # fields for results.json
  example_loss: Callable | None = None   # DP-SGD: (params, one example) -> its loss
  # How training batches are drawn: "shuffle" (a seeded permutation per epoch, fixed-size
  # batches) or "poisson" (each member in each batch with probability batch / members, padded
  # to a static size with a "mask"; DP-SGD, whose accountant assumes it).
  sampling: str = "shuffle"

  @property
  def total_steps(self) -> int:
    return sum(p.steps for p in self.phases)


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
  return int(round(epochs * steps_per_epoch))


def phase_steps(method: str, config, steps_per_epoch: int) -> tuple[int, ...]:
  """The steps of each phase `recipe(method, config, ...)` will train, known before anything
  is built."""
  n = lambda epochs: epochs_to_steps(epochs, steps_per_epoch)
  if method in ("pruning", "pruning_minmax"):
    return (n(config.pruning.pretrain_epochs), n(config.admm.epochs),
            n(config.pruning.retrain_epochs))
  return (n(config.train.epochs),)


def total_steps(method: str, config, steps_per_epoch: int) -> int:
  return sum(phase_steps(method, config, steps_per_epoch))


def recipe(method: str, config, model, tx, steps_per_epoch: int, num_classes: int,
           num_members: int) -> Recipe:
  n = lambda epochs: epochs_to_steps(epochs, steps_per_epoch)
  if method in ("minmax", "pruning_minmax"):
    wrap = functools.partial(_minmax_step, model=model,
                             attack_model=attack_lib.create(config.attack.kind, num_classes),
                             attack_tx=attack_lib.optimizer(config.minmax.attack_learning_rate))
    extra = functools.partial(_minmax_extra, attack_kind=config.attack.kind,
                              num_classes=num_classes, lr=config.minmax.attack_learning_rate)
    hp = lambda params: {"gamma": jnp.float32(config.minmax.gamma)}
    inner = recipe(method.removesuffix("_minmax").replace("minmax", "baseline"), config, model,
                   tx, steps_per_epoch, num_classes, num_members)
    return Recipe(
        phases=[dataclasses.replace(p, step=functools.partial(wrap, inner=p.step))
                for p in inner.phases],
        extra=lambda params: (inner.extra(params) if inner.extra else {}) | extra(params),
        hp=lambda params: (inner.hp(params) if inner.hp else {}) | hp(params),
        attack_batches=config.minmax.k, report=inner.report)

  plain = functools.partial(steps.train_step, model=model, tx=tx)
  if method == "baseline":
    return Recipe([Phase("train", n(config.train.epochs), plain)])
  if method == "pruning":
    keep = config_lib.parse_keep(config.pruning.keep)
    rho = float(config.admm.rho)
    hp = lambda params: {"counts": pruning.count_tree(params, pruning.keep_counts(
        params, pruning.keep_fractions(params, keep, model=config.model.name))),
        "rho": jnp.float32(rho)}
    return Recipe(
        phases=[
            Phase("pretrain", n(config.pruning.pretrain_epochs), plain),
            Phase("admm", n(config.admm.epochs),
                  functools.partial(_admm_step, model=model, tx=tx),
                  enter=_admm_enter,
                  periodic=functools.partial(_admm_update, growth=config.admm.rho_growth),
                  every=config.admm.update_every),
            Phase("retrain", n(config.pruning.retrain_epochs),
                  functools.partial(steps.train_step, model=model, tx=tx, mask_key="mask"),
                  enter=functools.partial(_hard_prune, tx=tx)),
        ],
        extra=_pruning_extra, hp=hp)
  if method == "dp":
    total = n(config.train.epochs)
    sample_rate = config.data.batch_size / num_members
    sigma = dp_lib.calibrate_noise_multiplier(config.dp.epsilon, config.dp.delta, sample_rate,
                                              max(total, 1))
    report = {"dp_epsilon": dp_lib.epsilon(sigma, sample_rate, total, config.dp.delta),
              "dp_delta": config.dp.delta, "dp_noise_multiplier": sigma,
              "dp_sampling": "poisson",
              "dp_model_norm": models.normalisation(config.model.name, config.model.norm)}
    example_loss = functools.partial(_example_loss, model=model)
    # Poisson batches of expected size sample_rate * num_members = data.batch_size.
    step = functools.partial(_dp_step, model=model, tx=tx, example_loss=example_loss,
                             clip_norm=config.dp.clip_norm,
                             expected_batch=config.data.batch_size)
    # The noise is traced, so trials swept over epsilon share one compiled step.
    return Recipe([Phase("train", total, step)], hp=lambda params: {
        "noise_multiplier": jnp.float32(sigma)}, report=report, example_loss=example_loss,
        sampling="poisson")
  raise ValueError(f"unknown method {method!r}")


# ------------------------------------------------------------------------------------ ADMM
# App. B: minimise loss + sum_i rho_i/2 ||W_i - Z_i + U_i||^2 over W; every few steps
# Z_i = Pi_{n_i}(W_i + U_i) (keep the n_i largest magnitudes) and U_i += W_i - Z_i.


def _pruning_extra(params):
  zeros = jax.tree.map(jnp.zeros_like, params)
  return {"z": zeros, "u": zeros, "rho": jnp.zeros((), jnp.float32),
          "mask": jax.tree.map(lambda p: jnp.ones(p.shape, jnp.bool_), params)}


def _prunable_map(fn, counts, *trees):
  """fn over the prunable leaves (count not None); other leaves give None."""
  return jax.tree.map(lambda n, *xs: None if n is None else fn(*xs), counts, *trees,
                      is_leaf=lambda x: x is None)


def _admm_enter(state, hp):
  z = pruning.project_tree(state.params, hp["counts"])
  u = jax.tree.map(jnp.zeros_like, state.params)
  return state.replace(extra=state.extra | {"z": z, "u": u, "rho": hp["rho"]})


def _admm_loss(params, batch_stats, model, batch, *, loss_fn, extra, counts):
  """The W-step objective: loss_fn + sum_i rho/2 ||W_i - Z_i + U_i||^2."""
  loss, aux = loss_fn(params, batch_stats, model, batch)
  penalty = _prunable_map(lambda w, z, u: jnp.sum(jnp.square(w - z + u)), counts, params,
                          extra["z"], extra["u"])
  return loss + extra["rho"] / 2 * sum(jax.tree.leaves(penalty)), aux


def _admm_step(state, batch, hp, *, model, tx, loss_fn=steps.classifier_loss):
  """W-step: the optimizer on the task loss plus the proximal term."""
  loss = functools.partial(_admm_loss, loss_fn=loss_fn, extra=state.extra, counts=hp["counts"])
  return steps.train_step(state, batch, hp, model=model, tx=tx, loss_fn=loss)


def _admm_update(state, hp, *, growth):
  """Z-projection, dual update, residuals ||W_i - Z_i|| per layer (ADMM has converged when
  they approach 0); rho grows by `growth` per update (1.0: fixed).

  U is the scaled dual, U = Y / rho. When rho is multiplied by g, U must be divided by g so the
  unscaled dual Y carries over (Boyd et al. 2011, section 3.4.1); otherwise every earlier
  residual would weigh g^updates too much in the proximal term.
  """
  z = pruning.project_tree(jax.tree.map(jnp.add, state.params, state.extra["u"]), hp["counts"])
  u = jax.tree.map(lambda u, w, z: (u + w - z) / growth, state.extra["u"], state.params, z)
  residual = _prunable_map(lambda w, z: jnp.sqrt(jnp.sum(jnp.square(w - z))), hp["counts"],
                           state.params, z)
  extra = state.extra | {"z": z, "u": u, "rho": state.extra["rho"] * growth}
  flat = {"residual/" + "/".join(str(k.key) for k in path): r
          for path, r in jax.tree_util.tree_leaves_with_path(residual)}
  return state.replace(extra=extra), flat


def _hard_prune(state, hp, *, tx):
  """mask_i = top-n_i(|W_i|); W *= mask; fresh optimizer moments so nothing pruned revives."""
  mask = pruning.mask_tree(state.params, hp["counts"])
  params = pruning.apply_mask(state.params, mask)
  return state.replace(params=params, opt_state=tx.init(params),
                       extra=state.extra | {"mask": mask})


# ------------------------------------------------------------------------------------ Min-Max
# Nasr et al. 2018, Algorithm 1 lines 3-7: k attack steps on (attack members, reference), then
# one classifier step on loss + gamma * log f_A(x, y, f(x)) over the classifier's own batch.


def _minmax_extra(params, *, attack_kind, num_classes, lr):
  del params
  model = attack_lib.create(attack_kind, num_classes)
  # A fixed key: the attack's init is part of the method, the trial seed drives the rest.
  return {"attack": attack_lib.init_state(jax.random.PRNGKey(0), model, num_classes, lr)}


def _minmax_step(state, batch, hp, *, inner, model, attack_model, attack_tx):
  """One jitted alternation: k attack updates, then the inner method's classifier step."""
  # k, the number of attack steps, is the number of side batches in `batch`.

  def probs(images):
    logits, _ = steps.forward(model, state.params, state.batch_stats, images, train=False)
    return jax.nn.softmax(jax.lax.stop_gradient(logits))

  def attack_update(att, xs):
    mem_images, mem_labels, ref_images, ref_labels = xs
    loss, grads = jax.value_and_grad(attack_lib.gain_loss)(
        att.params, attack_model, probs(mem_images), mem_labels, probs(ref_images), ref_labels)
    updates, opt_state = attack_tx.update(grads, att.opt_state, att.params)
    return att.replace(params=optax.apply_updates(att.params, updates), opt_state=opt_state,
                       step=att.step + 1), -loss

  att, gains = jax.lax.scan(attack_update, state.extra["attack"],
                            (batch["mem/image"], batch["mem/label"], batch["ref/image"],
                             batch["ref/label"]))

  def loss_fn(params, batch_stats, model, batch):
    loss, (logits, batch_stats) = steps.classifier_loss(params, batch_stats, model, batch)
    member_logit = attack_model.apply({"params": att.params}, jax.nn.softmax(logits),
                                      batch["label"])
    # The members' half of the gain (Eq. 1): the classifier lowers the attack's confidence.
    gain = jnp.mean(jax.nn.log_sigmoid(member_logit))
    return loss + hp["gamma"] * gain, (logits, batch_stats)

  state = state.replace(extra=state.extra | {"attack": att})
  state, metrics = inner(state, batch, hp, loss_fn=loss_fn)
  return state, metrics | {"attack_gain": gains[-1]}


# ------------------------------------------------------------------------------------ DP-SGD


def _example_loss(params, example, *, model):
  """The loss of ONE example (no batch axis), the unit DP-SGD clips."""
  logits, _ = steps.forward(model, params, {}, example["image"][None], train=True)
  return steps.cross_entropy(logits, example["label"][None])


def _dp_step(state, batch, hp, *, model, tx, example_loss, clip_norm, expected_batch):
  """Per-example gradients clipped to clip_norm, the rows of batch["mask"] summed (padding
  dropped), Gaussian noise of hp's multiplier, divided by the EXPECTED batch size of Poisson
  sampling, a constant (dividing by the realised size would leak it). Loss and accuracy are
  over the sampled rows. Models need no BatchNorm here (model.norm=group or none): batch
  statistics mix examples."""
  noise_key = jax.random.fold_in(state.key, 1)
  examples = {"image": batch["image"], "label": batch["label"]}
  mask = batch.get("mask", jnp.ones(batch["label"].shape, bool))
  grads, metrics = dp_lib.dp_grad(example_loss, state.params, examples, noise_key,
                                  clip_norm=clip_norm, noise_multiplier=hp["noise_multiplier"],
                                  batch_size=expected_batch, mask=mask)
  logits, _ = steps.forward(model, state.params, {}, batch["image"], train=False)
  state = steps.apply_gradients(state, grads, tx, state.batch_stats)
  weights = mask.astype(jnp.float32)
  mean = lambda x: jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1.0)
  loss = mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]))
  return state, metrics | {"loss": loss, "cross_entropy": loss,
                           "accuracy": mean(jnp.argmax(logits, -1) == batch["label"])}
