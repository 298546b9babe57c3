"""DP-SGD: per-example clipping, Gaussian noise, and privacy accounting.

One DP-SGD step (Abadi et al. 2016) computes every example's gradient, scales each one to
global L2 norm at most `clip_norm`, sums them, adds N(0, (noise_multiplier * clip_norm)^2)
noise to every coordinate and divides by the batch size:

  grads, metrics = dp_grad(loss_fn, params, batch, key, clip_norm=1.0, noise_multiplier=1.1)

`loss_fn(params, example)` is the loss of ONE example: `example` is the batch pytree with its
leading axis removed (add it back inside, e.g. `model.apply(params, x[None])`, when the model
wants one). The gradient functions are pure and jittable, and the noise key is explicit.

Per-example gradients need per-example forward passes: a model with BatchNorm mixes examples
through the batch statistics, so one example's gradient depends on the others and clipping no
longer bounds its influence. DP models use a per-example normalisation instead (the models'
`norm="group"` switch).

Accounting uses the RDP accountant of `dp_accounting` for the standard DP-SGD event, a
Poisson-subsampled Gaussian mechanism composed `steps` times, under add/remove-one adjacency.
The guarantee assumes Poisson sampling with rate `sample_rate`, and that is how the `dp` method
trains (`pipeline.poisson_batches`): batches of varying size, padded to a static one and
passed with a `mask`, the sum divided by the expected batch size. Shuffled fixed-size batches,
the common approximation, are not what this accountant bounds.
"""

import contextlib
import math
import numbers
from typing import Any, Callable, Mapping

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np

from miajax.errors import UserError

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]

# Largest noise multiplier calibration searches; beyond it a target epsilon is unreachable
# in any practical sense (the signal would be drowned a thousand times over).
_MAX_NOISE_MULTIPLIER = 1e3


def _is_real(x) -> bool:
  """A plain (non-traced) number, bools excluded."""
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


_one_device = [False]


@contextlib.contextmanager
def one_device_program():
  """Traces inside run as a program on a single device, whatever the device count."""
  before, _one_device[0] = _one_device[0], True
  try:
    yield
  finally:
    _one_device[0] = before


def per_example_grads(loss_fn: LossFn, params: PyTree, batch: PyTree) -> PyTree:
  """Gradient of `loss_fn` for each example of `batch`.

  Args:
    loss_fn: `loss_fn(params, example) -> scalar`, the loss of one example (the batch pytree
      with the leading axis removed).
    params: parameter pytree.
    batch: pytree whose leaves share a leading batch axis of size B.

  Returns:
    A pytree like `params` whose every leaf has an extra leading axis of size B. Memory is B
    times the parameter count: split very large batches into micro-batches.

  In a program over several devices, one example at a time (`lax.map`): there XLA:CPU
  computes the batch-grouped convolution that `vmap(grad)` makes of a conv kernel's
  per-example gradient wrongly (zeros for every device's examples but the first; JAX 0.10.2;
  `benchmarks/per_example_conv_bug.py` reproduces it), while each `lax.map` iteration is the
  single-example program, which every partitioning computes right. The loop reads the whole
  batch, so a "data"-sharded batch is gathered and every device computes every example. On
  one device `vmap(grad)` is right and 1.6-3x faster (`benchmarks/per_example_grads.py`), and
  so it is in a program traced under `one_device_program()` (steps.lift's "devices" strategy),
  which runs on one device of many.
  """
  grad = jax.grad(loss_fn)
  if jax.device_count() == 1 or _one_device[0]:
    return jax.vmap(grad, in_axes=(None, 0))(params, batch)
  return jax.lax.map(lambda example: grad(params, example), batch)


def check_per_example_grads(got: PyTree, loss_fn: LossFn, params: PyTree, batch: PyTree,
                            rtol: float = 0.1, remedy: str = "one device") -> float:
  """Compares per-example gradients `got` (from the run's own lifted, sharded path) with
  single-example gradients taken on one device; returns the worst relative error.

  Args:
    got: per-example gradients of `params` on `batch`, every leaf with leading axis B.
    loss_fn: the loss of one example, as for `per_example_grads`.
    params, batch: one trial's parameters and the B examples.
    rtol: the largest error allowed, relative to each leaf's largest reference magnitude. A
      dropped gradient is off by 1; float32 rounding is 1e-6 for most models but reaches 0.04
      in MobileNetV2's GroupNorm layers (whose 2x2 maps leave groups of a few values: measured
      against float64, any float32 order of summation is that far off).
    remedy: what the error message offers instead.

  Raises:
    UserError: one line naming the worst leaf, when any leaf is off by more than rtol: DP-SGD
      must not train on gradients the partitioner got wrong.
  """
  one = jax.jit(jax.grad(loss_fn))
  params, batch = jax.device_put(jax.device_get((params, batch)), jax.local_devices()[0])
  n = jax.tree.leaves(batch)[0].shape[0]
  want = jax.tree.map(lambda *xs: np.stack(xs), *[
      jax.device_get(one(params, jax.tree.map(lambda x: x[i], batch))) for i in range(n)])
  worst, where = 0.0, ""
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(jax.device_get(got)),
                          jax.tree.leaves(want)):
    err = float(np.max(np.abs(g - w)) / max(float(np.max(np.abs(w))), 1e-12))
    if err > worst:
      worst, where = err, jax.tree_util.keystr(path)
  if worst > rtol:
    raise UserError(
        f"DP-SGD self-check: per-example gradients on {jax.device_count()} devices differ from "
        f"one device's by {worst:.3g} (relative, at {where}; allowed {rtol:g}) with JAX "
        f"{jax.__version__}; allowed: {remedy}")
  return worst


def _per_example_norms(grads: PyTree) -> jax.Array:
  """Global L2 norm of each example's gradient pytree: (B,)."""
  leaves = jax.tree_util.tree_leaves(grads)
  squares = [jnp.sum(jnp.square(g.reshape(g.shape[0], -1).astype(jnp.float32)), axis=1)
             for g in leaves]
  return jnp.sqrt(sum(squares))


def clip(grads: PyTree, clip_norm: float | jax.Array) -> tuple[PyTree, jax.Array]:
  """Scales each example's whole gradient pytree to global L2 norm <= `clip_norm`.

  Args:
    grads: per-example gradients, every leaf with leading batch axis B.
    clip_norm: the bound C > 0 (may be traced).

  Returns:
    `(clipped, norms)`: gradients scaled by min(1, C / norm) and the (B,) norms before
    clipping.
  """
  norms = _per_example_norms(grads)
  # Dividing by max(norm, tiny) keeps a zero gradient at scale 1 instead of 0/0.
  tiny = jnp.finfo(jnp.float32).tiny
  scale = jnp.minimum(1.0, clip_norm / jnp.maximum(norms, tiny))

  def _scale(g):
    return g * scale.reshape((-1,) + (1,) * (g.ndim - 1)).astype(g.dtype)

  return jax.tree_util.tree_map(_scale, grads), norms


def privatise(key: jax.Array, clipped: PyTree, clip_norm: float | jax.Array,
              noise_multiplier: float | jax.Array,
              batch_size: int | float | jax.Array) -> PyTree:
  """Sums clipped per-example gradients, adds Gaussian noise, divides by the batch size.

  Args:
    key: PRNG key for the noise.
    clipped: clipped per-example gradients, every leaf with leading batch axis.
    clip_norm: the clipping bound C, the sensitivity of the sum.
    noise_multiplier: sigma; each coordinate gets N(0, (sigma * C)^2) noise.
    batch_size: the divisor. Under Poisson sampling this is the EXPECTED batch size
      (sample_rate * dataset size), a constant, not the realised one, which would leak.

  Returns:
    A pytree like one example's gradient: (sum + noise) / batch_size.
  """
  leaves, treedef = jax.tree_util.tree_flatten(clipped)
  keys = jax.random.split(key, len(leaves))
  std = noise_multiplier * clip_norm
  noisy = [(jnp.sum(g, axis=0)
            + std * jax.random.normal(k, g.shape[1:], dtype=g.dtype)) / batch_size
           for g, k in zip(leaves, keys)]
  return jax.tree_util.tree_unflatten(treedef, noisy)


def dp_grad(loss_fn: LossFn, params: PyTree, batch: PyTree, key: jax.Array, *,
            clip_norm: float | jax.Array, noise_multiplier: float | jax.Array,
            batch_size: int | float | jax.Array | None = None,
            mask: jax.Array | None = None) -> tuple[PyTree, Mapping[str, jax.Array]]:
  """One DP-SGD gradient: per-example grads, clip, sum, noise, divide.

  Args:
    loss_fn: `loss_fn(params, example) -> scalar` for ONE example (see module docstring).
    params: parameter pytree.
    batch: pytree of arrays with a leading batch axis B.
    key: PRNG key for the noise.
    clip_norm: per-example L2 bound C.
    noise_multiplier: sigma (0 gives clipped, noiseless SGD).
    batch_size: divisor; defaults to B. Pass the expected batch size under Poisson sampling.
    mask: optional (B,) bool, False for padding rows of a fixed-shape batch (a Poisson
      sample padded to a static size): their gradients are dropped before the sum.

  Returns:
    `(grads, metrics)`: the private gradient pytree, and metrics `grad_norm` (mean
    per-example norm before clipping) and `clipped_fraction` (share of examples whose norm
    exceeded C), both over the unmasked examples.
  """
  if _is_real(clip_norm) and not clip_norm > 0:
    raise UserError(f"dp.clip_norm: got {clip_norm!r}; allowed: a number > 0")
  if _is_real(noise_multiplier) and not noise_multiplier >= 0:
    raise UserError(f"dp.noise_multiplier: got {noise_multiplier!r}; allowed: a number >= 0")
  grads = per_example_grads(loss_fn, params, batch)
  clipped, norms = clip(grads, clip_norm)
  if mask is None:
    weights = jnp.ones_like(norms)
  else:
    weights = mask.astype(norms.dtype)
    clipped = jax.tree_util.tree_map(
        lambda g: g * weights.reshape((-1,) + (1,) * (g.ndim - 1)).astype(g.dtype), clipped)
  if batch_size is None:
    batch_size = norms.shape[0]
  # Materialise the clipped per-example gradients before summing them: fused with the sum,
  # XLA:CPU rewrites a conv kernel's scaled per-example gradients into one slow convolution
  # (cnn4 at 24 examples: 28 s a step instead of 0.8 s; benchmarks/NOTES.md).
  clipped = jax.lax.optimization_barrier(clipped)
  noisy = privatise(key, clipped, clip_norm, noise_multiplier, batch_size)
  count = jnp.maximum(jnp.sum(weights), 1.0)
  metrics = {
      "grad_norm": jnp.sum(norms * weights) / count,
      "clipped_fraction": jnp.sum((norms > clip_norm) * weights) / count,
  }
  return noisy, metrics


def _check_accounting_args(noise_multiplier: float, sample_rate: float, steps: int,
                           delta: float | None) -> None:
  """Raises UserError naming the first invalid accounting argument."""
  if not (_is_real(noise_multiplier) and noise_multiplier >= 0
          and math.isfinite(noise_multiplier)):
    raise UserError(
        f"dp.noise_multiplier: got {noise_multiplier!r}; allowed: a finite number >= 0")
  if not (_is_real(sample_rate) and 0 < sample_rate <= 1):
    raise UserError(f"dp.sample_rate: got {sample_rate!r}; allowed: a number in (0, 1]")
  if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
    raise UserError(f"dp.steps: got {steps!r}; allowed: an integer >= 0")
  if delta is not None and not (_is_real(delta) and 0 < delta < 1):
    raise UserError(f"dp.delta: got {delta!r}; allowed: a number in (0, 1)")


def _accountant(noise_multiplier: float, sample_rate: float, steps: int,
                orders=None) -> dp_accounting.rdp.RdpAccountant:
  """An RDP accountant charged with `steps` Poisson-subsampled Gaussian steps."""
  accountant = dp_accounting.rdp.RdpAccountant(orders)
  event = dp_accounting.PoissonSampledDpEvent(
      float(sample_rate), dp_accounting.GaussianDpEvent(float(noise_multiplier)))
  accountant.compose(event, int(steps))
  return accountant


def rdp_curve(noise_multiplier: float, sample_rate: float, steps: int,
              orders=None) -> tuple[np.ndarray, np.ndarray]:
  """Renyi DP of DP-SGD at each order: `(orders, rdp)`.

  Args:
    noise_multiplier: sigma > 0.
    sample_rate: Poisson sampling probability q in (0, 1].
    steps: number of steps composed.
    orders: Renyi orders; `dp_accounting`'s defaults when None.

  Returns:
    Two float arrays of equal length. Useful to convert with another RDP-to-(eps, delta)
    bound or to combine with other mechanisms.
  """
  _check_accounting_args(noise_multiplier, sample_rate, steps, None)
  if noise_multiplier == 0:
    raise UserError("dp.noise_multiplier: got 0; allowed: a number > 0 for an RDP curve")
  accountant = _accountant(noise_multiplier, sample_rate, steps, orders)
  # The accountant has no public getter for its curve; read it rather than recompute it.
  # pylint: disable-next=protected-access
  return np.asarray(accountant._orders, float), np.asarray(accountant._rdp, float)


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
  """Epsilon of DP-SGD at `delta` by the RDP accountant.

  Args:
    noise_multiplier: sigma >= 0 (0 gives infinity).
    sample_rate: Poisson sampling probability q = expected batch size / dataset size.
    steps: number of noisy steps.
    delta: target delta in (0, 1).

  Returns:
    Epsilon with `dp_accounting`'s RDP-to-DP conversion (Balle et al. 2020 / Canonne et al.
    2020), which is tighter than the classic rdp + log(1/delta)/(order - 1) of older tools
    (TF Privacy 2019 reported about 15% larger values for the same run).
  """
  _check_accounting_args(noise_multiplier, sample_rate, steps, delta)
  if steps == 0:
    return 0.0
  if noise_multiplier == 0:
    return math.inf
  return float(_accountant(noise_multiplier, sample_rate, steps).get_epsilon(delta))


def calibrate_noise_multiplier(target_epsilon: float, delta: float, sample_rate: float,
                               steps: int, rtol: float = 1e-3) -> float:
  """Smallest noise multiplier whose epsilon is <= `target_epsilon`, by bisection.

  Args:
    target_epsilon: the budget, > 0.
    delta: target delta in (0, 1).
    sample_rate: Poisson sampling probability q in (0, 1].
    steps: number of noisy steps.
    rtol: relative width of the final bracket on sigma.

  Returns:
    sigma with epsilon(sigma) <= target_epsilon and epsilon(sigma * (1 - rtol)) above it
    (up to the accountant's own resolution). 0 when `steps` is 0.
  """
  if not (_is_real(target_epsilon) and target_epsilon > 0
          and math.isfinite(target_epsilon)):
    raise UserError(f"dp.epsilon: got {target_epsilon!r}; allowed: a finite number > 0")
  _check_accounting_args(1.0, sample_rate, steps, delta)
  if steps == 0:
    return 0.0

  def eps(sigma):
    return epsilon(sigma, sample_rate, steps, delta)

  # Epsilon falls monotonically as sigma grows: bracket by doubling, then bisect.
  hi = 1.0
  while eps(hi) > target_epsilon:
    hi *= 2
    if hi > _MAX_NOISE_MULTIPLIER:
      raise UserError(
          f"dp.epsilon: got {target_epsilon!r}; allowed: a budget reachable with "
          f"noise_multiplier <= {_MAX_NOISE_MULTIPLIER:g} (delta={delta}, "
          f"sample_rate={sample_rate}, steps={steps})")
  lo = hi / 2 if hi > 1.0 else 0.0
  while hi - lo > rtol * hi:
    mid = 0.5 * (lo + hi)
    if eps(mid) <= target_epsilon:
      hi = mid
    else:
      lo = mid
  return hi
