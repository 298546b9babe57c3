"""The methods' steps do what the paper says, on small problems in-process."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from miajax import attack as attack_lib
from miajax import config as config_lib
from miajax import dp as dp_lib
from miajax import methods
from miajax import models
from miajax import pruning
from miajax import steps


def _setup(method, num_trials=1, tx=None, **overrides):
  config = config_lib.base()
  config.pruning.keep = "paper"
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  model = models.create("lenet5", 10)
  tx = tx or optax.adam(1e-3)
  recipe = methods.recipe(method, config, model, tx, steps_per_epoch=10, num_classes=10,
                          num_members=640)
  init = functools.partial(steps.init, model=model, tx=tx, input_shape=(28, 28, 1),
                           extra_fn=recipe.extra)
  state = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(0), num_trials))
  one = jax.tree.map(lambda x: x[0], state.params)
  hp = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * num_trials), recipe.hp(one)) \
      if recipe.hp else {}
  return config, model, tx, recipe, state, hp


def _batch(key, num_trials, n=32, side=0):
  k1, k2 = jax.random.split(key)
  batch = {"image": jax.random.normal(k1, (num_trials, n, 28, 28, 1)),
           "label": jax.random.randint(k2, (num_trials, n), 0, 10)}
  if side:
    for name, salt in (("mem", 1), ("ref", 2)):
      k3, k4 = jax.random.split(jax.random.fold_in(key, salt))
      batch[f"{name}/image"] = jax.random.normal(k3, (num_trials, side, n, 28, 28, 1))
      batch[f"{name}/label"] = jax.random.randint(k4, (num_trials, side, n), 0, 10)
  return batch


def _phase(recipe, name):
  return next(p for p in recipe.phases if p.name == name)


def test_pruning_recipe_has_the_papers_phases_and_lenet5_rates():
  _, _, _, recipe, state, hp = _setup("pruning")
  assert [p.name for p in recipe.phases] == ["pretrain", "admm", "retrain"]
  counts = {"/".join(str(k.key) for k in path): int(n[0])
            for path, n in jax.tree_util.tree_leaves_with_path(hp["counts"])}
  sizes = {"conv1/kernel": 150, "conv2/kernel": 2400, "fc1/kernel": 48000,
           "fc2/kernel": 10080, "fc3/kernel": 840}
  keep = dict(zip(sizes, (0.6, 0.1, 0.0625, 0.0625, 0.0625)))
  assert counts == {name: round(keep[name] * size) for name, size in sizes.items()}


def test_admm_update_projects_w_plus_u_exactly_and_accumulates_the_dual():
  _, _, _, recipe, state, hp = _setup("pruning", **{"admm.rho": 1.0})
  admm = _phase(recipe, "admm")
  state = steps.lift_update(lambda s, h: (admm.enter(s, h), {}), "vmap")(state, hp)[0]
  step = steps.lift(admm.step, "vmap")
  for i in range(3):
    state, _ = step(state, _batch(jax.random.PRNGKey(i), 1), hp)
  before = jax.tree.map(jnp.copy, state.extra.u)
  state, residual = steps.lift_update(admm.periodic, "vmap")(state, hp)
  z, u, w = state.extra.z, state.extra.u, state.params
  for path, n in jax.tree_util.tree_leaves_with_path(hp["counts"]):
    get = lambda tree: functools.reduce(lambda t, k: t[k.key], path, tree)
    target = get(w) + get(before)
    np.testing.assert_array_equal(get(z), pruning.project(target[0], n[0])[None])
    assert int(jnp.count_nonzero(get(z))) == int(n[0])
    np.testing.assert_allclose(get(u), get(before) + get(w) - get(z), atol=1e-6)
  assert set(residual) == {f"residual/{name}" for name in pruning.layers(
      jax.tree.map(lambda x: x[0], w))}


def test_admm_update_rescales_the_scaled_dual_when_rho_grows():
  # U = Y / rho: with rho *= g, the unscaled dual Y = rho * U must carry over unchanged, so the
  # new U is (U + W - Z) / g (Boyd et al. 2011, 3.4.1).
  growth = 1.5
  config, model, tx, _, state, hp = _setup("pruning", **{"admm.rho": 0.2,
                                                         "admm.rho_growth": growth})
  recipe = methods.recipe("pruning", config, model, tx, steps_per_epoch=10, num_classes=10,
                          num_members=640)
  admm = _phase(recipe, "admm")
  state = steps.lift_update(lambda s, h: (admm.enter(s, h), {}), "vmap")(state, hp)[0]
  step, update = steps.lift(admm.step, "vmap"), steps.lift_update(admm.periodic, "vmap")
  for i in range(2):
    state, _ = step(state, _batch(jax.random.PRNGKey(i), 1), hp)
    rho, u, w = jax.device_get((state.extra.rho, state.extra.u, state.params))
    state, _ = update(state, hp)
    assert float(state.extra.rho[0]) == pytest.approx(float(rho[0]) * growth)
    for path, _ in jax.tree_util.tree_leaves_with_path(hp["counts"]):
      get = lambda tree: functools.reduce(lambda t, k: t[k.key], path, tree)
      y_before = rho[0] * (get(u) + get(w) - get(state.extra.z))
      np.testing.assert_allclose(state.extra.rho[0] * get(state.extra.u), y_before,
                                 rtol=1e-5, atol=1e-8)


def test_steps_log_the_cross_entropy_apart_from_the_objective_they_minimise():
  # Fig. 2 plots the task loss; the ADMM W-step's objective adds rho/2 ||W - Z + U||^2.
  _, _, _, recipe, state, hp = _setup("pruning", **{"admm.rho": 1.0})
  batch = _batch(jax.random.PRNGKey(0), 1)
  _, plain = steps.lift(_phase(recipe, "pretrain").step, "vmap", donate=False)(state, batch, hp)
  np.testing.assert_allclose(plain["cross_entropy"], plain["loss"], rtol=1e-6)
  admm = _phase(recipe, "admm")
  state = steps.lift_update(lambda s, h: (admm.enter(s, h), {}), "vmap")(state, hp)[0]
  _, m = steps.lift(admm.step, "vmap")(state, batch, hp)
  np.testing.assert_allclose(m["cross_entropy"], plain["cross_entropy"], rtol=1e-5)
  assert float(m["loss"][0]) > float(m["cross_entropy"][0]) + 1.0   # the proximal term


def _moments(opt_state, params):
  """The optimizer's per-parameter trees (Adam's mu and nu, SGD's momentum trace)."""
  want = jax.tree.structure(params)
  found = []

  def walk(node):
    if jax.tree.structure(node) == want:
      found.append(node)
    elif isinstance(node, (tuple, list)):
      for child in node:
        walk(child)
  walk(opt_state)
  return found


OPTIMIZERS = {
    "adam": {},
    "sgd_momentum_weight_decay": {"optimizer.name": "sgd", "optimizer.momentum": 0.9,
                                  "optimizer.weight_decay": 5e-3,
                                  "optimizer.learning_rate": 0.05},
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_masked_retraining_keeps_pruned_weights_and_moments_exactly_zero(optimizer):
  config = config_lib.base()
  for key, value in OPTIMIZERS[optimizer].items():
    section, name = key.split(".")
    config[section][name] = value
  _, _, _, recipe, state, hp = _setup("pruning", tx=steps.optimizer(config))
  # ADMM first, so the moments carry velocity into the hard prune.
  admm = steps.lift(_phase(recipe, "admm").step, "vmap")
  for i in range(5):
    state, _ = admm(state, _batch(jax.random.PRNGKey(100 + i), 1), hp)
  assert any(float(jnp.abs(l).max()) > 0 for m in _moments(state.opt_state, state.params)
             for l in jax.tree.leaves(m))
  retrain = _phase(recipe, "retrain")
  state = steps.lift_update(lambda s, h: (retrain.enter(s, h), {}), "vmap")(state, hp)[0]
  step = steps.lift(retrain.step, "vmap")
  for i in range(20):
    state, _ = step(state, _batch(jax.random.PRNGKey(i), 1), hp)
  mask = state.extra.mask
  moments = _moments(state.opt_state, state.params)
  assert len(moments) == (2 if optimizer == "adam" else 1)
  for path, n in jax.tree_util.tree_leaves_with_path(hp["counts"]):
    get = lambda tree: functools.reduce(lambda t, k: t[k.key], path, tree)
    pruned = ~get(mask)
    assert int(jnp.sum(get(mask))) == int(n[0])
    assert float(jnp.abs(jnp.where(pruned, get(state.params), 0)).max()) == 0.0
    for moment in moments:
      assert float(jnp.abs(jnp.where(pruned, get(moment), 0)).max()) == 0.0
    assert int(jnp.count_nonzero(get(state.params))) == int(n[0])   # the kept ones moved


def _minmax_gain(gamma):
  _, _, _, recipe, state, hp = _setup("minmax", **{"minmax.gamma": gamma,
                                                   "minmax.attack_learning_rate": 1e-3})
  step = steps.lift(recipe.phases[0].step, "vmap")
  key = jax.random.PRNGKey(42)
  members = _batch(key, 1, n=32, side=1)            # a tiny set the classifier memorises
  members["mem/image"] = members["image"][:, None]
  members["mem/label"] = members["label"][:, None]
  gains = []
  for _ in range(150):
    state, metrics = step(state, members, hp)
    gains.append(float(metrics["attack_gain"][0]))
  return float(np.mean(gains[-30:]))


def test_minmax_lowers_the_attack_gain_relative_to_gamma_zero():
  undefended, defended = _minmax_gain(0.0), _minmax_gain(3.0)
  # The gain lives in [-log 4, 0]; -log 4 is a coin flip.
  assert defended < undefended - 0.05, (defended, undefended)


def test_trial_strategies_compute_the_same_trials():
  # Plain SGD: Adam would magnify the last-bit differences of grouped vs plain convolutions.
  _, _, _, recipe, state, hp = _setup("baseline", num_trials=2, tx=optax.sgd(0.05))
  step = recipe.phases[0].step
  out = {}
  for strategy in ("vmap", "loop", "map"):
    s = jax.tree.map(jnp.copy, state)
    lifted = steps.lift(step, strategy)
    for i in range(5):
      s, _ = lifted(s, _batch(jax.random.PRNGKey(i), 2), hp)
    out[strategy] = s.params
  for strategy in ("loop", "map"):
    for a, b in zip(jax.tree.leaves(out["vmap"]), jax.tree.leaves(out[strategy])):
      np.testing.assert_allclose(a, b, atol=1e-5)


def test_dp_recipe_is_calibrated_to_the_target_epsilon():
  _, _, _, recipe, state, hp = _setup("dp", **{"dp.epsilon": 2.0, "train.epochs": 3.0})
  report = recipe.report
  assert 0.97 * 2.0 <= report["dp_epsilon"] <= 2.0
  assert report["dp_noise_multiplier"] > 0
  # Accounted at what the run does: batches of 64 of the 640 members, 3 epochs of 10 steps.
  assert recipe.total_steps == 30
  assert report["dp_epsilon"] == pytest.approx(dp_lib.epsilon(
      report["dp_noise_multiplier"], 64 / 640, 30, 1e-5), rel=1e-9)
  step = steps.lift(recipe.phases[0].step, "vmap")
  state, metrics = step(state, _batch(jax.random.PRNGKey(0), 1), hp)
  assert np.isfinite(float(metrics["loss"][0]))
  assert 0.0 <= float(metrics["clipped_fraction"][0]) <= 1.0


def test_dp_refuses_batchnorm_models():
  config = config_lib.base()
  config.methods = ("dp",)
  config.model.name = "resnet18"
  with pytest.raises(Exception, match="model.norm"):
    config_lib.validate(config)


@pytest.mark.parametrize("method", ["baseline", "pruning", "minmax", "pruning_minmax", "dp"])
def test_total_steps_is_known_before_the_recipe_is_built(method):
  config, model, tx, _, _, _ = _setup("baseline")
  built = methods.recipe(method, config, model, tx, steps_per_epoch=7, num_classes=10,
                         num_members=640)
  assert methods.total_steps(method, config, 7) == built.total_steps > 0
  assert methods.phase_steps(method, config, 7) == tuple(p.steps for p in built.phases)


def _tree_get(tree, path):
  return functools.reduce(lambda t, k: t[k.key], path, tree)


def test_admm_w_step_gradient_is_the_task_gradient_plus_rho_times_w_minus_z_plus_u():
  # SGD at rate 1: the update is minus the gradient, so the step's gradient is read off it.
  rho = 0.3
  _, model, tx, recipe, state, hp = _setup("pruning", tx=optax.sgd(1.0), **{"admm.rho": rho})
  admm = _phase(recipe, "admm")
  state = steps.lift_update(lambda s, h: (admm.enter(s, h), {}), "vmap")(state, hp)[0]
  # Z and U as after some updates: any values, not the zeros and projection of `enter`.
  noise = lambda salt: jax.tree.map(
      lambda x: 0.1 * jax.random.normal(jax.random.PRNGKey(salt), x.shape), state.params)
  state = state.replace(extra=state.extra._replace(z=noise(1), u=noise(2)))
  batch = _batch(jax.random.PRNGKey(3), 1)
  one = lambda tree: jax.tree.map(lambda x: x[0], tree)
  task = jax.grad(lambda p: steps.classifier_loss(p, {}, model, one(batch))[0])(
      one(state.params))
  before = jax.device_get(state)
  after, _ = steps.lift(admm.step, "vmap")(state, batch, hp)
  for path, n in jax.tree_util.tree_leaves_with_path(hp["counts"], is_leaf=lambda x: x is None):
    w, z, u = (_tree_get(before.params, path)[0], _tree_get(before.extra.z, path)[0],
               _tree_get(before.extra.u, path)[0])
    grad = w - _tree_get(after.params, path)[0]
    want = _tree_get(task, path) + (rho * (w - z + u) if n is not None else 0.0)
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)


def _dp_update(state, batch, hp, step):
  before = jax.device_get(state.params)
  after, _ = step(state, batch, hp)
  return after, jax.tree.map(lambda a, b: np.asarray(b) - np.asarray(a), jax.device_get(
      after.params), before)


def test_dp_step_adds_fresh_gaussian_noise_of_sigma_clip_over_batch_every_step():
  # SGD at rate 1: update = -(sum of clipped gradients + N(0, sigma^2 C^2)) / B, B the
  # expected batch size data.batch_size. Running the same step with the noise multiplier at 0
  # isolates the noise.
  sigma, clip, b = 1.7, 0.5, 32
  _, _, _, recipe, state, hp = _setup("dp", tx=optax.sgd(1.0),
                                      **{"dp.clip_norm": clip, "data.batch_size": b})
  step = steps.lift(recipe.phases[0].step, "vmap", donate=False)
  noisy = {"noise_multiplier": jnp.full((1,), sigma, jnp.float32)}
  quiet = {"noise_multiplier": jnp.zeros((1,), jnp.float32)}
  noises = []
  for i in range(2):
    batch = _batch(jax.random.PRNGKey(10 + i), 1, n=b)
    _, with_noise = _dp_update(state, batch, noisy, step)
    _, without = _dp_update(state, batch, quiet, step)
    noises.append(np.concatenate([(x - y).ravel() for x, y in zip(
        jax.tree.leaves(with_noise), jax.tree.leaves(without))]))
    state, _ = step(state, batch, noisy)       # the next step starts where this one ended
  for noise in noises:
    assert np.std(noise) == pytest.approx(sigma * clip / b, rel=0.02)
  assert abs(np.corrcoef(noises[0], noises[1])[0, 1]) < 0.02   # a fresh key each step


def test_minmax_classifier_step_lowers_the_inner_attacks_gain_on_its_members():
  # Same state, batch and attack update; only gamma differs. The attack's gain on the
  # member batch, after the classifier step, must be lower with gamma > 0 (Eq. 3's sign).
  _, model, _, recipe, state, _ = _setup("minmax", tx=optax.sgd(0.5))
  step = steps.lift(recipe.phases[0].step, "vmap", donate=False)
  batch = _batch(jax.random.PRNGKey(4), 1, side=1)
  attack_model = attack_lib.create("nasr", 10)
  # An attack with a say: the initial N(0, 0.01^2) weights answer 0.5 to everything.
  att = state.extra.attack
  att = att.replace(params=jax.tree.map(lambda x: 20.0 * x, att.params))
  state = state.replace(extra=state.extra._replace(attack=att))
  gains = {}
  for gamma in (0.0, 5.0):
    after, _ = step(state, batch, {"gamma": jnp.full((1,), gamma, jnp.float32)})
    one = lambda tree: jax.tree.map(lambda x: x[0], tree)
    logits = model.apply({"params": one(after.params)}, batch["image"][0], train=False)
    member_logit = attack_model.apply({"params": one(after.extra.attack.params)},
                                      jax.nn.softmax(logits), batch["label"][0])
    gains[gamma] = float(jnp.mean(jax.nn.log_sigmoid(member_logit)))
  assert gains[5.0] < gains[0.0] - 1e-4, gains
