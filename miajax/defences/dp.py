"""DP-SGD: one phase on Poisson-sampled batches, per-example clipping, Gaussian noise.

The noise multiplier is calibrated per trial to its `dp.epsilon` (with the trial's own member
count) and traced, so trials swept over epsilon share one compiled step. Before training on
several devices, the per-example gradients are checked against one device's.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from miajax import dp as dp_lib
from miajax import models
from miajax import steps
from miajax.defences.defence import Defence, Phase, Recipe
from miajax.errors import UserError, finite_positive

SECTIONS = {
    "dp": {
        "epsilon": 6.28,       # the paper's MNIST setting
        "delta": 1e-5,
        "clip_norm": 1.0,
    },
}


def _validate(c, need, used):
  need(finite_positive(c.dp.epsilon), "dp.epsilon", "a finite number > 0")
  need(0 < c.dp.delta < 1, "dp.delta", "a number in (0, 1)")
  need(finite_positive(c.dp.clip_norm), "dp.clip_norm", "a finite number > 0")
  if used and models.normalisation(c.model.name, c.model.norm) == "batch":
    raise UserError("model.norm='batch' cannot train with DP-SGD (batch statistics mix "
                    "examples); allowed with methods including dp: model.norm=group or none")


def _build(config, phase_steps, model, tx, num_classes, num_members):
  del num_classes
  total, = phase_steps
  sample_rate = config.data.batch_size / num_members
  sigma = dp_lib.calibrate_noise_multiplier(config.dp.epsilon, config.dp.delta, sample_rate,
                                            max(total, 1))
  report = {"dp_epsilon": dp_lib.epsilon(sigma, sample_rate, total, config.dp.delta),
            "dp_delta": config.dp.delta, "dp_noise_multiplier": sigma,
            "dp_sampling": "poisson",
            "dp_model_norm": models.normalisation(config.model.name, config.model.norm)}
  example_loss = functools.partial(_example_loss, model=model)
  # Poisson batches of expected size sample_rate * num_members = data.batch_size.
  step = functools.partial(_dp_step, model=model, tx=tx, example_loss=example_loss,
                           clip_norm=config.dp.clip_norm,
                           expected_batch=config.data.batch_size)
  # The noise is traced, so trials swept over epsilon share one compiled step.
  return Recipe([Phase("train", total, step)], hp=lambda params: {
      "noise_multiplier": jnp.float32(sigma)}, report=report, example_loss=example_loss,
      sampling="poisson", max_batch_field="dp_max_batch")


def _check(recipe, state, mesh, strategy, data):
  if mesh.devices.size > 1:
    check_per_example_grads(recipe.example_loss, state, mesh, strategy, data)


def _step_cost(config, phase):
  """Per-example gradients cost about 3 plain steps (LeNet-5 on 2 CPU cores), on a batch padded
  to the run's largest Poisson draw, about 3 standard deviations above the expected size."""
  del phase
  return 3.0 * (1 + 3 / math.sqrt(config.data.batch_size))


DEFENCE = Defence(
    name="dp", build=_build, sections=SECTIONS, sweeps={"epsilon": ("dp.epsilon", "eps")},
    validate=_validate, traced=("noise_multiplier",), check=_check,
    report_fields=("dp_epsilon", "dp_delta", "dp_noise_multiplier", "dp_sampling",
                   "dp_model_norm", "dp_max_batch"), step_cost=_step_cost)


def _example_loss(params, example, *, model):
  """The loss of ONE example (no batch axis), the unit DP-SGD clips."""
  logits, _ = steps.forward(model, params, {}, example["image"][None], train=True)
  return steps.cross_entropy(logits, example["label"][None])


def _dp_step(state, batch, hp, *, model, tx, example_loss, clip_norm, expected_batch):
  """Per-example gradients clipped to clip_norm, the rows of batch["mask"] summed (padding
  dropped), Gaussian noise of hp's multiplier, divided by the EXPECTED batch size of Poisson
  sampling, a constant (dividing by the realised size would leak it). Loss and accuracy are
  over the sampled rows. Models need no BatchNorm here (model.norm=group or none): batch
  statistics mix examples."""
  noise_key = jax.random.fold_in(state.key, 1)
  examples = {"image": batch["image"], "label": batch["label"]}
  mask = batch.get("mask", jnp.ones(batch["label"].shape, bool))
  grads, metrics = dp_lib.dp_grad(example_loss, state.params, examples, noise_key,
                                  clip_norm=clip_norm, noise_multiplier=hp["noise_multiplier"],
                                  batch_size=expected_batch, mask=mask)
  logits, _ = steps.forward(model, state.params, {}, batch["image"], train=False)
  state = steps.apply_gradients(state, grads, tx, state.batch_stats)
  weights = mask.astype(jnp.float32)
  mean = lambda x: jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1.0)
  loss = mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]))
  return state, metrics | {"loss": loss, "cross_entropy": loss,
                           "accuracy": mean(jnp.argmax(logits, -1) == batch["label"])}


def check_per_example_grads(example_loss, state, mesh, strategy, data):
  """Before DP-SGD trains on several devices: its per-example gradients, taken by the run's own
  lifted step on the run's mesh, must equal one device's. XLA:CPU (JAX 0.10.2) computes some
  of them as zeros in multi-device programs: vmap(grad) over a "data"-sharded batch (which
  dp.per_example_grads avoids) and a trial stack vmapped over exactly one device per trial
  (which this check refuses). A few random examples suffice."""
  trials, rows = state.step.shape[0], 2 * mesh.shape["data"]
  rng = np.random.default_rng(0)
  full = {"image": rng.uniform(size=(trials, rows, *data.input_shape)).astype(np.float32),
          "label": np.tile(np.arange(rows, dtype=np.int32) % data.num_classes, (trials, 1))}
  sharding = NamedSharding(mesh, P("trial", "data"))
  batch = {k: jax.make_array_from_callback(v.shape, sharding, lambda i, v=v: v[i])
           for k, v in full.items()}
  lifted = steps.lift(
      lambda s, b, hp: (s, dp_lib.per_example_grads(example_loss, s.params, b)), strategy,
      donate=False)
  grads = multihost_utils.process_allgather(lifted(state, batch, {})[1], tiled=True)
  params = multihost_utils.process_allgather(state.params, tiled=True)
  for k in sorted({0, trials - 1}):   # the first and last trials sit on different devices
    take = lambda tree: jax.tree.map(lambda x: x[k], tree)
    worst = dp_lib.check_per_example_grads(
        take(grads), example_loss, take(params), take(full),
        remedy="train.strategy=loop, or one device" if strategy == "vmap" else "one device")
    logging.info("DP-SGD self-check, trial %d on %d devices: per-example gradients agree with "
                 "one device's to %.2g", k, jax.device_count(), worst)
