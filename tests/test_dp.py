"""Tests for miajax.dp: per-example clipping, noise, and the RDP accountant."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from miajax import dp
from miajax.errors import UserError

# --- accounting ---------------------------------------------------------------------------

# TensorFlow Privacy's MNIST DP-SGD tutorial, tutorials/README.md ("Select Parameters" table
# and the compute_dp_sgd_privacy example, github.com/tensorflow/privacy, 2019, e.g. commit
# 0776ed1): N = 60000, batch 256, delta = 1e-5, steps = ceil(epochs * N / batch).
# (noise multiplier, epochs, published epsilon)
_TF_PRIVACY_MNIST = [(1.1, 60, 3.01), (1.3, 15, 1.19), (0.7, 45, 7.10)]
_Q = 256 / 60000


def _steps(epochs):
  return math.ceil(epochs * 60000 / 256)


@pytest.mark.parametrize("sigma,epochs,published", _TF_PRIVACY_MNIST)
def test_accountant_matches_published_tf_privacy_mnist(sigma, epochs, published):
  """Same RDP curve as TF Privacy; their 2019 epsilons used the classic conversion.

  TF Privacy then converted RDP to (eps, delta) with eps = min_a rdp(a) + log(1/delta)/(a-1)
  (Mironov 2017, Prop. 3); applied to our curve it gives the published figure to the
  printed two decimals. `dp.epsilon` uses dp_accounting's tighter conversion (Balle et al.
  2020, Prop. 12 of arXiv:2004.00010), about 14% lower here, never higher.
  """
  orders, rdp = dp.rdp_curve(sigma, _Q, _steps(epochs))
  classic = np.min(rdp + math.log(1 / 1e-5) / (orders - 1))
  assert round(classic, 2) == published
  eps = dp.epsilon(sigma, _Q, _steps(epochs), 1e-5)
  assert 0.8 * published < eps <= classic


def test_calibrate_round_trips():
  steps = _steps(60)
  sigma = dp.calibrate_noise_multiplier(3.0, 1e-5, _Q, steps)
  eps = dp.epsilon(sigma, _Q, steps, 1e-5)
  assert 3.0 * (1 - 1e-2) < eps <= 3.0
  # Smallest such sigma, to the bisection's relative tolerance of 1e-3.
  assert dp.epsilon(sigma * (1 - 2e-3), _Q, steps, 1e-5) > 3.0
  # And it inverts epsilon: the tutorial's sigma = 1.1 comes back.
  eps_tutorial = dp.epsilon(1.1, _Q, steps, 1e-5)
  assert dp.calibrate_noise_multiplier(eps_tutorial, 1e-5, _Q, steps) == pytest.approx(
      1.1, rel=2e-3)


def test_epsilon_decreases_with_noise():
  eps = [dp.epsilon(s, 0.01, 1000, 1e-5) for s in (0.5, 0.8, 1.1, 2.0, 4.0)]
  assert all(a > b for a, b in zip(eps, eps[1:]))


def test_epsilon_edge_cases():
  assert dp.epsilon(1.0, 0.01, 0, 1e-5) == 0.0
  assert dp.epsilon(0.0, 0.01, 10, 1e-5) == math.inf
  assert dp.calibrate_noise_multiplier(1.0, 1e-5, 0.01, 0) == 0.0


@pytest.mark.parametrize("call,field", [
    (lambda: dp.epsilon(1.0, 0.01, 100, 0.0), "dp.delta"),
    (lambda: dp.epsilon(1.0, 0.01, 100, 1.0), "dp.delta"),
    (lambda: dp.epsilon(1.0, 0.0, 100, 1e-5), "dp.sample_rate"),
    (lambda: dp.epsilon(1.0, 1.5, 100, 1e-5), "dp.sample_rate"),
    (lambda: dp.epsilon(1.0, 0.01, -1, 1e-5), "dp.steps"),
    (lambda: dp.epsilon(1.0, 0.01, 2.5, 1e-5), "dp.steps"),
    (lambda: dp.epsilon(-1.0, 0.01, 100, 1e-5), "dp.noise_multiplier"),
    (lambda: dp.calibrate_noise_multiplier(0.0, 1e-5, 0.01, 100), "dp.epsilon"),
    (lambda: dp.calibrate_noise_multiplier(-1.0, 1e-5, 0.01, 100), "dp.epsilon"),
    (lambda: dp.calibrate_noise_multiplier(math.inf, 1e-5, 0.01, 100), "dp.epsilon"),
    (lambda: dp.calibrate_noise_multiplier(1.0, 2.0, 0.01, 100), "dp.delta"),
    (lambda: dp.calibrate_noise_multiplier(1.0, 1e-5, 0.0, 100), "dp.sample_rate"),
])
def test_invalid_accounting_inputs(call, field):
  with pytest.raises(UserError, match=field):
    call()


# --- per-example gradients, clipping, noise -----------------------------------------------


class _MLP(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(nn.relu(nn.Dense(16)(x)))


_MODEL = _MLP()
# Jitted once here: eager Flax under vmap(grad) pays op-by-op dispatch on every call.
_PER_EXAMPLE = jax.jit(dp.per_example_grads, static_argnums=0)
_DP_GRAD = jax.jit(dp.dp_grad, static_argnums=0, static_argnames=("batch_size",))


def _ce_loss(params, example):
  """Cross-entropy of ONE example; the model wants a batch axis, so add it."""
  logits = _MODEL.apply(params, example["x"][None])[0]
  return -jax.nn.log_softmax(logits)[example["y"]]


@pytest.fixture(scope="module")
def mlp():
  key_init, key_x, key_y = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(key_x, (12, 5))
  # A few examples with huge inputs have gradients far above any sensible clip norm.
  x = x.at[:4].multiply(100.0)
  batch = {"x": x, "y": jax.random.randint(key_y, (12,), 0, 3)}
  params = _MODEL.init(key_init, x[:1])
  return params, batch, _PER_EXAMPLE(_ce_loss, params, batch)


def _norms(tree):
  leaves = jax.tree_util.tree_leaves(tree)
  return np.sqrt(sum(np.sum(np.square(np.asarray(g)).reshape(g.shape[0], -1), axis=1)
                     for g in leaves))


def test_per_example_grads_match_single_example_grads(mlp):
  params, batch, grads = mlp
  one = jax.grad(_ce_loss)(params, {"x": batch["x"][5], "y": batch["y"][5]})
  jax.tree_util.tree_map(
      lambda g, o: np.testing.assert_allclose(g[5], o, rtol=1e-5, atol=1e-6), grads, one)


def test_clip_bounds_every_example(mlp):
  _, _, grads = mlp
  clip_norm = 1.0
  clipped, norms = jax.jit(dp.clip)(grads, clip_norm)
  before = _norms(grads)
  np.testing.assert_allclose(norms, before, rtol=1e-5)
  assert np.sum(before > 10 * clip_norm) >= 3  # the test exercises real clipping
  after = _norms(clipped)
  assert np.all(after <= clip_norm + 1e-6)
  # Clipped examples land on the bound; small ones are untouched; directions are kept.
  big = before > clip_norm
  np.testing.assert_allclose(after[big], clip_norm, rtol=1e-5)
  np.testing.assert_allclose(after[~big], before[~big], rtol=1e-6)
  for g, c in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(clipped)):
    scale = np.minimum(1.0, clip_norm / np.maximum(before, 1e-30))
    scale = scale.reshape((-1,) + (1,) * (g.ndim - 1))
    np.testing.assert_allclose(c, g * scale, rtol=1e-5, atol=1e-7)


def test_clip_keeps_zero_gradients_finite():
  grads = {"w": jnp.zeros((3, 4))}
  clipped, norms = dp.clip(grads, 1.0)
  assert np.all(np.asarray(clipped["w"]) == 0) and np.all(np.asarray(norms) == 0)


def test_dp_grad_without_noise_or_clipping_is_mean_gradient(mlp):
  params, batch, _ = mlp
  grads, metrics = _DP_GRAD(_ce_loss, params, batch, jax.random.key(1), clip_norm=1e9,
                            noise_multiplier=0.0)

  def mean_loss(p):
    return jnp.mean(jax.vmap(_ce_loss, in_axes=(None, 0))(p, batch))

  want = jax.jit(jax.grad(mean_loss))(params)
  jax.tree_util.tree_map(
      lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6), grads, want)
  assert float(metrics["clipped_fraction"]) == 0.0


def test_dp_grad_metrics_and_jit(mlp):
  params, batch, per_example = mlp
  clip_norm = 1.0
  step = _DP_GRAD
  grads, metrics = step(_ce_loss, params, batch, jax.random.key(2), clip_norm=clip_norm,
                        noise_multiplier=1.0)
  norms = _norms(per_example)
  np.testing.assert_allclose(metrics["grad_norm"], norms.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["clipped_fraction"], np.mean(norms > clip_norm))
  assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
  # The key is explicit: same key, same noise; another key, other noise.
  again, _ = step(_ce_loss, params, batch, jax.random.key(2), clip_norm=clip_norm,
                  noise_multiplier=1.0)
  other, _ = step(_ce_loss, params, batch, jax.random.key(3), clip_norm=clip_norm,
                  noise_multiplier=1.0)
  leaf = lambda t: np.asarray(jax.tree_util.tree_leaves(t)[0])
  np.testing.assert_array_equal(leaf(grads), leaf(again))
  assert not np.allclose(leaf(grads), leaf(other))


def test_dp_grad_mask_drops_padding_rows(mlp):
  params, batch, _ = mlp
  mask = jnp.arange(12) < 7
  kwargs = dict(clip_norm=1.0, noise_multiplier=0.0, batch_size=7)
  masked, metrics = _DP_GRAD(_ce_loss, params, batch, jax.random.key(0), mask=mask,
                               **kwargs)
  head = jax.tree_util.tree_map(lambda a: a[:7], batch)
  want, want_metrics = _DP_GRAD(_ce_loss, params, head, jax.random.key(0), **kwargs)
  jax.tree_util.tree_map(
      lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7), masked, want)
  np.testing.assert_allclose(metrics["grad_norm"], want_metrics["grad_norm"], rtol=1e-5)


def test_noise_std_is_sigma_clip_over_batch():
  """Zero gradients isolate the noise: 400 draws x 1000 coordinates = 4e5 samples, so the
  sample sd is within 1% of the truth with overwhelming probability (its relative sd is
  1/sqrt(2 * 4e5) = 0.11%)."""
  sigma, clip_norm, batch_size = 1.3, 0.7, 8
  zeros = {"a": jnp.zeros((batch_size, 10, 50)), "b": jnp.zeros((batch_size, 500))}
  draw = jax.jit(jax.vmap(lambda k: dp.privatise(k, zeros, clip_norm, sigma, batch_size)))
  noise = draw(jax.random.split(jax.random.key(0), 400))
  flat = np.concatenate([np.asarray(g).reshape(400, -1) for g in
                         jax.tree_util.tree_leaves(noise)], axis=1)
  assert flat.shape == (400, 1000)
  want = sigma * clip_norm / batch_size
  assert np.std(flat) == pytest.approx(want, rel=0.01)
  assert abs(np.mean(flat)) < 5 * want / np.sqrt(flat.size)
  # Leaves and coordinates get independent noise.
  assert abs(np.corrcoef(flat[:, 0], flat[:, 600])[0, 1]) < 0.2


@pytest.mark.parametrize("kwargs,field", [
    (dict(clip_norm=0.0, noise_multiplier=1.0), "dp.clip_norm"),
    (dict(clip_norm=1.0, noise_multiplier=-0.5), "dp.noise_multiplier"),
])
def test_dp_grad_rejects_bad_settings(mlp, kwargs, field):
  params, batch, _ = mlp
  with pytest.raises(UserError, match=field):
    dp.dp_grad(_ce_loss, params, batch, jax.random.key(0), **kwargs)
