"""Train state and the pure step functions of one trial, and their lifting to a trial stack.

Every step is written for ONE trial as `step(state, batch, hp) -> (state, metrics)`, where `hp`
holds the trial's traced hyperparameters (keep counts, rho, gamma, ...), so trials that differ
only in those values share one compiled program. `lift` turns it into a step over a stack of
trials (a leading trial axis on state, batch and hp) with either `jax.vmap` or `lax.map`.
"""

import contextlib
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from miajax import dp as dp_lib

Step = Callable[..., tuple[Any, dict[str, jax.Array]]]


@flax.struct.dataclass
class TrainState:
  step: jax.Array       # int32 scalar: optimizer steps taken, also the input position
  params: Any
  batch_stats: Any      # {} for models without BatchNorm
  opt_state: Any
  key: jax.Array        # uint32[2]; split every step
  extra: Any            # the defence's own state (admm.AdmmState, minmax.MinmaxState); {} if none


def optimizer(config) -> optax.GradientTransformation:
  o = config.optimizer
  if o.name == "adam":
    tx = optax.adam(o.learning_rate)
  else:
    tx = optax.sgd(o.learning_rate, momentum=o.momentum)
  if o.weight_decay:
    tx = optax.chain(optax.add_decayed_weights(o.weight_decay), tx)
  return tx


def init(key: jax.Array, model, tx: optax.GradientTransformation, input_shape, extra_fn=None,
         variables=None) -> TrainState:
  """One trial's initial state; `extra_fn(params) -> extra` adds method state. `variables`:
  the model's, if already drawn from `key` (`init_variables`)."""
  init_key, key = jax.random.split(key)
  if variables is None:
    variables = model.init(init_key, jnp.zeros((1, *input_shape), jnp.float32), train=False)
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params), key=key,
      extra=extra_fn(params) if extra_fn else {})


@functools.partial(jax.jit, static_argnums=(0, 1))
def init_variables(model, input_shape, keys: jax.Array):
  """Each trial's model variables, drawn from its key as `init` draws them: one program per
  model, input shape and trial count, shared by every stack of a run (the model's initialisers
  were most of each method's init compile: 2 of its 1.6-2.6 s, benchmarks/NOTES.md)."""
  def one(key):
    return model.init(jax.random.split(key)[0], jnp.zeros((1, *input_shape), jnp.float32),
                      train=False)
  return jax.vmap(one)(keys)


def forward(model, params, batch_stats, images, train: bool):
  """Logits and the updated batch statistics (unchanged outside training or without BN)."""
  variables = {"params": params}
  if batch_stats:
    variables["batch_stats"] = batch_stats
    if train:
      logits, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
      return logits, updates["batch_stats"]
  return model.apply(variables, images, train=train), batch_stats


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def classifier_loss(params, batch_stats, model, batch):
  logits, batch_stats = forward(model, params, batch_stats, batch["image"], train=True)
  loss = cross_entropy(logits, batch["label"])
  return loss, (logits, batch_stats)


def apply_gradients(state: TrainState, grads, tx, batch_stats, mask=None) -> TrainState:
  """One optimizer update; with `mask`, pruned weights and their moments stay exactly zero."""
  if mask is not None:
    grads = _masked(grads, mask)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if mask is not None:
    params = _masked(params, mask)
  return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                       opt_state=opt_state, key=jax.random.split(state.key)[0])


def _masked(tree, mask):
  return jax.tree.map(lambda x, m: jnp.where(m, x, jnp.zeros((), x.dtype)), tree, mask)


def train_step(state: TrainState, batch, hp, *, model, tx, loss_fn=classifier_loss,
               masked: bool = False):
  """Plain supervised step: cross-entropy (plus whatever `loss_fn` adds), one update; with
  `masked`, only the weights `state.extra.mask` keeps (ADMM's retraining) move."""
  del hp
  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, state.batch_stats, model, batch)
  mask = state.extra.mask if masked else None
  state = apply_gradients(state, grads, tx, batch_stats, mask)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
  # "loss" is the objective the step minimised (with ADMM's proximal term or Min-Max's
  # adversarial term where the method adds one); "cross_entropy" is the task loss alone.
  return state, {"loss": loss, "cross_entropy": cross_entropy(logits, batch["label"]),
                 "accuracy": accuracy}


def eval_logits(state: TrainState, images, *, model):
  return forward(model, state.params, state.batch_stats, images, train=False)[0]


def example_grad_norms(state: TrainState, batch, *, model):
  """Each example's loss-gradient L2 norm over the surviving weights: (N,) for one trial.

  `batch` is (images, labels). Evaluated as at inference (batch statistics fixed); weights
  that are exactly zero (pruned) are left out, so a pruned model is scored on the weights it
  keeps. A white-box membership score: members, fit in training, tend to small gradients.
  """
  images, labels = batch

  def loss(params, example):
    logits, _ = forward(model, params, state.batch_stats, example["image"][None], train=False)
    return cross_entropy(logits, example["label"][None])

  # DP-SGD's per-example gradients, right on several XLA:CPU devices too (see there).
  grads = dp_lib.per_example_grads(loss, state.params, {"image": images, "label": labels})
  squares = jax.tree.map(
      lambda g, p: jnp.sum(jnp.square(jnp.where(p != 0, g, 0)).reshape(g.shape[0], -1), 1),
      grads, state.params)
  return jnp.sqrt(sum(jax.tree.leaves(squares)))


def lift(step: Step, strategy: str, donate: bool = True) -> Step:
  """A single-trial step -> one jitted step over the trial stack.

  vmap batches the trials into one program (grouped convolutions on XLA:CPU, which run at
  about half the per-trial speed); map runs them one after another inside one program (a
  while loop, slow on XLA:CPU); loop calls one compiled single-trial program per trial, which
  reads and writes its slice of the stack in place (the trial index is traced); devices is
  loop on each device's own block of trials (the stack sharded over "trial", one device per
  core on CPU), each device's programs fed only from its own buffers, so the devices train at
  once.
  """
  donate_argnums = (0,) if donate else ()
  if strategy == "vmap":
    return jax.jit(jax.vmap(step), donate_argnums=donate_argnums)
  if strategy == "map":
    return jax.jit(lambda state, batch, hp: jax.lax.map(lambda a: step(*a), (state, batch, hp)),
                   donate_argnums=donate_argnums)
  if strategy not in ("loop", "devices"):
    raise ValueError(f"unknown strategy {strategy!r}")

  @functools.partial(jax.jit, donate_argnums=donate_argnums)
  def one(stack, batch, hp, k):
    # Trial k is read and written in place: one program for every k, no restacking.
    take = lambda x: jax.lax.dynamic_index_in_dim(x, k, keepdims=False)
    with _traced_for(strategy):
      state, metrics = step(jax.tree.map(take, stack), jax.tree.map(take, batch),
                            jax.tree.map(take, hp))
    put = lambda x, y: jax.lax.dynamic_update_index_in_dim(x, y, k, 0)
    return jax.tree.map(put, stack, state), metrics

  def looped(stack, batch, hp):
    metrics = []
    for k in range(jax.tree.leaves(stack)[0].shape[0]):
      stack, m = one(stack, batch, hp, k)
      metrics.append(m)
    return stack, _stack_metrics(*metrics)

  def spread(stack, batch, hp):
    devices, sharding = _trial_devices(stack)
    if len(devices) == 1:
      return looped(stack, batch, hp)
    parts = [list(p) for p in zip(*(_parts(t, devices) for t in (stack, batch, hp)))]
    local = len(jax.tree.leaves(stack)[0]) // len(devices)
    metrics = [[] for _ in devices]
    for k in range(local):            # dispatched alternately, so every device is busy
      for d, (s, b, h) in enumerate(parts):
        parts[d][0], m = one(s, b, h, k)
        metrics[d].append(m)
    return (_join([p[0] for p in parts], sharding),
            _join([_stack_metrics(*m) for m in metrics], sharding))

  return spread if strategy == "devices" else looped


def _traced_for(strategy: str):
  """"devices" traces single-trial programs for one device (dp.one_device_program)."""
  return dp_lib.one_device_program() if strategy == "devices" else contextlib.nullcontext()


def _trial_devices(stack):
  """The devices of a stack sharded over a ("trial", "data") mesh with "data" of size 1, in
  trial order, and that trial sharding."""
  sharding = jax.tree.leaves(stack)[0].sharding
  mesh = getattr(sharding, "mesh", None)
  if mesh is None or mesh.axis_names != ("trial", "data") or mesh.shape["data"] != 1:
    raise ValueError("strategy 'devices' needs the stack sharded over a (trial, data) mesh "
                     "with one device on data (stack.make_mesh)")
  return list(mesh.devices[:, 0]), NamedSharding(mesh, P("trial"))


def _parts(tree, devices, stacked: bool = True) -> list:
  """Per device, its part of `tree`: its block of trials (stacked) or the whole (shared), the
  shard it already holds where the layout matches; otherwise copied there (a slower path)."""
  n = len(devices)

  def split(x):
    shards = {s.device: s.data for s in x.addressable_shards}
    want = (x.shape[0] // n, *x.shape[1:]) if stacked else x.shape
    if all(d in shards and shards[d].shape == want for d in devices):
      return [shards[d] for d in devices]
    if not stacked:
      return [jax.device_put(x, d) for d in devices]
    return [jax.device_put(x[i * want[0]:(i + 1) * want[0]], d) for i, d in enumerate(devices)]

  leaves, treedef = jax.tree.flatten(tree)
  per_leaf = [split(x) for x in leaves]
  return [treedef.unflatten([p[d] for p in per_leaf]) for d in range(n)]


def _join(parts: list, sharding) -> Any:
  """Per-device blocks of trials -> one stack laid out by `sharding`."""
  def join(*blocks):
    shape = (sum(b.shape[0] for b in blocks), *blocks[0].shape[1:])
    return jax.make_array_from_single_device_arrays(shape, sharding, list(blocks))
  return jax.tree.map(join, *parts)


@jax.jit
def _stack_metrics(*metrics):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)


def lift_update(fn: Callable, strategy: str) -> Callable:
  """fn(state, hp) -> (state, metrics) for one trial -> jitted over the stack."""
  stacked = lift(lambda state, batch, hp: fn(state, hp), strategy)
  return lambda state, hp: stacked(state, None, hp)


def lift_eval(fn: Callable, strategy: str) -> Callable:
  """fn(state, images) for one trial -> jitted over the stack, images shared by all trials."""
  if strategy == "vmap":
    return jax.jit(jax.vmap(fn, in_axes=(0, None)))
  if strategy == "map":
    return jax.jit(lambda state, images: jax.lax.map(lambda s: fn(s, images), state))

  @jax.jit
  def one(stack, images, k):
    with _traced_for(strategy):
      return fn(jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, k, keepdims=False),
                             stack), images)

  def looped(stack, images):
    n = jax.tree.leaves(stack)[0].shape[0]
    return _stack_metrics(*[one(stack, images, k) for k in range(n)])

  def spread(stack, images):
    devices, sharding = _trial_devices(stack)
    if len(devices) == 1:
      return looped(stack, images)
    stacks, shared = _parts(stack, devices), _parts(images, devices, stacked=False)
    local = len(jax.tree.leaves(stack)[0]) // len(devices)
    outs = [[] for _ in devices]
    for k in range(local):
      for d in range(len(devices)):
        outs[d].append(one(stacks[d], shared[d], k))
    return _join([_stack_metrics(*o) for o in outs], sharding)

  return spread if strategy == "devices" else looped


def default_strategy() -> str:
  """From benchmarks/run.py: vmap on accelerators; on XLA:CPU a loop of single-trial programs
  (vmap ran 4 LeNet-5 trials at 0.43x the per-trial speed of the plain step, lax.map at 0.2x,
  the loop at 0.96x). "devices" (a device per core) stays opt-in until it is measured ahead of
  the loop: on a loaded 2-core machine it ran the 4-keep sweep at 0.60x of it
  (benchmarks/NOTES.md, 2026-12-04)."""
  return "vmap" if jax.default_backend() != "cpu" else "loop"
