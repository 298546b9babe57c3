"""Where a run stands and when it ends: the labels and ETAs of its log lines.

A run trains its stacks in order. Each stack sets up (model, initial state, checkpoints),
compiles the step of every phase before that phase's first step, trains, then audits its
trials. The run's ETA adds what is left of all four, each at the pace measured so far in this
process:

  setting up  stacks left to set up x the mean seconds a stack took to set up so far
  compiling   phases left to compile x the mean seconds a phase took to compile so far
  training    the work left, in plain classifier steps (each phase's steps x its defence's
              `step_cost`: a Min-Max or DP step is several), at the stack's own pace once it
              trains, at the run's pace (all stacks so far) for stacks not started
  auditing    trials left to audit x the mean seconds per trial audited so far

Until something is measured, a guess stands in for it (the *_GUESS_S below).
Bookkeeping only: the trainer says what it did and when; nothing here reads a clock.
"""

import dataclasses
import math

# Before any setup, compile or audit of this run is measured. Seen on a 2-core CPU: 14-34 s
# between stacks (setting up and compiling); 43-203 s to audit a stack of 3 trials.
SETUP_GUESS_S = 10.0         # per stack
COMPILE_GUESS_S = 15.0       # per phase
AUDIT_GUESS_S = 30.0         # per trial


@dataclasses.dataclass(frozen=True)
class Stack:
  trials: int
  phase_steps: tuple[int, ...]          # each phase's steps, per trial, in order
  phase_costs: tuple[float, ...] | None = None   # a step's cost in plain steps; None: all 1

  @property
  def steps(self) -> int:
    return sum(self.phase_steps)

  def work(self, begin: int, end: int) -> float:
    """Steps begin..end of one trial, in plain classifier steps."""
    costs = self.phase_costs or (1.0,) * len(self.phase_steps)
    total, start = 0.0, 0
    for steps, cost in zip(self.phase_steps, costs):
      total += max(0, min(end, start + steps) - max(begin, start)) * cost
      start += steps
    return total


@dataclasses.dataclass
class _Pace:
  """Work done in this process and the seconds it took."""
  work: float = 0.0
  seconds: float = 0.0

  def add(self, work: float, seconds: float) -> None:
    self.work += work
    self.seconds += seconds

  def per_work(self, guess: float | None = None) -> float | None:
    return self.seconds / self.work if self.work else guess


class Progress:
  """The run's stacks (method -> Stack, in run order) and what this process measured."""

  def __init__(self, stacks: dict[str, Stack]):
    self.stacks = dict(stacks)
    self.done = {m: 0 for m in stacks}            # steps per trial, trained or restored
    self.done_compiling: set[tuple[str, int]] = set()   # (method, phase) compiled here
    self.audited: set[str] = set()
    self.set_up: set[str] = set()
    self.training = {m: _Pace() for m in stacks}  # plain trial-steps, seconds
    self.setup_pace = _Pace()                     # stacks, seconds
    self.compiling_pace = _Pace()                 # phases, seconds
    self.auditing = _Pace()                       # trials, seconds
    self._compiling: tuple[str, int, str, float] | None = None

  def label(self, method: str) -> str:
    return f"[{list(self.stacks).index(method) + 1}/{len(self.stacks)} {method}]"

  # ---------------------------------------------------------------- what the trainer reports

  def finished_earlier(self, method: str) -> None:
    """The stack's results are on disk: nothing of it is left."""
    self.done[method] = self.stacks[method].steps
    self.audited.add(method)

  def setting_up(self, method: str) -> str:
    trials = self.stacks[method].trials
    return (f"{self.label(method)} setting up {_count(trials, 'trial')} "
            f"(about {seconds(self.setup_pace.per_work(SETUP_GUESS_S))})")

  def was_set_up(self, method: str, seconds_taken: float) -> None:
    self.set_up.add(method)
    self.setup_pace.add(1, seconds_taken)

  def restored(self, method: str, step: int) -> None:
    self.done[method] = max(self.done[method], step)

  def compiling(self, method: str, phase: int, name: str, since: float) -> str:
    """From `since` on, the stack's `phase` (named `name`) compiles; the line saying so."""
    self._compiling = (method, phase, name, since)
    trials = self.stacks[method].trials
    return (f"{self.label(method)} compiling the {name} step for {_count(trials, 'trial')} "
            f"(about {seconds(self.compile_estimate())})")

  def compiled(self, now: float) -> str:
    """The phase of `compiling` compiled by `now`: its time counted, the line saying so."""
    method, phase, name, since = self._compiling
    self._compiling = None
    self.done_compiling.add((method, phase))
    self.compiling_pace.add(1, now - since)
    return (f"{self.label(method)} {name} step compiled in {now - since:.0f} s; "
            f"run ETA {self.eta()}")

  def trained(self, method: str, steps: int, seconds: float) -> None:
    """`steps` more steps of every trial of the stack, trained in `seconds`."""
    stack, done = self.stacks[method], self.done[method]
    self.done[method] += steps
    self.training[method].add(stack.work(done, done + steps) * stack.trials, seconds)

  def audited_in(self, method: str, seconds: float) -> None:
    self.audited.add(method)
    self.auditing.add(self.stacks[method].trials, seconds)

  # ---------------------------------------------------------------- estimates

  def compile_estimate(self) -> float:
    """Seconds one phase is expected to take to compile."""
    return self.compiling_pace.per_work(COMPILE_GUESS_S)

  def audit_estimate(self, method: str) -> float:
    return self.stacks[method].trials * self.auditing.per_work(AUDIT_GUESS_S)

  def seconds_left(self) -> float | None:
    """The run's remaining seconds; None while no training rate is measured yet."""
    run = _Pace()
    for pace in self.training.values():
      run.add(pace.work, pace.seconds)
    total = 0.0
    for method, stack in self.stacks.items():
      left = stack.work(self.done[method], stack.steps) * stack.trials
      if left > 0:
        per_step = self.training[method].per_work(run.per_work())
        if per_step is None:
          return None
        total += left * per_step
      total += self._compiles_left(method) * self.compile_estimate()
      if method not in self.audited:
        total += self.audit_estimate(method)
        if method not in self.set_up:
          total += self.setup_pace.per_work(SETUP_GUESS_S)
    return total

  def eta(self) -> str:
    left = self.seconds_left()
    return "?" if left is None else hms(left)

  def _compiles_left(self, method: str) -> int:
    """Phases of the stack with steps still to train and not compiled in this process."""
    end, count = 0, 0
    for phase, steps in enumerate(self.stacks[method].phase_steps):
      end += steps
      if steps and end > self.done[method] and (method, phase) not in self.done_compiling:
        count += 1
    return count


def _count(n: int, noun: str) -> str:
  return f"{n} {noun}{'' if n == 1 else 's'}"


def hms(secs: float) -> str:
  if not math.isfinite(secs):
    return "?"
  s = int(secs)
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def seconds(secs: float) -> str:
  """Short waits in seconds, long ones as h:mm:ss."""
  return f"{secs:.0f} s" if secs < 120 else hms(secs)
