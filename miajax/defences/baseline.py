"""Baseline: plain training on the cross-entropy, one phase; no defence, the reference."""

import functools

from miajax import steps
from miajax.defences.defence import Defence, Phase, Recipe


def _build(config, phase_steps, model, tx, num_classes, num_members):
  del config, num_classes, num_members
  plain = functools.partial(steps.train_step, model=model, tx=tx)
  return Recipe([Phase("train", phase_steps[0], plain)])


DEFENCE = Defence(name="baseline", build=_build)
