"""One Orbax CheckpointManager per trial, under DIR/<trial>/checkpoints/.

The run keeps its trials stacked on a leading axis; on disk each trial is its own checkpoint
(its slice of the state, plus JSON metadata: input position, phase, and what the method adds),
so one configuration of a sweep can be inspected, restored or audited on its own.
"""

from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


class TrialCheckpoints:
  """Saves and restores a trial stack as per-trial checkpoints that move in lockstep."""

  def __init__(self, workdir: str | Path, trial_names: Sequence[str], max_to_keep: int = 2):
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    self.names = list(trial_names)
    self.managers = [
        ocp.CheckpointManager(Path(workdir).absolute() / name / "checkpoints", options=options,
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
    trials = [m.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(template))
                        ).state for m in self.managers]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *trials)
    return jax.device_put(stacked, sharding) if sharding is not None else stacked

  def meta(self, step: int) -> list[dict]:
    return [m.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
            for m in self.managers]

  def wait(self) -> None:
    for m in self.managers:
      m.wait_until_finished()

  def close(self) -> None:
    for m in self.managers:
      m.close()
