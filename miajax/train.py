"""The whole run, top to bottom: inputs checked, the workdir, each method's stack, the choice.

`train_and_evaluate(config, workdir)` trains every trial of the config, one stack per method
(`stack.run_stack`), resuming each stack from its latest checkpoints, and writes
results.json/results.csv, then Algorithm 1's choice (`selection`) where the run sweeps.
"""

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

import jax
import numpy as np
from absl import logging

from miajax import canaries
from miajax import config as config_lib
from miajax import defences
from miajax import lira
from miajax import paths
from miajax import progress as progress_lib
from miajax import results
from miajax import selection
from miajax import splits as splits_lib
from miajax import stack as stack_lib
from miajax import steps
from miajax import trials as trials_lib
from miajax.data import pipeline
from miajax.errors import Interrupted, UserError

# Keys that change how a run is watched or executed, not what it computes: a resumed run may
# change them.
_RESUMABLE_CHANGES = ("train.log_every", "train.metrics_every", "train.checkpoint_every",
                      "train.strategy",
                      "data.workers", "data.dir", "data.manual_dir")


def train_and_evaluate(config, workdir: str | Path) -> list[dict]:
  # ---------------------------------------------------------------- inputs
  # Everything a user can get wrong is checked before the workdir is touched.
  check_workdir(workdir)
  workdir = paths.of(workdir)
  config_lib.validate(config)
  trials = trials_lib.make(config)
  for t in trials:
    config_lib.validate(trials_lib.config_for(config, t))
  data = pipeline.load(config)     # may build the dataset: only once the config is sound
  if data.synthetic:
    config = config_lib.with_synthetic(config)   # recorded in config.json, checked on resume
  split = splits_lib.make(config.seed, data.num_examples("train"), data.num_examples("test"),
                          config.data.train_size)
  # One membership split for the run, or one per trial drawn from (seed, trial seed), so that
  # the spread over seeds covers the split's sampling too.
  trial_splits = {t.name: splits_lib.make(
      (config.seed, t.seed), data.num_examples("train"), data.num_examples("test"),
      config.data.train_size) if config.split_per_trial else split for t in trials}
  # Canary rows appended to the train split, the members among them added to every `train`.
  data, split, trial_splits = canaries.insert(config, data, split, trial_splits)
  lira_keep, steps_per_epoch = _lira_keep_and_steps(config, trials, split)
  config_json = json.loads(config.to_json_best_effort())
  _check_same_run(workdir, config_json)
  for t in trials:                  # checked before anything is written
    saved = workdir / t.name / "splits.npz"
    if saved.exists() and not splits_lib.Splits.load(saved).same_as(trial_splits[t.name]):
      raise UserError(f"--workdir={workdir}: {saved} holds membership splits this version "
                      "of miajax draws differently; allowed: a new --workdir")

  # ---------------------------------------------------------------- workdir
  _write_workdir(workdir, config, config_json, trials, trial_splits, split, lira_keep)

  # ---------------------------------------------------------------- trial stacks
  strategy = config.train.strategy
  if strategy == "auto":
    strategy = steps.default_strategy()
  done = {r["name"]: r for r in results.load(workdir)}
  stacks = trials_lib.groups(trials)
  progress = progress_lib.Progress({m: progress_lib.Stack(
      len(g), defences.get(m).phase_steps(config, steps_per_epoch),
      defences.get(m).phase_costs(config)) for m, g in stacks.items()})
  with _stop_on_signals() as stop:
    run = stack_lib.Run(config, workdir, data, split, trial_splits, strategy, steps_per_epoch,
                        lira_keep, stop, progress)
    for method, group in stacks.items():
      records = stack_lib.run_stack(run, method, group, done)
      done.update({r["name"]: r for r in records})
      if stack_lib.is_writer():
        results.write(workdir, [done[t.name] for t in trials if t.name in done])
      if stop:
        raise Interrupted(f"interrupted after {method} finished; rerun the same command to "
                          "resume", 128 + stop[0])

  final = [done[t.name] for t in trials]
  _conclude(workdir, config, final)
  return final


def _lira_keep_and_steps(config, trials, split) -> tuple[np.ndarray | None, int]:
  """A LiRA run's keep masks (None otherwise) and the steps per epoch, every method checked to
  train at least one step."""
  batch_size = config.data.batch_size
  if len(split.train) < batch_size:
    raise UserError(f"data.batch_size={batch_size} is larger than the {len(split.train)} "
                    "members; allowed: at most the number of training examples")
  lira_keep = None
  if config.lira.num_shadows:
    # Every model of a LiRA stack trains on exactly half of the members (the pool), the
    # shadows in complementary pairs (see lira.keep_masks).
    lira_keep = np.asarray(lira.keep_masks(jax.random.PRNGKey(config.seed),
                                           config.lira.num_shadows + 1, len(split.train)))
  steps_per_epoch = len(split.train) // (2 if lira_keep is not None else 1) // batch_size
  if steps_per_epoch == 0:
    raise UserError(f"data.batch_size={batch_size} is larger than a LiRA model's half of the "
                    f"{len(split.train)} members; allowed: a smaller batch size")
  for method in trials_lib.groups(trials):
    defence = defences.get(method)
    if sum(defence.phase_steps(config, steps_per_epoch)) == 0:
      fields = " + ".join(field for _, field in defence.phases)
      raise UserError(f"{fields}: {method} would train 0 steps ({steps_per_epoch} steps per "
                      "epoch); allowed: epochs giving at least one step")
  return lira_keep, steps_per_epoch


def _write_workdir(workdir, config, config_json, trials, trial_splits, split, lira_keep):
  """The run's and each trial's config.json, splits.npz and LiRA keep masks, written once.

  Files are written by the first host only; Orbax coordinates the checkpoints of all hosts."""
  if stack_lib.is_writer():
    try:
      paths.mkdir(workdir)
    except OSError as e:
      raise UserError(f"--workdir={workdir} cannot be created ({e.strerror}); allowed: a new "
                      "or existing directory you can write") from None
    _write_once(workdir / "config.json", config_json)
    for t in trials:
      paths.mkdir(workdir / t.name)
      own = json.loads(trials_lib.config_for(config, t).to_json_best_effort())
      _write_once(workdir / t.name / "config.json", own | {"trial": {
          "name": t.name, "method": t.method, "seed": t.seed, "sweep": dict(t.values)}})
      if not (workdir / t.name / "splits.npz").exists():
        trial_splits[t.name].save(workdir / t.name / "splits.npz")
    if lira_keep is not None and not (workdir / "lira_keep.npz").exists():
      paths.savez(workdir / "lira_keep.npz", pool=split.train, keep=lira_keep)


def _conclude(workdir, config, final) -> None:
  """Algorithm 1's choice where the run sweeps, and the printed table and choice."""
  choice = selection.choose(final, config.select.max_accuracy_drop, config.select.folds)
  if stack_lib.is_writer():
    print(results.table(final), flush=True)
    if choice is not None:
      selection.write(workdir, choice)
      print("\n" + selection.table(choice), flush=True)
    print(f"\nresults: {paths.absolute(workdir / 'results.json')} (and results.csv); tables and "
          f"figures: python -m miajax.report {workdir}", flush=True)


@contextlib.contextmanager
def _stop_on_signals():
  """SIGINT and SIGTERM ask the run to stop at the next step, after saving a checkpoint;
  a second signal stops it at once. The yielded list holds the signal received, if any.

  Single-process runs only: a multi-host run stops at JAX's preemption sync point instead.
  """
  received: list[int] = []
  if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
    yield received
    return

  def handler(signum, frame):
    del frame
    if received:
      print(f"stopped at once by a second {signal.Signals(signum).name}; a rerun resumes from "
            "the last checkpoint", file=sys.stderr, flush=True)
      os._exit(128 + signum)  # pylint: disable=protected-access
    received.append(signum)
    logging.warning("%s received: stopping after a checkpoint at the next step (again to "
                    "stop at once)", signal.Signals(signum).name)

  previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield received
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def check_workdir(workdir: str | Path) -> None:
  """A workdir that can be written, or a one-line UserError: a local directory, or a gs://
  URL in a bucket that exists and takes an object (asked of the bucket itself)."""
  if "://" in str(workdir) and not paths.is_remote(workdir):
    raise UserError(f"--workdir={workdir} is a URL miajax cannot write; {paths.ALLOWED}")
  if paths.is_remote(workdir):
    # Every process checks: each writes its own checkpoint shards there.
    paths.check_writable(workdir, f"--workdir={workdir}")
    return
  probe = workdir = Path(workdir)
  while not probe.exists():
    probe = probe.parent
  if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
    raise UserError(f"--workdir={workdir} is not writable ({probe} is not a writable "
                    "directory); allowed: a new or existing directory you can write")
  if probe != workdir:
    # Permission bits do not tell (root may write anywhere, yet not under /proc): try it,
    # in a scratch directory removed at once, before the data is loaded.
    try:
      os.rmdir(tempfile.mkdtemp(prefix=".miajax-probe-", dir=probe))
    except OSError as e:
      raise UserError(f"--workdir={workdir} cannot be created ({e.strerror}); allowed: a new "
                      "or existing directory you can write") from None


def _check_same_run(workdir: Path, config_json: dict) -> None:
  """Resuming is only allowed for the same computation."""
  path = workdir / "config.json"
  if not path.exists():
    return
  old = results.flatten(json.loads(path.read_text()))
  new = results.flatten(config_json)
  # A key added to the config since that run started, at its default, changes nothing.
  defaults = results.flatten(json.loads(config_lib.base().to_json_best_effort()))
  old |= {k: v for k, v in new.items() if k not in old and k in defaults and v == defaults[k]}
  changed = sorted(k for k in old.keys() | new.keys()
                   if old.get(k) != new.get(k) and k not in _RESUMABLE_CHANGES)
  if changed:
    k = changed[0]
    raise UserError(f"--workdir={workdir} holds a run of {_started_with(workdir)} with "
                    f"{k}={old.get(k)!r}, not {new.get(k)!r}; allowed: pass --workdir=DIR "
                    "for a new run, or the same config to resume")


def _started_with(workdir: Path) -> str:
  """The config file (PATH[:ARG]) the run in `workdir` was started with, as python -m
  miajax.main records it in command.json; runs started otherwise or before that have none."""
  try:
    return str(json.loads((workdir / "command.json").read_text())["config"])
  except (OSError, ValueError, TypeError, KeyError):
    return "an unrecorded config"


def _write_once(path: Path, obj) -> None:
  if not path.exists():
    paths.write_text(path, json.dumps(obj, indent=1))
