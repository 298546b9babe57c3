"""The methods by name: each is a defence of `miajax/defences/` (one module per defence), which
declares its phases and builds its `Recipe`; these are the name-based entry points.

| method          | phases                                                                  |
|-----------------|-------------------------------------------------------------------------|
| baseline        | train                                                                   |
| pruning         | pretrain -> admm (W-step; Z/U update every admm.update_every) -> retrain |
| minmax          | train, each step k attack-model steps then a classifier step on         |
|                 | loss + gamma * the attack's gain on the classifier's member batch        |
| pruning_minmax  | the pruning phases, every step with the Min-Max term (Eq. 3)             |
| dp              | train with DP-SGD on Poisson-sampled batches: per-example clipping,     |
|                 | Gaussian noise                                                          |
"""

from miajax import defences
from miajax.defences.defence import Phase, Recipe  # pylint: disable=unused-import
from miajax.durations import epochs_to_steps  # pylint: disable=unused-import


def phase_steps(method: str, config, steps_per_epoch: int) -> tuple[int, ...]:
  """The steps of each phase `recipe(method, config, ...)` will train, known before anything
  is built."""
  return defences.get(method).phase_steps(config, steps_per_epoch)


def total_steps(method: str, config, steps_per_epoch: int) -> int:
  return sum(phase_steps(method, config, steps_per_epoch))


def recipe(method: str, config, model, tx, steps_per_epoch: int, num_classes: int,
           num_members: int) -> Recipe:
  return defences.get(method).recipe(config, model, tx, steps_per_epoch, num_classes,
                                     num_members)
