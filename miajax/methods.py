"""Each method as a list of phases; a phase is a number of steps of one pure step function.

| method          | phases                                                              |
|-----------------|---------------------------------------------------------------------|
| baseline        | train                                                               |
| pruning         | pretrain -> admm (W-step, Z/U updates) -> retrain (hard prune, masked) |

A phase may have an `enter` function, applied to the state when the phase begins (hard
pruning before retraining). It is applied at the phase's first step, also when a resumed run
restarts exactly there, so it must be a pure function of the state.
"""

import dataclasses
import functools
from typing import Any, Callable

from miajax import steps


@dataclasses.dataclass(frozen=True)
class Phase:
  name: str
  steps: int
  step: Callable                  # single trial: (state, batch, hp) -> (state, metrics)
  enter: Callable | None = None   # single trial: (state, hp) -> state


@dataclasses.dataclass(frozen=True)
class Recipe:
  phases: list[Phase]
  extra: Callable[[Any], Any] | None = None   # params -> method state at init
  hp: Callable[[Any], dict] | None = None     # params -> this trial's traced hyperparameters

  @property
  def total_steps(self) -> int:
    return sum(p.steps for p in self.phases)


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
  return int(round(epochs * steps_per_epoch))


def recipe(method: str, config, model, tx, steps_per_epoch: int) -> Recipe:
  plain = functools.partial(steps.train_step, model=model, tx=tx)
  n = lambda epochs: epochs_to_steps(epochs, steps_per_epoch)
  if method == "baseline":
    return Recipe([Phase("train", n(config.train.epochs), plain)])
  raise NotImplementedError(method)
