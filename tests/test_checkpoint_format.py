"""A defence's own state is typed (a NamedTuple); checkpoints written when it was one flat
dict (format 1) still restore into it, leaf for leaf, so an older workdir resumes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from miajax import checkpoint
from miajax import config as config_lib
from miajax import methods
from miajax import models
from miajax import steps
from miajax.defences import admm
from miajax.defences import minmax


def _stack(method, trials=2):
  config = config_lib.base()
  model, tx = models.create("lenet5", 10), optax.adam(1e-3)
  recipe = methods.recipe(method, config, model, tx, steps_per_epoch=10, num_classes=10,
                          num_members=640)
  init = functools.partial(steps.init, model=model, tx=tx, input_shape=(28, 28, 1),
                           extra_fn=recipe.extra)
  state = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(0), trials))
  # Values that tell the leaves apart, so a leaf restored into the wrong field would show.
  leaves, tree = jax.tree.flatten(state)
  return jax.tree.unflatten(tree, [x + i if x.dtype != jnp.bool_ else x
                                   for i, x in enumerate(leaves)])


def _save_format_1(workdir, names, state):
  """Writes `state` as miajax wrote checkpoints before typed states: extra as one flat dict."""
  for k, name in enumerate(names):
    trial = jax.tree.map(lambda x, k=k: x[k], state)
    flat = trial.replace(extra=checkpoint._flat(trial.extra))  # pylint: disable=protected-access
    assert isinstance(flat.extra, dict)
    manager = ocp.CheckpointManager(workdir / name / "checkpoints",
                                    item_names=("state", "meta"))
    manager.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(flat),
                                            meta=ocp.args.JsonSave({"step": 7})))
    manager.wait_until_finished()


def test_defence_states_are_typed():
  assert isinstance(_stack("pruning").extra, admm.AdmmState)
  composed = _stack("pruning_minmax").extra
  assert isinstance(composed, minmax.MinmaxState)
  assert isinstance(composed.inner, admm.AdmmState)
  assert _stack("minmax").extra.inner == {}


@pytest.mark.parametrize("method", ["pruning", "minmax", "pruning_minmax"])
def test_a_format_1_checkpoint_restores_into_the_typed_state_leaf_for_leaf(tmp_path, method):
  state = _stack(method)
  names = ["a", "b"]
  _save_format_1(tmp_path, names, state)
  like = jax.tree.map(jnp.zeros_like, state)
  step, restored = checkpoint.TrialCheckpoints(tmp_path, names).restore_latest(like)
  assert step == 7
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for want, got in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(want), np.asarray(got))


def test_a_typed_checkpoint_restores_as_written(tmp_path):
  state = _stack("pruning_minmax")
  ckpt = checkpoint.TrialCheckpoints(tmp_path, ["a", "b"])
  ckpt.save(3, state, [{}, {}])
  ckpt.wait()
  _, restored = ckpt.restore_latest(jax.tree.map(jnp.zeros_like, state))
  assert isinstance(restored.extra.inner, admm.AdmmState)
  for want, got in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(want), np.asarray(got))
