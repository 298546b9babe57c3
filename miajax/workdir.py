"""What a workdir holds, read without changing it: its trials, records and checkpoints.

The one reader of a run's files for the commands that read them (inspect, export, report,
audit): a DIR argument resolved to a workdir or a trial (`resolve`), results.json
(`load_records`), and Orbax checkpoints restored read-only as NumPy arrays without a template
(`checkpoint_steps`, `restore`): shapes and dtypes come from Orbax's metadata, so any trial can
be read without knowing its model or the devices it was saved from.
"""

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from absl import logging

from miajax import paths
from miajax.errors import UserError

ALLOWED = ("allowed: a --workdir of python -m miajax.main (holding results.json or trial "
           "directories) or one trial directory (holding checkpoints/)")


@dataclasses.dataclass(frozen=True)
class Target:
  """What a DIR argument names: a workdir and its trials, or a single trial."""
  path: Path
  kind: str                       # "workdir" or "trial"
  workdir: Path | None            # the workdir holding results.json (None when unknown)
  trial_dirs: dict[str, Path]     # trial name -> directory, in display order


def read_json(path: Path) -> Any:
  """A JSON file's contents; a malformed file is a UserError naming it."""
  try:
    return json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f"{path} is not readable JSON ({e}); allowed: the file as "
                    "python -m miajax.main writes it") from None


def trial_config(path: Path) -> dict | None:
  """A trial's config.json "trial" entry, or None when there is none."""
  config = path / "config.json"
  if not config.is_file():
    return None
  try:
    trial = json.loads(config.read_text()).get("trial")
  except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
    return None
  return trial if isinstance(trial, dict) else None


def is_trial_dir(path: Path) -> bool:
  return path.is_dir() and ((path / "checkpoints").is_dir() or trial_config(path) is not None)


def load_records(workdir: Path) -> list[dict]:
  """results.json's records ([] when absent); a malformed file is a UserError."""
  path = workdir / "results.json"
  if not path.exists():
    return []
  records = read_json(path)
  if not isinstance(records, list) or not all(
      isinstance(r, dict) and isinstance(r.get("name"), str) for r in records):
    raise UserError(f"{path} is not a list of result records with a name each; allowed: "
                    "results.json as python -m miajax.main writes it")
  return records


def resolve(path: str | Path) -> Target:
  """Classifies DIR as a workdir or a trial directory; anything else is a UserError."""
  path = paths.of(path)
  if not path.exists():
    raise UserError(f"{path} does not exist; {ALLOWED}")
  if not path.is_dir():
    raise UserError(f"{path} is a file, not a directory; {ALLOWED}")
  if is_trial_dir(path):
    parent = path.parent
    workdir = parent if (parent / "results.json").is_file() else None
    return Target(path, "trial", workdir, {path.name: path})
  children = sorted(p for p in path.iterdir() if is_trial_dir(p))
  if not children and not (path / "results.json").is_file():
    raise UserError(f"{path} is neither a workdir nor a trial directory (no results.json, "
                    f"no trial directories, no checkpoints/); {ALLOWED}")
  # results.json's order first (the run's order), then what is on disk only.
  order = [r["name"] for r in load_records(path)]
  dirs = {p.name: p for p in children}
  names = list(dict.fromkeys([n for n in order if n in dirs] + sorted(dirs)))
  return Target(path, "workdir", path, {n: dirs[n] for n in names})


# ---------------------------------------------------------------- checkpoints


def quiet_orbax() -> None:
  """Keeps absl logging to errors: read-only managers log warnings that they are read-only."""
  logging.set_verbosity(logging.ERROR)


def open_manager(checkpoint_dir: Path):
  """A read-only Orbax CheckpointManager that knows the handlers of "state" and "meta"."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  options = ocp.CheckpointManagerOptions(read_only=True, create=False)
  return ocp.CheckpointManager(
      paths.absolute(checkpoint_dir), options=options,
      item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                     "meta": ocp.JsonCheckpointHandler()})


def checkpoint_steps(checkpoint_dir: Path) -> list[int]:
  if not checkpoint_dir.is_dir():
    return []
  manager = open_manager(checkpoint_dir)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def restore(checkpoint_dir: Path, step: int, collections: tuple[str, ...] = ("params",)
            ) -> tuple[dict, dict[str, Any]]:
  """(meta, {collection: tree of NumPy arrays}) of one checkpoint.

  No template is needed: the tree structure, shapes and dtypes come from the checkpoint's
  metadata, and every leaf is restored as np.ndarray (so the devices and sharding it was saved
  with do not matter). Only the `collections` of the state are read, less any that are empty
  (batch_stats of a model without BatchNorm); a state without a params subtree is read whole
  as "params".
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  # Before reading: a failed read's leftovers may be reported while the error still unwinds.
  _ignore_closed_loop_callbacks()
  manager = open_manager(checkpoint_dir)
  try:
    tree = manager.item_metadata(step)["state"].tree
    whole = not (isinstance(tree, dict) and "params" in tree)
    sub = tree if whole else {k: tree[k] for k in collections
                              if k in tree and jax.tree.leaves(tree[k])}
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), sub)
    item = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), sub)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item=item, restore_args=as_numpy,
                                     partial_restore=not whole),
        meta=ocp.args.JsonRestore()))
  finally:
    manager.close()
  state = restored.state
  return dict(restored.meta or {}), {"params": state} if whole else dict(state)


def has_params(checkpoint_dir: Path, step: int) -> bool:
  """Whether the checkpoint's state has a params subtree (as python -m miajax.main saves)."""
  manager = open_manager(checkpoint_dir)
  try:
    tree = manager.item_metadata(step)["state"].tree
  finally:
    manager.close()
  return isinstance(tree, dict) and "params" in tree


def _ignore_closed_loop_callbacks() -> None:
  """Drops the "Event loop is closed" errors a failed read leaves behind (once per process).

  When an Orbax read fails, TensorStore reads still in flight complete after Orbax's event loop
  has closed; each completion's callback then fails and is reported as an unraisable exception
  (a bare traceback, at some later garbage collection or at exit). The read's own error has
  been reported by then, so these say nothing: this hook drops exactly them, nothing else.
  """
  previous = sys.unraisablehook
  if getattr(previous, "_drops_closed_loop", False):
    return

  def hook(unraisable):
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
      return
    previous(unraisable)

  hook._drops_closed_loop = True
  sys.unraisablehook = hook
