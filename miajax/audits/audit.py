"""What an audit declares, what it reads of one trained trial, and what it gives back.

An `Audit` is one way of measuring how much a trained model leaks about its members. It
either runs (`run(target, rng) -> Result`: record fields, per-example scores, a headline
candidate, files) or, threshold-style, only scores examples (`score(logits, labels)`, or
`example_score(target)` for a score that needs more than the logits, such as the model's
gradients; higher = member): the trainer then fits the score's global threshold on split 0, measures it on the audit
split, and makes it a candidate for the headline (`evaluate.score_audit`).

Audits apply to one layout of a stack: "splits" (every trial on its own membership split: fit
on split 0, measured on split 1) or "lira" (model 0 of the stack the target, the others its
shadows, over the pool). A `once` audit runs on the stack's target alone, not per trial.
"""

import dataclasses
from typing import Any, Callable

import numpy as np

from miajax import evaluate
from miajax.tables import Column

LAYOUTS = ("splits", "lira")


@dataclasses.dataclass(frozen=True)
class Target:
  """One trained trial as its audits see it."""
  k: int                         # its index in the stack
  seed: int                      # the trial's seed, which seeds the audits' draws too
  stack: evaluate.StackOutputs   # the whole stack's outputs, each set evaluated once
  config: Any
  num_classes: int
  swept: bool                    # the stack sweeps a hyperparameter (Algorithm 1 chooses)


@dataclasses.dataclass(frozen=True)
class Result:
  fields: dict                                        # record fields
  scores: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)   # per example
  candidate: evaluate.NNCandidate | None = None       # a headline candidate fit on split 0
  files: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Audit:
  name: str
  title: str                     # what the progress line says it runs
  layout: str = "splits"
  run: Callable[[Target, np.random.Generator], Result] | None = None
  score: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
  # Threshold-style from more than the logits: (target) -> (N,) on membership(k)'s examples.
  example_score: Callable[[Target], np.ndarray] | None = None
  fields: tuple[str, ...] = ()   # the record fields its `run` writes
  once: bool = False             # on the stack's target (model 0) only
  # Its columns of the printed comparison (`results.columns`): a "splits" audit's always (with
  # "-" where a trial did not measure it), after the model's accuracies; a "lira" audit's
  # where a record holds its `fields`, last, with its `legend` lines below the table.
  columns: tuple[Column, ...] = ()
  legend: tuple[str, ...] = ()
  # What the paired table (`paired.metrics`) compares of it within each pair of a trial and
  # the baseline's of the same seed: (report.json key, header, getter, format), a column
  # where some pair measured it.
  paired: tuple[tuple[str, str, Callable[[dict], Any], str], ...] = ()
