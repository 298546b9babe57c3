"""The trials of a run: one per (method, seed), grouped by method into stacks.

A trial is one full configuration; trials of one method share a compiled step and train as one
stack with a leading trial axis. Names are stable, so a rerun finds its checkpoints.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Trial:
  name: str
  method: str
  seed: int


def make(config) -> list[Trial]:
  methods = (config.methods,) if isinstance(config.methods, str) else tuple(config.methods)
  seeds = (config.seeds,) if isinstance(config.seeds, int) else tuple(config.seeds)
  return [Trial(f"{m}-seed{s}", m, int(s)) for m in methods for s in seeds]


def groups(trials: list[Trial]) -> dict[str, list[Trial]]:
  out: dict[str, list[Trial]] = {}
  for t in trials:
    out.setdefault(t.method, []).append(t)
  return out


def seeds(trials: list[Trial]) -> np.ndarray:
  return np.asarray([t.seed for t in trials], np.int64)
