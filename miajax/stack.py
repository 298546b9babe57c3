"""One stack: the trials of one method trained as one program, then audited together.

A `Stack` holds what its phases share: the trials and their recipes, the mesh and shardings,
the state and traced hyperparameters, checkpoints, logs and progress. `train_and_evaluate`
(train.py) sets up a `Run` and, per method, calls `run_stack`: set up (or resume), each phase
(`Stack.run_phase`), a final checkpoint, then every audit of the run (`Stack.audit`).
"""

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from miajax import audits
from miajax import checkpoint as checkpoint_lib
from miajax import defences
from miajax import evaluate
from miajax import logs as logs_lib
from miajax import models
from miajax import paths
from miajax import progress as progress_lib
from miajax import pruning
from miajax import results
from miajax import splits as splits_lib
from miajax import steps
from miajax import trials as trials_lib
from miajax.data import pipeline
from miajax.defences import defence as defence_lib
from miajax.errors import Interrupted, UserError


@dataclasses.dataclass(frozen=True)
class Run:
  """What every stack of a run shares."""
  config: Any
  workdir: Path
  data: pipeline.Data
  split: splits_lib.Splits                  # the run's split (a LiRA stack's pool)
  trial_splits: dict[str, splits_lib.Splits]
  strategy: str                             # "vmap" or "loop" (steps.lift)
  steps_per_epoch: int
  lira_keep: np.ndarray | None              # (models, pool) in a LiRA run
  stop: list                                # the signal that asked to stop, if any
  progress: progress_lib.Progress


# The batch of per-example gradient norms (audits/grad_norm.py).
GRAD_BATCH = 32


class Preempted(Exception):
  """The cluster asked the run to stop (SIGTERM on a multi-host run); resumable."""


def is_writer() -> bool:
  """Files are written by the first host only; Orbax coordinates the checkpoints of all."""
  return jax.process_index() == 0


def run_stack(run: Run, method: str, group: list, done: dict) -> list[dict]:
  """Trains (or resumes) one method's trials and audits them; their records."""
  t_setup = time.time()
  stack = Stack(run, method, group)
  if all(done.get(n, {}).get("step") == stack.total for n in stack.names):
    logging.info("%s all %s finished earlier; keeping their results", stack.where,
                 count(len(group), "trial"))
    run.progress.finished_earlier(method)
    return [done[n] for n in stack.names]
  logging.info("%s", run.progress.setting_up(method))
  stack.set_up()
  t0 = time.time()
  run.progress.was_set_up(method, t0 - t_setup)
  begin = 0
  for k, phase in enumerate(stack.recipe.phases):
    end = begin + phase.steps
    if stack.start < end:
      try:
        stack.run_phase(k, phase, begin, end)
      except BaseException:
        stack.logs.close()
        raise
    begin = end
  stack.finish()
  return stack.audit(wall=time.time() - t0)


class Stack:
  """The trials of one method, trained as one program (vmapped or looped over trials)."""

  def __init__(self, run: Run, method: str, group: list):
    config, data = run.config, run.data
    self.run, self.method, self.group = run, method, group
    self.names = [t.name for t in group]
    self.defence = defences.get(method)
    self.model_name = self.defence.model_name(config)   # a control may train its own model
    self.model = models.create(self.model_name, data.num_classes, norm=config.model.norm)
    self.tx = steps.optimizer(config)
    self.own = [run.trial_splits[t.name] for t in group]
    self.members = [s.train for s in self.own] if run.lira_keep is None else [
        run.split.train[run.lira_keep[t.lira_model]] for t in group]
    # One recipe per trial, for its own hyperparameters and report (DP-SGD accounts with the
    # trial's own member count); the phases (and so the compiled steps) are the first one's,
    # which is right because swept values are all traced.
    self.recipes = [self.defence.recipe(trials_lib.config_for(config, t), self.model, self.tx,
                                        run.steps_per_epoch, data.num_classes, len(m))
                    for t, m in zip(group, self.members)]
    self.recipe = self.recipes[0]
    self.total = self.recipe.total_steps
    self.where = run.progress.label(method)
    self.start = 0

  def set_up(self) -> None:
    """Mesh, initial state (or the newest checkpoint's), hyperparameters, logs, checks."""
    run, config, group = self.run, self.run.config, self.group
    self.mesh = make_mesh(len(group), config.data.batch_size, run.strategy)
    self.state_sharding = NamedSharding(self.mesh, P("trial"))
    self.batch_sharding = NamedSharding(self.mesh, P("trial", "data"))
    self.max_batch = None
    if self.recipe.sampling == "poisson":
      # Poisson batches vary in size; the step is one program over a padded static size that
      # holds every draw of the run, split evenly over the "data" devices and the hosts.
      self.max_batch = pipeline.poisson_max_batch(
          self.members, trials_lib.seeds(group), config.data.batch_size, self.total,
          math.lcm(self.mesh.shape["data"], jax.process_count()))
      self.recipes = [dataclasses.replace(r, report=r.report | {r.max_batch_field:
                                                                 self.max_batch})
                      for r in self.recipes]
    init = functools.partial(steps.init, model=self.model, tx=self.tx,
                             input_shape=run.data.input_shape, extra_fn=self.recipe.extra)
    keys = jnp.stack([jax.random.PRNGKey(t.seed) for t in group])
    variables = steps.init_variables(self.model, tuple(run.data.input_shape), keys)
    self.state = jax.jit(jax.vmap(lambda k, v: init(k, variables=v)),
                         out_shardings=self.state_sharding)(keys, variables)
    self.hp = jax.device_put(stack_hp(self.recipes, self.state), self.state_sharding)
    self.ckpt = checkpoint_lib.TrialCheckpoints(run.workdir, self.names)
    self.start, restored = self.ckpt.restore_latest(self.state, self.state_sharding)
    if self.start:
      self.state = restored
      logging.info("%s resumed %s at step %d of %d", self.where, count(len(group), "trial"),
                   self.start, self.total)
    run.progress.restored(self.method, self.start)
    self.logs = logs_lib.TrialLogs(run.workdir, self.names, self.start, writer=is_writer())
    if self.defence.check is not None and self.start < self.total:
      self.defence.check(self.recipe, self.state, self.mesh, run.strategy, run.data)

  def batches(self, start: int, end: int):
    """The training batches of steps start..end, a pure function of (seeds, step)."""
    run, config = self.run, self.run.config
    seeds = trials_lib.seeds(self.group)
    if self.recipe.sampling == "poisson":
      return pipeline.poisson_batches(run.data, self.members, seeds, config.data.batch_size,
                                      start, end, self.max_batch, config.data.workers)
    side_sets = self.defence.side_sets(
        config, self.group, self.own, self.members, run.lira_keep is not None,
        self.recipe.attack_batches) if self.defence.side_sets else None
    return pipeline.train_batches(run.data, self.members, seeds, config.data.batch_size,
                                  start, end, config.data.workers, side_sets)

  def run_phase(self, k: int, phase, begin: int, end: int) -> None:
    """Trains phase `k` (steps begin..end of the stack) from `self.start` on."""
    run, progress = self.run, self.run.progress
    logging.info("%s", progress.compiling(self.method, k, phase.name, time.time()))
    if self.start == begin and phase.enter is not None:
      enter = steps.lift_update(lambda s, h: (phase.enter(s, h), {}), run.strategy)
      self.state = enter(self.state, self.hp)[0]
    # The next batches are read and placed in the background while a step runs.
    batches = pipeline.prefetch(self.batches(self.start, end),
                                lambda b: pipeline.place(b, self.mesh))
    try:
      self._train(phase, begin, end, batches)
    finally:
      batches.close()
    self.start = end

  def _train(self, phase, begin: int, end: int, batches) -> None:
    run, progress = self.run, self.run.progress
    step_fn = steps.lift(phase.step, run.strategy)
    periodic = steps.lift_update(phase.periodic, run.strategy) if phase.periodic else None
    window = _Window(self, phase, end)
    # XLA:CPU's in-process collectives deadlock with many multi-device programs in flight:
    # there, wait for the step before last (accelerators keep the queue unbounded).
    bounded = jax.default_backend() == "cpu" and jax.local_device_count() > 1
    for step in range(self.start, end):
      batch = next(batches)
      self.state, metrics = step_fn(self.state, batch, self.hp)
      if step == self.start:
        # The first step compiles: its time is the phase's compile, not its training rate.
        jax.block_until_ready(metrics)
        window.restart()
        logging.info("%s", progress.compiled(window.t_window))
      window.add(metrics)
      if bounded and len(window.metrics) > 2:
        jax.block_until_ready(window.metrics[-3])
      done = step + 1
      if periodic is not None and (done - begin) % phase.every == 0:
        self.state, update_metrics = periodic(self.state, self.hp)
        window.periodic(done, jax.device_get(update_metrics))
      window.maybe_record(done)
      self._maybe_checkpoint(phase.name, done, end)

  def _maybe_checkpoint(self, phase: str, done: int, end: int) -> None:
    """Saves every checkpoint_every steps and at the phase's end; stops here when asked."""
    config, ckpt, stop = self.run.config, self.ckpt, self.run.stop
    preempted = (jax.process_count() > 1 and
                 multihost_utils.reached_preemption_sync_point(done))
    if done % config.train.checkpoint_every == 0 or done == end or preempted:
      ckpt.save(done, self.state, self.meta(phase, done))
      self.logs.flush()    # a gs:// workdir's curves, up to the step a resume starts from
    if preempted:
      ckpt.wait()
      raise Preempted(f"preempted at step {done} of {self.method}; checkpoint saved, rerun "
                      "the same command to resume")
    if stop and done < self.total:
      ckpt.wait()
      if ckpt.latest_step() != done:
        ckpt.save(done, self.state, self.meta(phase, done))
        ckpt.wait()
      ckpt.close()
      raise Interrupted(f"interrupted at step {done} of {self.method}; rerun the same command "
                        "to resume", 128 + stop[0])

  def finish(self) -> None:
    """The final checkpoint (with the compression report) written and waited for."""
    if self.ckpt.latest_step() != self.total:
      self.ckpt.save(self.total, self.state, self.meta("end", self.total))
    self.ckpt.wait()
    self.logs.close()

  def meta(self, phase: str, step: int) -> list[dict]:
    """Checkpoint metadata; the final checkpoint also carries the compression report."""
    meta = [{"trial": n, "method": self.method, "phase": phase, "step": step,
             "input_position": step} for n in self.names]
    if step == self.total:
      for k, m in enumerate(meta):
        m["compression"] = pruning.compression(self.trial_params(k))
    return meta

  def trial_params(self, k: int):
    return jax.device_get(jax.tree.map(lambda x: x[k], self.state.params))

  def audit(self, wall: float) -> list[dict]:
    """Every audit of the run on the trained stack (`audits.audit_stack`); one record per
    trial, its files written. `wall` is the stack's training time."""
    run, config, data, group = self.run, self.run.config, self.run.data, self.group
    t_audit = time.time()
    swept = any(t.values for t in group)
    logging.info("%s trained; auditing %s (%s; about %s)", self.where,
                 count(len(group), "trial"), audits.describe(config, audits.layout(config),
                                                             swept),
                 progress_lib.seconds(run.progress.audit_estimate(self.method)))
    eval_fn = steps.lift_eval(functools.partial(steps.eval_logits, model=self.model),
                              run.strategy)
    eval_sharding = NamedSharding(self.mesh, P("data"))
    grad_fn = steps.lift_eval(functools.partial(steps.example_grad_norms, model=self.model),
                              run.strategy)
    outputs = evaluate.StackOutputs(
        lambda split, idx: evaluate.logits(self.state, data, split, idx, eval_fn,
                                           eval_sharding, config.data.eval_batch_size),
        data, splits=self.own,
        # Per-example gradients hold a copy of the weights per example: small batches.
        grad_norms=lambda split, idx: evaluate.logits(
            self.state, data, split, idx, grad_fn, eval_sharding,
            math.lcm(GRAD_BATCH, jax.process_count()), with_labels=True),
        per_example=lambda fn, batch: functools.partial(
            evaluate.logits, self.state, data, eval_fn=steps.lift_eval(
                functools.partial(fn, model=self.model), run.strategy),
            sharding=eval_sharding, batch_size=math.lcm(batch, jax.process_count()),
            with_labels=True),
        extra_keys=defence_lib.state_fields(self.state.extra),
        split_keys=[t.seed if config.split_per_trial else None for t in group],
        keep=None if run.lira_keep is None else run.lira_keep[:len(group)])
    audited = audits.audit_stack(outputs, trials_lib.seeds(group), config, data.num_classes,
                                 swept)
    records = []
    for k, (t, result) in enumerate(zip(group, audited)):
      if is_writer():
        for filename, arrays in result.files.items():
          paths.savez(run.workdir / t.name / filename, **arrays)
      train_acc, test_acc = outputs.accuracies(k)
      records.append(results.record(
          name=t.name, method=self.method, **data.record_fields, model=self.model_name,
          seed=t.seed, step=self.total, train_accuracy=train_acc, test_accuracy=test_acc,
          wall_seconds=wall,
          checkpoint_dir=str(paths.absolute(run.workdir / t.name / "checkpoints")),
          versions=results.versions(), group=t.group, sweep=dict(t.values) or None,
          split_seed=[config.seed, t.seed] if config.split_per_trial else config.seed,
          **result.fields, **pruning.compression(self.trial_params(k)),
          **self.recipes[k].report))
    self.ckpt.close()
    seconds = time.time() - t_audit
    run.progress.audited_in(self.method, seconds)
    if is_writer():
      logs_lib.write_audit(run.workdir, records)
    logging.info("%s audited in %.0f s; run ETA %s", self.where, seconds,
                 run.progress.eta())
    return records


class _Window:
  """A phase's metrics since the last record: curves every metrics_every steps, a progress
  line every log_every, the rate and ETA measured over the window."""

  def __init__(self, stack: Stack, phase, end: int):
    config = stack.run.config
    self.stack, self.phase, self.end = stack, phase, end
    self.log_every = config.train.log_every
    self.record_every = min(config.train.metrics_every, self.log_every)
    self.examples = len(stack.names) * config.data.batch_size   # per step, all trials
    # The objective's terms beyond the cross-entropy, named for the progress line.
    self.extra = "+".join(stack.defence.added_terms(phase.name))
    self.residual = ""
    self.metrics: list = []
    self.restart()
    self.printed = stack.start

  def restart(self) -> None:
    self.t_window = self.t_printed = time.time()

  def add(self, metrics) -> None:
    self.metrics.append(metrics)

  def periodic(self, done: int, update_metrics: dict) -> None:
    """A periodic update's metrics (ADMM's residuals), logged and shown on the next line."""
    self.stack.logs.append(done, self.phase.name + "_update", update_metrics)
    self.residual = "  residual ||W - Z|| %.3g" % max(float(np.max(v))
                                                     for v in update_metrics.values())

  def maybe_record(self, done: int) -> None:
    if not (done % self.record_every == 0 or done == self.end):
      return
    stack, name = self.stack, self.phase.name
    means = {k: np.mean(np.stack([np.asarray(m[k]) for m in self.metrics]), 0)
             for k in self.metrics[0]}          # per trial, over the window
    check_finite(means, stack.names, done, name)
    now = time.time()
    stack.run.progress.trained(stack.method, len(self.metrics), now - self.t_window)
    stack.logs.append(done, name, means, {
        "examples_per_s": len(self.metrics) * self.examples / max(now - self.t_window, 1e-9)})
    self.metrics, self.t_window = [], now
    if done // self.log_every > self.printed // self.log_every or done == self.end:
      rate = (done - self.printed) * self.examples / max(now - self.t_printed, 1e-9)
      loss = float(means.get("cross_entropy", means["loss"]).mean())
      terms = (f"  {self.extra} {float(means['loss'].mean()) - loss:.4g}" if self.extra
               else "")
      logging.info("%s %s step %d/%d  loss %.4f%s  acc %.3f%s  %.0f ex/s  ETA %s (run %s)",
                   stack.where, name, done, stack.total, loss, terms,
                   float(means["accuracy"].mean()), self.residual, rate,
                   progress_lib.hms((stack.total - done) * self.examples / rate),
                   stack.run.progress.eta())
      self.printed, self.t_printed = done, now


def stack_hp(recipes, state) -> dict:
  """Each trial's traced hyperparameters, stacked on the trial axis."""
  if recipes[0].hp is None:
    return {}
  params0 = jax.tree.map(lambda x: x[0], state.params)
  return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]),
                      *[r.hp(params0) for r in recipes])


def make_mesh(num_trials: int, batch_size: int, strategy: str) -> jax.sharding.Mesh:
  """("trial", "data"): trials spread over devices when vmapped, the batch over the rest; for
  "devices", trials over as many of this process's devices as divide them evenly, "data" 1."""
  n = jax.device_count()
  trial = max(d for d in range(1, n + 1) if n % d == 0 and num_trials % d == 0)
  if strategy == "devices":
    if jax.process_count() > 1:
      raise UserError(f"train.strategy=devices runs in one process, not "
                      f"{jax.process_count()}; allowed: loop or vmap")
    local = jax.local_device_count()
    trial = max(d for d in range(1, local + 1) if num_trials % d == 0)
    return jax.make_mesh((trial, 1), ("trial", "data"), devices=jax.devices()[:trial],
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
  if strategy != "vmap":
    trial = 1
  data = n // trial
  if batch_size % data:
    raise UserError(f"data.batch_size={batch_size} does not split over {data} devices; "
                    f"allowed: a multiple of {data}")
  return jax.make_mesh((trial, data), ("trial", "data"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def check_finite(means, names, step, phase) -> None:
  for key, values in means.items():
    bad = [n for n, v in zip(names, np.atleast_1d(values)) if not np.isfinite(v)]
    if bad:
      raise FloatingPointError(
          f"{key} is not finite at step {step} ({phase}) in trial {bad[0]}; lower "
          "optimizer.learning_rate or check the data")


def count(n: int, noun: str) -> str:
  return f"{n} {noun}{'' if n == 1 else 's'}"
