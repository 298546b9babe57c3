"""The defence registry is the one place that knows the defences: each declares what the run
needs, the declarations agree with what it builds, and a new defence is one module."""

import ast
import functools
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from miajax import config as config_lib
from miajax import defences
from miajax import models
from miajax import results
from miajax import steps
from miajax import trials as trials_lib
from miajax.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def _setup(method, tx=None, **overrides):
  config = config_lib.base()
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  model = models.create("lenet5", 10)
  tx = tx or optax.adam(1e-3)
  recipe = defences.get(method).recipe(config, model, tx, steps_per_epoch=7, num_classes=10,
                                       num_members=640)
  init = functools.partial(steps.init, model=model, tx=tx, input_shape=(28, 28, 1),
                           extra_fn=recipe.extra)
  state = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(0), 1))
  one = jax.tree.map(lambda x: x[0], state.params)
  hp = jax.tree.map(lambda x: jnp.asarray(x)[None], recipe.hp(one)) if recipe.hp else {}
  return config, model, recipe, state, hp


def _batch(key, n=32):
  k1, k2 = jax.random.split(key)
  return {"image": jax.random.normal(k1, (1, n, 28, 28, 1)),
          "label": jax.random.randint(k2, (1, n), 0, 10)}


def test_config_methods_are_the_registered_defences():
  assert config_lib.METHODS == defences.NAMES
  assert defences.NAMES[:5] == ("baseline", "pruning", "minmax", "pruning_minmax", "dp")
  assert "regularised" in config_lib.METHODS
  with pytest.raises(ValueError, match="unknown method 'nope'"):
    defences.get("nope")


def test_pruning_minmax_is_minmax_composed_around_admm():
  both = defences.get("pruning_minmax")
  assert both.phases == defences.get("pruning").phases
  assert both.traced == ("counts", "rho", "gamma")
  assert set(both.sweeps) == {"keep", "rho", "gamma"}
  assert both.added_terms("admm") == ("proximal", "adversarial")
  assert both.added_terms("retrain") == ("adversarial",)
  assert both.side_sets is defences.get("minmax").side_sets is not None


@pytest.mark.parametrize("name", defences.NAMES)
def test_each_defence_builds_what_it_declares(name):
  defence = defences.get(name)
  config, _, recipe, _, _ = _setup(name)
  assert tuple(p.name for p in recipe.phases) == tuple(phase for phase, _ in defence.phases)
  assert tuple(p.steps for p in recipe.phases) == defence.phase_steps(config, 7)
  one = jax.tree.map(lambda x: x[0], _setup(name)[3].params)
  assert tuple(recipe.hp(one) if recipe.hp else ()) == defence.traced
  fields = set(recipe.report) | {recipe.max_batch_field} - {None}
  assert fields <= set(defence.report_fields) <= set(results.FIELDS + results.EXTRA_FIELDS)
  for section, values in defence.sections.items():
    assert dict(config[section]) == dict(values)          # base() holds every section
  for key, (field, _) in defence.sweeps.items():
    assert config.sweep[key] == () and defences.field_value(config, field) is not None


@pytest.mark.parametrize("module", ["train.py", "stack.py"])
def test_the_trainer_names_no_defence(module):
  names = re.compile(r"\b(" + "|".join(defences.NAMES) + r")\b")
  source = (ROOT / "miajax" / module).read_text()
  strings = [n.value for n in ast.walk(ast.parse(source))
             if isinstance(n, ast.Constant) and isinstance(n.value, str)]
  assert not [s for s in strings if names.search(s)]


# ------------------------------------------------------------------ regularised


def test_regularised_step_gradient_is_the_task_gradient_plus_weight_decay_times_w():
  # SGD at rate 1: the update is minus the gradient, so the step's gradient is read off it.
  wd = 0.3
  _, model, recipe, state, hp = _setup("regularised", tx=optax.sgd(1.0),
                                       **{"regularised.weight_decay": wd})
  batch = _batch(jax.random.PRNGKey(3))
  one = lambda tree: jax.tree.map(lambda x: x[0], tree)
  task = jax.grad(lambda p: steps.classifier_loss(p, {}, model, one(batch))[0])(
      one(state.params))
  before = jax.device_get(state.params)
  after, metrics = steps.lift(recipe.phases[0].step, "vmap")(state, batch, hp)
  grad = jax.tree.map(lambda w, a: w[0] - a[0], before, jax.device_get(after.params))
  jax.tree.map(lambda g, t, w: np.testing.assert_allclose(g, t + wd * w[0], rtol=1e-4,
                                                          atol=1e-6), grad, task, before)
  squares = sum(float(np.sum(np.square(w))) for w in jax.tree.leaves(before))
  assert float(metrics["loss"][0] - metrics["cross_entropy"][0]) == pytest.approx(
      wd / 2 * squares, rel=1e-4)


def test_regularised_training_ends_with_a_smaller_weight_norm_than_the_baselines():
  norms = {}
  for name in ("baseline", "regularised"):
    _, _, recipe, state, hp = _setup(name, tx=optax.sgd(0.05),
                                     **{"regularised.weight_decay": 0.5})
    step = steps.lift(recipe.phases[0].step, "vmap")
    for k in range(5):
      state, _ = step(state, _batch(jax.random.PRNGKey(k)), hp)
    norms[name] = float(optax.tree.norm(state.params))
  assert norms["regularised"] < 0.99 * norms["baseline"]


def test_weight_decay_sweeps_as_trials_of_the_regularised_stack():
  c = config_lib.base()
  c.methods = ("baseline", "regularised")
  c.sweep.weight_decay = (0.1, 0.001)
  config_lib.validate(c)
  names = [t.name for t in trials_lib.make(c)]
  assert names == ["baseline-seed0", "regularised-wd0.10-seed0", "regularised-wd1e-03-seed0"]
  c.regularised.weight_decay = -1.0
  with pytest.raises(UserError, match="regularised.weight_decay"):
    config_lib.validate(c)
