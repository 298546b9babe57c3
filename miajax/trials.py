"""The trials of a run: one per (method, swept values, seed), grouped by method into stacks.

A trial is one full configuration; trials of one method share a compiled step and train as one
stack with a leading trial axis. What differs between them is the seed and the values of
`config.sweep` that apply to the method, which reach the step as traced hyperparameters (`hp`),
never as constants, so one program serves the whole stack. Names are stable and readable
(`pruning-keep0.10-seed1`), so a rerun finds its checkpoints. A LiRA run (lira.num_shadows > 0)
has instead, per method, a target (model 0) and its shadow models.

Each defence declares its sweep keys (`defences.sweeps()`), e.g.

| sweep key       | sets           | used by                  |
|-----------------|----------------|--------------------------|
| `sweep.keep`    | `pruning.keep` | pruning, pruning_minmax  |
| `sweep.rho`     | `admm.rho`     | pruning, pruning_minmax  |
| `sweep.gamma`   | `minmax.gamma` | minmax, pruning_minmax   |
| `sweep.epsilon` | `dp.epsilon`   | dp                       |
"""

import copy
import dataclasses
import itertools

import numpy as np

from miajax import defences
from miajax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Trial:
  name: str
  method: str
  seed: int
  lira_model: int | None = None   # 0 = the LiRA target, 1.. = its shadows
  values: tuple = ()              # ((config field, value), ...) this trial sweeps

  @property
  def group(self) -> str:
    """The name without the seed: trials of one configuration, summarised over seeds."""
    return self.name.rsplit("-seed", 1)[0] if self.lira_model is None else self.method


def make(config) -> list[Trial]:
  methods = (config.methods,) if isinstance(config.methods, str) else tuple(config.methods)
  seeds = (config.seeds,) if isinstance(config.seeds, int) else tuple(config.seeds)
  for key, (_, used_by, _) in defences.sweeps().items():
    if _values(config.sweep[key], key) and not set(used_by) & set(methods):
      raise UserError(f"sweep.{key}={config.sweep[key]!r} applies to none of methods="
                      f"{methods}; allowed: a sweep of a method in the run "
                      f"({', '.join(used_by)}), or sweep.{key}=()")
  if config.lira.num_shadows:
    if any(points(config, m) != [()] for m in methods):
      raise UserError("sweep: got a sweep with lira.num_shadows > 0; allowed: one or the other")
    return [Trial(f"{m}-lira{i:02d}", m, int(seeds[0]) + i, i)
            for m in methods for i in range(config.lira.num_shadows + 1)]
  trials = [Trial("-".join([m, *(_label(f, v) for f, v in point), f"seed{s}"]), m, int(s),
                  values=point)
            for m in methods for point in points(config, m) for s in seeds]
  names = [t.name for t in trials]
  if len(set(names)) != len(names):
    raise UserError(f"sweep: values that differ only past two digits give one trial name "
                    f"twice ({sorted(n for n in names if names.count(n) > 1)[0]}); allowed: "
                    "values distinct at two significant digits")
  return trials


def points(config, method: str) -> list[tuple]:
  """The swept (field, value) tuples that apply to `method`: a grid over the swept keys, or
  their values taken in step (`sweep.mode="zip"`). [()] when nothing applies."""
  swept = [(field, _values(config.sweep[key], key))
           for key, (field, used_by, _) in defences.sweeps().items() if method in used_by]
  swept = [(field, values) for field, values in swept if values]
  if not swept:
    return [()]
  mode = config.sweep.mode
  if mode == "grid":
    combos = itertools.product(*(vs for _, vs in swept))
  elif mode == "zip":
    lengths = {len(vs) for _, vs in swept}
    if len(lengths) > 1:
      raise UserError(f"sweep: mode='zip' needs lists of one length; got lengths "
                      f"{sorted(lengths)} for {method}; allowed: equal lengths, or mode='grid'")
    combos = zip(*(vs for _, vs in swept))
  else:
    raise UserError(f"sweep.mode={mode!r} is not known; allowed: grid, zip")
  return [tuple((field, v) for (field, _), v in zip(swept, combo)) for combo in combos]


def _values(spec, key) -> tuple:
  values = (spec,) if isinstance(spec, (int, float, str)) else tuple(spec)
  if len(set(map(str, values))) != len(values):
    raise UserError(f"sweep.{key}={spec!r} repeats a value; allowed: distinct values")
  return values


def _label(field: str, value) -> str:
  prefix = next(p for f, _, p in defences.sweeps().values() if f == field)
  if isinstance(value, float):
    return f"{prefix}{value:.2f}" if value >= 0.01 else f"{prefix}{value:.0e}"
  text = "".join(ch if ch.isalnum() or ch == "." else "_" for ch in str(value))
  return prefix + text


def config_for(config, trial: Trial):
  """The trial's own resolved config: the run's, with the trial's swept values set."""
  out = copy.deepcopy(config)
  for field, value in trial.values:
    section, key = field.split(".")
    # Fields keep their declared type: pruning.keep is a string ("0.1", "paper").
    out[section][key] = type(out[section][key])(value)
  # A control that trains its own model (the narrow one) says so in its trial's config.
  out.model.name = defences.get(trial.method).model_name(out)
  return out


def groups(trials: list[Trial]) -> dict[str, list[Trial]]:
  out: dict[str, list[Trial]] = {}
  for t in trials:
    out.setdefault(t.method, []).append(t)
  return out


def seeds(trials: list[Trial]) -> np.ndarray:
  return np.asarray([t.seed for t in trials], np.int64)
