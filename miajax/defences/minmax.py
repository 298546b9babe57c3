"""Min-Max (Nasr et al. 2018): adversarial regularisation around another defence's steps.

Algorithm 1 lines 3-7: each step, `minmax.k` attack-model steps on (attack members,
reference), then the inner defence's classifier step on its objective plus gamma times the
members' half of the attack gain (Eq. 1). It trains nothing alone: `compose(DEFENCE, inner)`
puts it around baseline (`minmax`) or ADMM pruning (`pruning_minmax`, Eq. 3). gamma is traced
per trial.
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from miajax import attack as attack_lib
from miajax import steps
from miajax.defences.defence import Defence, Recipe
from miajax.errors import finite_positive


class MinmaxState(NamedTuple):
  attack: Any   # the inner attack model's TrainState (attack.init_state)
  inner: Any    # the wrapped defence's own state ({} for the baseline)


SECTIONS = {
    "minmax": {
        "gamma": 1.0,
        "k": 1,                         # attack-model steps per classifier step
        "attack_learning_rate": 1e-5,   # App. D
    },
}


def _validate(c, need, used):
  del used
  need(c.minmax.gamma >= 0, "minmax.gamma", "a number >= 0")
  need(c.minmax.k > 0, "minmax.k", "a positive integer")
  need(finite_positive(c.minmax.attack_learning_rate), "minmax.attack_learning_rate",
       "a finite number > 0")


def _wrap(inner: Recipe, config, model, num_classes) -> Recipe:
  """Every phase of `inner` with the Min-Max alternation around its step (which must take
  `loss_fn=`, as steps.train_step and ADMM's W-step do)."""
  wrap = functools.partial(_minmax_step, model=model,
                           attack_model=attack_lib.create(config.attack.kind, num_classes),
                           attack_tx=attack_lib.optimizer(config.minmax.attack_learning_rate))
  extra = functools.partial(_minmax_extra, attack_kind=config.attack.kind,
                            num_classes=num_classes, lr=config.minmax.attack_learning_rate)
  hp = lambda params: {"gamma": jnp.float32(config.minmax.gamma)}
  return dataclasses.replace(
      inner,
      phases=[dataclasses.replace(p, step=functools.partial(wrap, inner=p.step),
                                  enter=_enter_on_inner(p.enter),
                                  periodic=_periodic_on_inner(p.periodic))
              for p in inner.phases],
      extra=lambda params: extra(params, inner=inner.extra(params) if inner.extra else {}),
      hp=lambda params: (inner.hp(params) if inner.hp else {}) | hp(params),
      attack_batches=config.minmax.k)


def side_sets(config, group, own, members, lira, count):
  """Min-Max's inner-attack batches (App. D): each trial's `minmax_members` and
  `minmax_reference`, drawn apart from the post-hoc attack's sets (see `splits`). In a LiRA
  stack every model trains on its own half of the pool, so its inner attack takes a seeded
  half of that model's own members: an attack fed another model's members would be taught
  non-members as members."""
  if not count:
    return None
  if lira:
    inner = [np.sort(np.random.default_rng([config.seed, t.lira_model, 0x3131]).permutation(m)
                     [:len(m) // 2]) for t, m in zip(group, members)]
  else:
    inner = [s.minmax_members for s in own]
  return {"mem": ("train", inner, count),
          "ref": ("test", [s.minmax_reference for s in own], count)}


def _step_cost(config, phase):
  """Each of the k attack updates runs the classifier forward on two batches and trains the
  attack model: about 1.7 plain steps each (LeNet-5 on 2 CPU cores: 1,500 vs 4,000 ex/s)."""
  del phase
  return 1.7 * config.minmax.k


DEFENCE = Defence(name="minmax", phases=(), wrap=_wrap, sections=SECTIONS,
                  sweeps={"gamma": ("minmax.gamma", "gamma")}, validate=_validate,
                  traced=("gamma",), terms=(("adversarial", None),), side_sets=side_sets,
                  step_cost=_step_cost)


def _minmax_extra(params, *, inner, attack_kind, num_classes, lr) -> MinmaxState:
  del params
  model = attack_lib.create(attack_kind, num_classes)
  # A fixed key: the attack's init is part of the method, the trial seed drives the rest.
  return MinmaxState(attack_lib.init_state(jax.random.PRNGKey(0), model, num_classes, lr),
                     inner)


def _inner_view(state):
  """The state as the wrapped defence's functions see it: its own state as `extra`."""
  return state.replace(extra=state.extra.inner)


def _outer_view(inner_state, attack):
  return inner_state.replace(extra=MinmaxState(attack, inner_state.extra))


def _enter_on_inner(enter):
  """The wrapped defence's phase `enter`, on its own part of the state."""
  if enter is None:
    return None
  return lambda state, hp: _outer_view(enter(_inner_view(state), hp), state.extra.attack)


def _periodic_on_inner(periodic):
  """The wrapped defence's `periodic` update, on its own part of the state."""
  if periodic is None:
    return None

  def wrapped(state, hp):
    inner_state, metrics = periodic(_inner_view(state), hp)
    return _outer_view(inner_state, state.extra.attack), metrics
  return wrapped


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

  att, gains = jax.lax.scan(attack_update, state.extra.attack,
                            (batch["mem/image"], batch["mem/label"], batch["ref/image"],
                             batch["ref/label"]))

  def loss_fn(params, batch_stats, model, batch):
    loss, (logits, batch_stats) = steps.classifier_loss(params, batch_stats, model, batch)
    member_logit = attack_model.apply({"params": att.params}, jax.nn.softmax(logits),
                                      batch["label"])
    # The members' half of the gain (Eq. 1): the classifier lowers the attack's confidence.
    gain = jnp.mean(jax.nn.log_sigmoid(member_logit))
    return loss + hp["gamma"] * gain, (logits, batch_stats)

  state, metrics = inner(_inner_view(state), batch, hp, loss_fn=loss_fn)
  return _outer_view(state, att), metrics | {"attack_gain": gains[-1]}
