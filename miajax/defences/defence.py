"""What a defence declares, so that the run needs no branch on its name, and the `Recipe` of
phases it builds.

A `Defence` says which config sections it owns and how to check them, which sweep keys it
reads, its phases (each with the config field of its epochs, so the steps are known before
anything is built), how to build its `Recipe` (or wrap another's), the hyperparameters it
traces per trial, the terms it adds to the objective, the side sets it reads from the splits,
its record fields and any check before training.

A phase is a number of steps of one pure step function. It may have an `enter` function,
applied to the state when the phase begins (ADMM's Z = Pi(W), U = 0; the hard prune before
retraining), and a `periodic` function applied after every `every`-th step of the phase (ADMM's
Z-projection and dual update). Both are pure functions of (state, hp); `enter` also runs when a
resumed run restarts exactly at the phase's first step, which is safe because the checkpoint
there was written before it.
"""

import dataclasses
from typing import Any, Callable, Mapping

import jax

from miajax import durations


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
  # "poisson": the record field that receives the padded static batch size.
  max_batch_field: str | None = None

  @property
  def total_steps(self) -> int:
    return sum(p.steps for p in self.phases)


def state_fields(extra) -> tuple[str, ...]:
  """The fields of a defence's typed state that hold something (also those of a wrapped
  defence's, in `inner`): what an audit may read there ("dense": `kept_dense`).

  Args:
    extra: a trial's method state (`TrainState.extra`).
  """
  if not (isinstance(extra, tuple) and hasattr(extra, "_fields")):
    return ()
  own = tuple(f for f, v in extra._asdict().items()
              if f != "inner" and jax.tree.leaves(v))
  return own + state_fields(getattr(extra, "inner", None))


def kept_dense(extra):
  """The weights a defence with a `dense_phase` kept at that phase's end (its state's `dense`,
  also inside a wrapper's `inner`).

  Args:
    extra: a trial's method state.
  """
  if hasattr(extra, "dense"):
    return extra.dense
  return kept_dense(extra.inner)

# need(ok, field, allowed): config.validate's one-line error when not ok.
Need = Callable[[bool, str, str], None]


@dataclasses.dataclass(frozen=True)
class Defence:
  name: str
  # (phase name, config field of its epochs), in training order. Each may be given in steps
  # or examples instead, beside it (`durations`).
  phases: tuple[tuple[str, str], ...] = (("train", "train.epochs"),)
  # (config, steps per phase, model, tx, num_classes, num_members) -> Recipe.
  build: Callable[..., Recipe] | None = None
  # (inner recipe, config, model, num_classes) -> the recipe around it; see compose.py.
  wrap: Callable[..., Recipe] | None = None
  # Config sections it owns: {section: {key: default}}, added to config.base().
  sections: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  # sweep key -> (config field it sets, trial-name prefix); `sweep.<key>` is added to base().
  sweeps: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
  # (config, need, used): its sections' values, checked in every run (base() holds them all);
  # `used` says whether this run trains it, for what matters only then.
  validate: Callable[[Any, Need, bool], None] | None = None
  traced: tuple[str, ...] = ()        # the keys of its recipe's per-trial `hp`
  # (term, phase or None for every phase): what it adds to the cross-entropy, named as the
  # progress lines and the report's loss figure name it.
  terms: tuple[tuple[str, str | None], ...] = ()
  # (config, group, own splits, members, lira, count) -> side sets for pipeline.train_batches.
  side_sets: Callable[..., dict | None] | None = None
  # (recipe, state, mesh, strategy, data) -> None: raises before training if it cannot train.
  check: Callable[..., None] | None = None
  report_fields: tuple[str, ...] = ()   # record fields its recipes report
  # (config, phase name) -> a step's cost in plain classifier steps (for a defence that wraps,
  # the cost it adds): the ETA's prior for a stack not yet timed, from the work per step.
  step_cost: Callable[[Any, str], float] | None = None
  # The config field naming the model it trains instead of `model.name` (the narrow-model
  # control), or None: `model.name`.
  model_field: str | None = None
  # The phase at whose end the weights are still dense (pruning's pretraining), or None. Such
  # a defence keeps them in its state's `dense` field (`kept_dense`) (when its config asks), for audits that
  # compare the dense model with the final one.
  dense_phase: str | None = None

  def model_name(self, config) -> str:
    """The model its trials train: `model_field`'s value, else `model.name`.

    Args:
      config: the run's config.
    """
    return field_value(config, self.model_field) if self.model_field else config.model.name

  def phase_steps(self, config, steps_per_epoch: int) -> tuple[int, ...]:
    """The steps of each phase, known before anything is built (`durations.steps`).

    Args:
      config: the run's config.
      steps_per_epoch: steps of one pass over the members.
    """
    return tuple(durations.steps(config, field, steps_per_epoch) for _, field in self.phases)

  def phase_costs(self, config) -> tuple[float, ...]:
    """Each phase's step cost in plain classifier steps (1.0 unless the defence says).

    Args:
      config: the run's config.
    """
    return tuple(self.step_cost(config, name) if self.step_cost else 1.0
                 for name, _ in self.phases)

  def recipe(self, config, model, tx, steps_per_epoch: int, num_classes: int,
             num_members: int) -> Recipe:
    """The recipe of one stack of this defence's trials.

    Args:
      config: the run's config.
      model: the classifier module.
      tx: the classifier's optimizer.
      steps_per_epoch: steps of one pass over the members (`phase_steps`).
      num_classes: the classes of the labels.
      num_members: the members each trial trains on.

    Returns:
      `build`'s Recipe; a ValueError for a defence that only wraps another.
    """
    if self.build is None:
      raise ValueError(f"{self.name} only wraps another defence; compose it with one")
    return self.build(config, self.phase_steps(config, steps_per_epoch), model, tx,
                      num_classes, num_members)

  def added_terms(self, phase: str) -> tuple[str, ...]:
    """The terms it adds to the cross-entropy in `phase`.

    Args:
      phase: a phase name.

    Returns:
      The names of `terms` that apply there, in declaration order.
    """
    return tuple(term for term, where in self.terms if where in (None, phase))


def field_value(config, field: str):
  """config["section.key"].

  Args:
    config: the run's config.
    field: "section.key".
  """
  section, key = field.split(".")
  return config[section][key]
