"""One Orbax CheckpointManager per trial, under DIR/<trial>/checkpoints/.

The run keeps its trials stacked on a leading axis; on disk each trial is its own checkpoint
(its slice of the state, plus JSON metadata: input position, phase, and what the method adds),
so one configuration of a sweep can be inspected, restored or audited on its own.

A defence's own state is a NamedTuple (`admm.AdmmState`, `minmax.MinmaxState` around its
inner defence's). Checkpoints written before that hold it as one flat dict of the same leaves
(format 1: Min-Max's `attack` beside ADMM's `z`, `u`, `rho`, `mask`); they restore into the
typed state by field name, so an older workdir resumes where it stopped.
"""

from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from miajax import paths
from miajax.errors import UserError


class TrialCheckpoints:
  """Saves and restores a trial stack as per-trial checkpoints that move in lockstep."""

  def __init__(self, workdir: str | Path, trial_names: Sequence[str], max_to_keep: int = 2):
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    self.names = list(trial_names)
    self.managers = [
        ocp.CheckpointManager(paths.absolute(workdir) / name / "checkpoints", options=options,
                              item_names=("state", "meta"))
        for name in self.names]

  def latest_step(self) -> int | None:
    """The newest step every trial has (a crash mid-save can leave one trial ahead)."""
    common = None
    for m in self.managers:
      steps = set(m.all_steps())
      common = steps if common is None else common & steps
    return max(common) if common else None

  def save(self, step: int, state: Any, meta: Sequence[dict]) -> None:
    for k, manager in enumerate(self.managers):
      trial = jax.tree.map(lambda x, k=k: x[k], state)
      manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(trial), meta=ocp.args.JsonSave(meta[k])))

  def restore(self, step: int, like: Any, sharding=None) -> Any:
    """The stack at `step`, shaped (and laid out, with `sharding`) like the state `like`."""
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), like)
    trials = []
    for name, m in zip(self.names, self.managers):
      try:
        trials.append(_restore(m, step, template))
      except Exception as e:  # pylint: disable=broad-except
        raise RuntimeError(f"{name} at step {step}: {_first_line(e)}") from e
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *trials)
    return jax.device_put(stacked, sharding) if sharding is not None else stacked

  def restore_latest(self, like: Any, sharding=None) -> tuple[int, Any]:
    """The newest step at which every trial's checkpoint restores, and the stack there.

    A step that does not restore (a truncated or missing file) is skipped with a warning and
    left on disk; so are the newer steps of the other trials, moved aside into
    `checkpoints_set_aside/` beside `checkpoints/` so the resumed run can save those steps
    again. Returns (0, None) when there is no checkpoint at all.

    Raises:
      UserError: checkpoints exist but no step restores for every trial.
    """
    steps = sorted(set.intersection(*(set(m.all_steps()) for m in self.managers)) or (),
                   reverse=True)
    failure = None
    for step in steps:
      try:
        state = self.restore(step, like, sharding)
      except Exception as e:  # pylint: disable=broad-except
        failure = e
        logging.warning("checkpoint step %d does not restore (%s); trying an older one",
                        step, _first_line(e))
        continue
      self._set_aside_after(step)
      return step, state
    if failure is not None:
      raise UserError(
          f"no checkpoint of {', '.join(self.names)} restores ({_first_line(failure)}); "
          f"allowed: move {paths.of(self.managers[0].directory).parent.parent} elsewhere to "
          "train again, or a new --workdir")
    self._set_aside_after(0)
    return 0, None

  def _set_aside_after(self, step: int) -> None:
    """Moves every trial's checkpoints newer than `step` out of Orbax's way (never deletes)."""
    for m in self.managers:
      newer = [s for s in m.all_steps() if s > step]
      if newer and jax.process_index() == 0:
        aside = paths.of(m.directory).parent / "checkpoints_set_aside"
        paths.mkdir(aside)
        for s in newer:
          target = aside / str(s)
          while target.exists():
            target = target.with_name(target.name + "_")
          paths.move(paths.of(m.directory) / str(s), target)
          logging.warning("set aside %s (newer than the step the run resumes from)", target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("checkpoints set aside")
    for m in self.managers:
      m.reload()

  def meta(self, step: int) -> list[dict]:
    return [m.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
            for m in self.managers]

  def wait(self) -> None:
    for m in self.managers:
      m.wait_until_finished()

  def close(self) -> None:
    for m in self.managers:
      m.close()


def _restore(manager, step: int, template: Any) -> Any:
  restore = lambda like: manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(like))).state
  try:
    return restore(template)
  except ValueError as typed_error:
    flat = template.replace(extra=_flat(template.extra))
    if jax.tree.structure(flat) == jax.tree.structure(template):
      raise
    try:
      old = restore(flat)
    except ValueError:
      raise typed_error from None
    return old.replace(extra=_typed(template.extra, old.extra))


def _is_state(x) -> bool:
  return isinstance(x, tuple) and hasattr(x, "_fields")


def _flat(extra: Any) -> Any:
  """A typed defence state as format 1 held it: one dict, a wrapped defence's fields merged."""
  if not _is_state(extra):
    return extra
  flat = {}
  for field, value in extra._asdict().items():
    flat |= _flat(value) if field == "inner" else {field: value}
  return flat


def _typed(like: Any, flat: dict) -> Any:
  """Format 1's flat dict as the typed state `like` (a field it never held, such as an empty
  `dense`, as in `like`)."""
  if not _is_state(like):
    return {key: flat[key] for key in like}
  return type(like)(**{field: _typed(value, flat) if field == "inner" else flat.get(field, value)
                       for field, value in like._asdict().items()})


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__
