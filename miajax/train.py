"""The whole run, top to bottom: inputs, mesh, trial stacks, phases, checkpoints, evaluation.

`train_and_evaluate(config, workdir)` trains every trial of the config, one stack per method,
resuming each stack from its latest checkpoints, and writes results.json/results.csv.
"""

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from miajax import audits
from miajax import checkpoint as checkpoint_lib
from miajax import config as config_lib
from miajax import defences
from miajax import evaluate
from miajax import lira
from miajax import logs as logs_lib
from miajax import models
from miajax import progress as progress_lib
from miajax import pruning
from miajax import results
from miajax import selection
from miajax import splits as splits_lib
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
  _check_workdir(workdir)
  workdir = Path(workdir)
  config_lib.validate(config)
  data = pipeline.load(config)
  if data.synthetic:
    config = config_lib.with_synthetic(config)   # recorded in config.json, checked on resume
  split = splits_lib.make(config.seed, data.num_examples("train"), data.num_examples("test"),
                          config.data.train_size)
  trials = trials_lib.make(config)
  for t in trials:
    config_lib.validate(trials_lib.config_for(config, t))
  # One membership split for the run, or one per trial drawn from (seed, trial seed), so that
  # the spread over seeds covers the split's sampling too.
  trial_splits = {t.name: splits_lib.make(
      (config.seed, t.seed), data.num_examples("train"), data.num_examples("test"),
      config.data.train_size) if config.split_per_trial else split for t in trials}
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
  config_json = json.loads(config.to_json_best_effort())
  _check_same_run(workdir, config_json)
  for t in trials:                  # checked before anything is written
    saved = workdir / t.name / "splits.npz"
    if saved.exists() and not splits_lib.Splits.load(saved).same_as(trial_splits[t.name]):
      raise UserError(f"--workdir={workdir}: {saved} holds membership splits this version "
                      "of miajax draws differently; allowed: a new --workdir")

  # ---------------------------------------------------------------- workdir
  # Files are written by the first host only; Orbax coordinates the checkpoints of all hosts.
  if _is_writer():
    try:
      workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise UserError(f"--workdir={workdir} cannot be created ({e.strerror}); allowed: a new "
                      "or existing directory you can write") from None
    _write_once(workdir / "config.json", config_json)
    for t in trials:
      (workdir / t.name).mkdir(exist_ok=True)
      own = json.loads(trials_lib.config_for(config, t).to_json_best_effort())
      _write_once(workdir / t.name / "config.json", own | {"trial": {
          "name": t.name, "method": t.method, "seed": t.seed, "sweep": dict(t.values)}})
      if not (workdir / t.name / "splits.npz").exists():
        trial_splits[t.name].save(workdir / t.name / "splits.npz")
    if lira_keep is not None and not (workdir / "lira_keep.npz").exists():
      np.savez(workdir / "lira_keep.npz", pool=split.train, keep=lira_keep)

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
    for method, group in stacks.items():
      records = _run_stack(config, workdir, method, group, data, split, trial_splits, strategy,
                           steps_per_epoch, done, lira_keep, stop, progress)
      done.update({r["name"]: r for r in records})
      if _is_writer():
        results.write(workdir, [done[t.name] for t in trials if t.name in done])
      if stop:
        raise Interrupted(f"interrupted after {method} finished; rerun the same command to "
                          "resume", 128 + stop[0])

  final = [done[t.name] for t in trials]
  choice = selection.choose(final, config.select.max_accuracy_drop, config.select.folds)
  if _is_writer():
    print(results.table(final), flush=True)
    if choice is not None:
      selection.write(workdir, choice)
      print("\n" + selection.table(choice), flush=True)
    print(f"\nresults: {(workdir / 'results.json').absolute()} (and results.csv); tables and "
          f"figures: python -m miajax.report {workdir}", flush=True)
  return final


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


def _is_writer() -> bool:
  return jax.process_index() == 0


def _run_stack(config, workdir, method, group, data, split, trial_splits, strategy,
               steps_per_epoch, done, lira_keep=None, stop=(), progress=None):
  t_setup = time.time()
  names = [t.name for t in group]
  model = models.create(config.model.name, data.num_classes, norm=config.model.norm)
  tx = steps.optimizer(config)
  own = [trial_splits[t.name] for t in group]
  members = [s.train for s in own] if lira_keep is None else [
      split.train[lira_keep[t.lira_model]] for t in group]
  # One recipe per trial, for its own hyperparameters and report (DP-SGD accounts with the
  # trial's own member count); the phases (and so the compiled steps) are the first one's,
  # which is right because swept values are all traced.
  defence = defences.get(method)
  recipes = [defence.recipe(trials_lib.config_for(config, t), model, tx, steps_per_epoch,
                            data.num_classes, len(m))
             for t, m in zip(group, members)]
  recipe = recipes[0]
  total = recipe.total_steps
  progress = progress or progress_lib.Progress(
      {method: progress_lib.Stack(len(group), tuple(p.steps for p in recipe.phases))})
  where = progress.label(method)
  if all(done.get(n, {}).get("step") == total for n in names):
    logging.info("%s all %s finished earlier; keeping their results", where,
                 _count(len(names), "trial"))
    progress.finished_earlier(method)
    return [done[n] for n in names]
  logging.info("%s", progress.setting_up(method))

  # ---------------------------------------------------------------- mesh
  mesh = _mesh(len(group), config.data.batch_size, strategy)
  state_sharding = NamedSharding(mesh, P("trial"))
  batch_sharding = NamedSharding(mesh, P("trial", "data"))
  max_batch = None
  if recipe.sampling == "poisson":
    # Poisson batches vary in size; the step is one program over a padded static size that
    # holds every draw of the run, split evenly over the "data" devices and the hosts.
    max_batch = pipeline.poisson_max_batch(
        members, trials_lib.seeds(group), config.data.batch_size, total,
        math.lcm(mesh.shape["data"], jax.process_count()))
    recipes = [dataclasses.replace(r, report=r.report | {r.max_batch_field: max_batch})
               for r in recipes]

  # ---------------------------------------------------------------- state
  init = functools.partial(steps.init, model=model, tx=tx, input_shape=data.input_shape,
                           extra_fn=recipe.extra)
  keys = jnp.stack([jax.random.PRNGKey(t.seed) for t in group])
  state = jax.jit(jax.vmap(init), out_shardings=state_sharding)(keys)
  hp = _stack_hp(recipes, state)
  ckpt = checkpoint_lib.TrialCheckpoints(workdir, names)
  start, restored = ckpt.restore_latest(state, state_sharding)
  if start:
    state = restored
    logging.info("%s resumed %s at step %d of %d", where, _count(len(group), "trial"), start,
                 total)
  progress.restored(method, start)
  logs = logs_lib.TrialLogs(workdir, names, start, writer=_is_writer())
  if defence.check is not None and start < total:
    defence.check(recipe, state, mesh, strategy, data)

  # ---------------------------------------------------------------- phases
  t0 = time.time()
  progress.was_set_up(method, t0 - t_setup)
  seeds = trials_lib.seeds(group)
  begin = 0
  for k, phase in enumerate(recipe.phases):
    end = begin + phase.steps
    if start < end:
      logging.info("%s", progress.compiling(method, k, phase.name, time.time()))
      if start == begin and phase.enter is not None:
        enter = steps.lift_update(lambda s, h: (phase.enter(s, h), {}), strategy)
        state = enter(state, hp)[0]
      side_sets = defence.side_sets(config, group, own, members, lira_keep is not None,
                                    recipe.attack_batches) if defence.side_sets else None
      if recipe.sampling == "poisson":
        batches = pipeline.poisson_batches(data, members, seeds, config.data.batch_size,
                                           start, end, max_batch, config.data.workers)
      else:
        batches = pipeline.train_batches(data, members, seeds, config.data.batch_size,
                                         start, end, config.data.workers, side_sets)
      try:
        state = _train_phase(config, logs, method, phase, names, state, hp, batches,
                             batch_sharding, ckpt, begin, start, end, total, strategy, stop,
                             progress)
      except BaseException:
        logs.close()
        raise
      start = end
    begin = end
  if ckpt.latest_step() != total:
    ckpt.save(total, state, _meta(names, method, "end", total, total, state))
  ckpt.wait()
  logs.close()

  # ---------------------------------------------------------------- evaluation
  t_audit = time.time()
  swept = any(t.values for t in group)
  logging.info("%s trained; auditing %s (%s; about %s)", where, _count(len(group), "trial"),
               audits.describe(config, audits.layout(config), swept),
               progress_lib.seconds(progress.audit_estimate(method)))
  eval_fn = steps.lift_eval(functools.partial(steps.eval_logits, model=model), strategy)
  eval_sharding = NamedSharding(mesh, P("data"))
  stack = evaluate.StackOutputs(
      lambda split, idx: evaluate.logits(state, data, split, idx, eval_fn, eval_sharding,
                                         config.data.eval_batch_size),
      data, splits=own, split_keys=[t.seed if config.split_per_trial else None for t in group],
      keep=None if lira_keep is None else lira_keep[:len(group)])
  audited = audits.audit_stack(stack, trials_lib.seeds(group), config, data.num_classes, swept)
  wall = time.time() - t0
  records = []
  for k, (t, result) in enumerate(zip(group, audited)):
    if _is_writer():
      for filename, arrays in result.files.items():
        np.savez(workdir / t.name / filename, **arrays)
    train_acc, test_acc = stack.accuracies(k)
    records.append(results.record(
        name=t.name, method=method, **data.record_fields, model=config.model.name,
        seed=t.seed, step=total, train_accuracy=train_acc, test_accuracy=test_acc,
        wall_seconds=wall, checkpoint_dir=str((workdir / t.name / "checkpoints").absolute()),
        versions=results.versions(), group=t.group, sweep=dict(t.values) or None,
        split_seed=[config.seed, t.seed] if config.split_per_trial else config.seed,
        **result.fields, **pruning.compression(_trial_params(state, k)), **recipes[k].report))
  ckpt.close()
  seconds = time.time() - t_audit
  progress.audited_in(method, seconds)
  if _is_writer():
    logs_lib.write_audit(workdir, records)
  logging.info("%s audited in %.0f s; run ETA %s", where, seconds, progress.eta())
  return records


def _train_phase(config, logs, method, phase, names, state, hp, batches, batch_sharding,
                 ckpt, begin, start, end, total, strategy, stop, progress):
  step_fn = steps.lift(phase.step, strategy)
  periodic = steps.lift_update(phase.periodic, strategy) if phase.periodic else None
  log_every, ckpt_every = config.train.log_every, config.train.checkpoint_every
  record_every = min(config.train.metrics_every, log_every)
  examples = len(names) * config.data.batch_size
  # XLA:CPU's in-process collectives deadlock with many multi-device programs in flight:
  # there, wait for the step before last (accelerators keep the queue unbounded).
  bounded = jax.default_backend() == "cpu" and jax.local_device_count() > 1
  where = progress.label(method)
  # The objective's terms beyond the cross-entropy, named for the log line.
  extra = "+".join(defences.get(method).added_terms(phase.name))
  residual = ""
  window, t_window = [], time.time()
  printed, t_printed = start, t_window
  for step in range(start, end):
    batch = pipeline.place(next(batches), batch_sharding.mesh)
    state, metrics = step_fn(state, batch, hp)
    if step == start:
      # The first step compiles: its time is the phase's compile, not its training rate.
      jax.block_until_ready(metrics)
      t_window = t_printed = time.time()
      logging.info("%s", progress.compiled(t_window))
    window.append(metrics)
    if bounded and len(window) > 2:
      jax.block_until_ready(window[-3])
    done = step + 1
    if periodic is not None and (done - begin) % phase.every == 0:
      state, update_metrics = periodic(state, hp)
      update_metrics = jax.device_get(update_metrics)
      logs.append(done, phase.name + "_update", update_metrics)
      residual = "  residual ||W - Z|| %.3g" % max(float(np.max(v))
                                                  for v in update_metrics.values())
    # Curves are recorded every record_every steps; a progress line printed every log_every.
    if done % record_every == 0 or done == end:
      means = {k: np.mean(np.stack([np.asarray(m[k]) for m in window]), 0)
               for k in window[0]}          # per trial, over the window
      _check_finite(means, names, done, phase.name)
      now = time.time()
      progress.trained(method, len(window), now - t_window)
      logs.append(done, phase.name, means,
                  {"examples_per_s": len(window) * examples / max(now - t_window, 1e-9)})
      window, t_window = [], now
      if done // log_every > printed // log_every or done == end:
        rate = (done - printed) * examples / max(now - t_printed, 1e-9)
        loss = float(means.get("cross_entropy", means["loss"]).mean())
        terms = f"  {extra} {float(means['loss'].mean()) - loss:.4g}" if extra else ""
        logging.info("%s %s step %d/%d  loss %.4f%s  acc %.3f%s  %.0f ex/s  ETA %s (run %s)",
                     where, phase.name, done, total, loss, terms,
                     float(means["accuracy"].mean()), residual, rate,
                     progress_lib.hms((total - done) * examples / rate), progress.eta())
        printed, t_printed = done, now
    preempted = (jax.process_count() > 1 and
                 multihost_utils.reached_preemption_sync_point(done))
    if done % ckpt_every == 0 or done == end or preempted:
      ckpt.save(done, state, _meta(names, method, phase.name, done, total, state))
    if preempted:
      ckpt.wait()
      raise Preempted(f"preempted at step {done} of {method}; checkpoint saved, rerun the "
                      "same command to resume")
    if stop and done < total:
      ckpt.wait()
      if ckpt.latest_step() != done:
        ckpt.save(done, state, _meta(names, method, phase.name, done, total, state))
        ckpt.wait()
      ckpt.close()
      raise Interrupted(f"interrupted at step {done} of {method}; rerun the same command to "
                        "resume", 128 + stop[0])
  return state


class Preempted(Exception):
  """The cluster asked the run to stop (SIGTERM on a multi-host run); resumable."""


def _meta(names, method, phase, step, total, state):
  """Checkpoint metadata; the final checkpoint also carries the compression report."""
  meta = [{"trial": n, "method": method, "phase": phase, "step": step,
           "input_position": step} for n in names]
  if step == total:
    for k, m in enumerate(meta):
      m["compression"] = pruning.compression(_trial_params(state, k))
  return meta


def _trial_params(state, k):
  return jax.device_get(jax.tree.map(lambda x: x[k], state.params))


def _stack_hp(recipes, state):
  """Each trial's traced hyperparameters, stacked on the trial axis."""
  if recipes[0].hp is None:
    return {}
  params0 = jax.tree.map(lambda x: x[0], state.params)
  return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]),
                      *[r.hp(params0) for r in recipes])


def _mesh(num_trials: int, batch_size: int, strategy: str) -> jax.sharding.Mesh:
  """("trial", "data"): trials spread over devices when vmapped, the batch over the rest."""
  n = jax.device_count()
  trial = max(d for d in range(1, n + 1) if n % d == 0 and num_trials % d == 0)
  if strategy != "vmap":
    trial = 1
  data = n // trial
  if batch_size % data:
    raise UserError(f"data.batch_size={batch_size} does not split over {data} devices; "
                    f"allowed: a multiple of {data}")
  return jax.make_mesh((trial, data), ("trial", "data"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def _check_finite(means, names, step, phase):
  for key, values in means.items():
    bad = [n for n, v in zip(names, np.atleast_1d(values)) if not np.isfinite(v)]
    if bad:
      raise FloatingPointError(
          f"{key} is not finite at step {step} ({phase}) in trial {bad[0]}; lower "
          "optimizer.learning_rate or check the data")


def _count(n: int, noun: str) -> str:
  return f"{n} {noun}{'' if n == 1 else 's'}"


def _check_workdir(workdir: str | Path) -> None:
  if "://" in str(workdir):
    raise UserError(f"--workdir={workdir} is a remote URL; allowed: a local or mounted "
                    "directory (e.g. a bucket mounted with gcsfuse)")
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
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)
