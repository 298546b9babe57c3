"""Regularised: the baseline with an L2 penalty, weight_decay/2 * ||W||^2 over every parameter.

Weight decay is the classic regulariser against membership inference (Shokri et al. 2017): a
smaller, smoother model fits its members less closely. The strength is traced per trial, so
`sweep.weight_decay` trains every value with one compiled step. Unlike
`optimizer.weight_decay` (decoupled, added to the update of every method), the penalty is part
of the objective, so it is the "l2" term of the progress lines and the loss figure.
"""

import functools

import jax
import jax.numpy as jnp

from miajax import steps
from miajax.defences.defence import Defence, Phase, Recipe
from miajax.errors import finite_positive


def _validate(c, need, used):
  del used
  need(c.regularised.weight_decay == 0 or finite_positive(
      c.regularised.weight_decay), "regularised.weight_decay", "a finite number >= 0")


def _build(config, phase_steps, model, tx, num_classes, num_members):
  del num_classes, num_members
  weight_decay = float(config.regularised.weight_decay)
  return Recipe([Phase("train", phase_steps[0], functools.partial(_step, model=model, tx=tx))],
                hp=lambda params: {"weight_decay": jnp.float32(weight_decay)})


def _step(state, batch, hp, *, model, tx, loss_fn=steps.classifier_loss):
  """One step on loss_fn + weight_decay/2 * sum ||W||^2: the gradient gains weight_decay * W."""

  def loss(params, batch_stats, model, batch):
    task, aux = loss_fn(params, batch_stats, model, batch)
    squares = sum(jnp.sum(jnp.square(p)) for p in jax.tree.leaves(params))
    return task + hp["weight_decay"] / 2 * squares, aux

  return steps.train_step(state, batch, hp, model=model, tx=tx, loss_fn=loss)


DEFENCE = Defence(
    name="regularised", build=_build,
    sections={"regularised": {"weight_decay": 1e-3}},
    sweeps={"weight_decay": ("regularised.weight_decay", "wd")},
    validate=_validate, traced=("weight_decay",), terms=(("l2", None),))
