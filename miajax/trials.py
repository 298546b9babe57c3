"""The trials of a run: one per (method, seed), grouped by method into stacks.

A trial is one full configuration; trials of one method share a compiled step and train as one
stack with a leading trial axis. Names are stable, so a rerun finds its checkpoints. A LiRA run
(lira.num_shadows > 0) has instead, per method, a target (model 0) and its shadow models.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Trial:
  name: str
  method: str
  seed: int
  lira_model: int | None = None   # 0 = the LiRA target, 1.. = its shadows


def make(config) -> list[Trial]:
  methods = (config.methods,) if isinstance(config.methods, str) else tuple(config.methods)
  seeds = (config.seeds,) if isinstance(config.seeds, int) else tuple(config.seeds)
  if config.lira.num_shadows:
    return [Trial(f"{m}-lira{i:02d}", m, int(seeds[0]) + i, i)
            for m in methods for i in range(config.lira.num_shadows + 1)]
  return [Trial(f"{m}-seed{s}", m, int(s)) for m in methods for s in seeds]


def groups(trials: list[Trial]) -> dict[str, list[Trial]]:
  out: dict[str, list[Trial]] = {}
  for t in trials:
    out.setdefault(t.method, []).append(t)
  return out


def seeds(trials: list[Trial]) -> np.ndarray:
  return np.asarray([t.seed for t in trials], np.int64)
