"""The audit registry: a config's audits run on a trained stack, each set evaluated once, and
an audit is one module plus one `register` line."""

import types

import numpy as np
import pytest

from miajax import audits
from miajax import config as config_lib
from miajax import evaluate
from miajax import metrics
from miajax.audits import margin
from miajax.audits.audit import Audit
from miajax.errors import UserError

from test_audit import ATTACK, C, _outputs


def _config(names=audits.DEFAULT, shadows=0):
  c = config_lib.base()
  c.audits = tuple(names)
  c.lira.num_shadows = shadows
  c.attack.kind, c.attack.epochs = ATTACK.kind, ATTACK.epochs
  c.attack.batch_size, c.attack.learning_rate = ATTACK.batch_size, ATTACK.learning_rate
  c.attack.features = ATTACK.features
  return c


def _stack(out, trials=1):
  """A "splits" stack of `trials` models that share `out`'s split; counts what is evaluated."""
  evaluated = []

  def evaluate_fn(split, idx):
    evaluated.append((split, len(idx)))
    raise AssertionError("the test's outputs are given; nothing is evaluated")

  stack = evaluate.StackOutputs(evaluate_fn, None, splits=[None] * trials,
                                split_keys=[None] * trials)
  stack._cache[("membership", None)] = out   # pylint: disable=protected-access
  return stack


def test_the_default_audits_give_exactly_evaluate_audits_record_and_scores():
  out = _outputs()
  expected, expected_scores = evaluate.audit(out, 0, C, ATTACK, seed=3)
  result, = audits.audit_stack(_stack(out), [3], _config(), C, swept=False)
  fields = dict(result.fields)
  assert fields.pop("selection_accuracy") == evaluate.selection_accuracy(out)[0]
  assert fields.pop("selection_train_accuracy") == evaluate.selection_train_accuracy(out)[0]
  assert fields == expected
  assert result.scores.keys() == expected_scores.keys()
  for key, s in expected_scores.items():
    np.testing.assert_array_equal(result.scores[key], s)
  saved = result.files["scores.npz"]
  np.testing.assert_array_equal(saved["logits"], out.logits[0])
  np.testing.assert_array_equal(saved["score_nn"], expected_scores["score_nn"])


def test_margin_is_the_labels_lead_over_the_runner_up():
  logits = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
  np.testing.assert_allclose(margin.score(logits, np.array([0, 2])), [1.0, -4.0])


def test_an_opt_in_threshold_audit_joins_the_threshold_attacks_the_headline_and_the_intervals():
  out = _outputs()
  result, = audits.audit_stack(_stack(out), [0], _config(audits.DEFAULT + ("margin",)), C,
                               swept=False)
  f = result.fields
  assert set(f["threshold_attacks"]["margin"]) == {"accuracy", "auc", "tpr_at_fpr"}
  assert "margin" in f["headline_selection"] and "score_margin" in result.scores
  assert f["intervals"]["threshold_attacks"]["margin"]["auc"] is not None
  # Its split-0 choice reads split 0 only: the margin AUC there, recomputed.
  fit = out.split == 0
  assert f["headline_selection"]["margin"] == pytest.approx(metrics.roc_auc(
      margin.score(out.logits[0], out.labels)[fit], out.is_member[fit]))
  without, = audits.audit_stack(_stack(out), [0], _config(), C, swept=False)
  assert "margin" not in without.fields["threshold_attacks"]


def test_only_the_listed_audits_run():
  out = _outputs()
  result, = audits.audit_stack(_stack(out), [0], _config(("loss", "selection")), C,
                               swept=False)
  assert "attack_auc" not in result.fields and "attack_epochs" not in result.fields and "score_nn" not in result.scores
  assert set(result.fields["threshold_attacks"]) == {"loss", "loss_class", "entropy_class"}
  assert result.fields["threshold_attacks"]["entropy_class"] is None   # entropy not listed
  assert result.fields["headline_attack"] in ("loss", "loss_class")


def test_a_stack_evaluates_each_split_once_however_many_trials_share_it():
  calls = []
  out = _outputs(n=20)

  def evaluate_fn(split, idx):
    calls.append(split)
    return np.zeros((2, len(idx), C), np.float32)

  s = types.SimpleNamespace(attack_members=np.arange(20), reference=np.arange(20),
                            audit_members=np.arange(20, 40), audit=np.arange(20, 40))
  data = types.SimpleNamespace(train={"label": out.labels}, test={"label": out.labels})
  stack = evaluate.StackOutputs(evaluate_fn, data, splits=[s, s], split_keys=[None, None])
  stack.membership(0), stack.membership(1), stack.accuracies(1)
  assert len(calls) == 4                     # the four sets, once for both trials


def test_a_registered_audit_is_accepted_by_the_config_and_runs(monkeypatch):
  monkeypatch.setattr(audits, "_REGISTRY", dict(audits._REGISTRY))  # pylint: disable=protected-access
  monkeypatch.setattr(audits, "NAMES", audits.NAMES)
  audits.register(Audit(name="always_half", title="a constant",
                        score=lambda logits, labels: np.full(len(labels), 0.5)))
  c = _config(("always_half",))
  config_lib.validate(c)
  result, = audits.audit_stack(_stack(_outputs()), [0], c, C, swept=False)
  assert result.fields["threshold_attacks"]["always_half"]["auc"] == 0.5


def test_unknown_or_misplaced_audits_are_refused_in_one_line():
  with pytest.raises(UserError, match=r"audits=.*allowed: distinct names among nn, loss"):
    config_lib.validate(_config(("nn", "lossy")))
  with pytest.raises(UserError, match="allowed: at least one audit of a LiRA run: lira"):
    config_lib.validate(_config(("nn", "loss"), shadows=2))
  with pytest.raises(UserError, match="at least one audit of a membership-split run: nn"):
    config_lib.validate(_config(("lira",)))
  with pytest.raises(ValueError, match="registered already"):
    audits.register(margin.AUDIT)


def test_grad_norm_is_each_examples_gradient_norm_over_the_weights_that_survive():
  import jax
  import jax.numpy as jnp
  import optax
  from miajax import models
  from miajax import steps
  model = models.create("lenet5", 10)
  state = steps.init(jax.random.PRNGKey(0), model, optax.sgd(0.1), (28, 28, 1))
  # Prune half of fc1: its zeroed weights must not count.
  kernel = state.params["fc1"]["kernel"]
  params = dict(state.params) | {"fc1": dict(state.params["fc1"]) | {
      "kernel": kernel.at[: kernel.shape[0] // 2].set(0.0)}}
  state = state.replace(params=params)
  images = jax.random.normal(jax.random.PRNGKey(1), (3, 28, 28, 1))
  labels = jnp.array([0, 3, 7])
  got = jax.jit(lambda s, b: steps.example_grad_norms(s, b, model=model))(
      state, (images, labels))
  grad = jax.jit(jax.grad(lambda p, x, y: steps.cross_entropy(
      model.apply({"params": p}, x, train=False), y)))
  for i in range(3):
    g = grad(params, images[i:i + 1], labels[i:i + 1])
    masked = jax.tree.map(lambda gi, p: jnp.where(p != 0, gi, 0.0), g, params)
    want = jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(masked)))
    unmasked = jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(g)))
    np.testing.assert_allclose(got[i], want, rtol=1e-4)
    assert want < unmasked                       # the pruned weights' gradients were left out


@pytest.mark.slow
def test_a_run_listing_grad_norm_records_it_as_a_threshold_attack_and_a_headline_candidate(
    tmp_path, data_dir):
  from miajax import train
  c = config_lib.base()
  config_lib.smoke(c)
  c.data.dir = str(data_dir)
  c.attack.epochs = 1
  c.audits = audits.DEFAULT + ("grad_norm",)
  record, = train.train_and_evaluate(c, tmp_path)
  assert set(record["threshold_attacks"]["grad_norm"]) == {"accuracy", "auc", "tpr_at_fpr"}
  assert "grad_norm" in record["headline_selection"]
  scores = np.load(tmp_path / record["name"] / "scores.npz")
  assert scores["score_grad_norm"].shape == scores["labels"].shape
  assert np.all(scores["score_grad_norm"] <= 0)      # minus a norm
  # Its low-FPR number is that of its audit-split scores.
  test = scores["split"] == 1
  assert record["threshold_attacks"]["grad_norm"]["tpr_at_fpr"] == metrics.tpr_report(
      scores["score_grad_norm"][test], scores["is_member"][test])[0]


_TWO_DEVICE_GRAD_NORMS = """
import functools, jax, numpy as np, optax
from jax.sharding import NamedSharding, PartitionSpec as P
from miajax import models, steps
model = models.create("lenet5", 10)
state = steps.init(jax.random.PRNGKey(0), model, optax.sgd(0.1), (28, 28, 1))
x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (8, 28, 28, 1)))
y = np.arange(8) % 10
fn = steps.lift_eval(functools.partial(steps.example_grad_norms, model=model), "loop")
mesh = jax.make_mesh((1, 2), ("trial", "data"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
sh = NamedSharding(mesh, P("data"))
got = fn(jax.tree.map(lambda v: v[None], state), (jax.device_put(x, sh), jax.device_put(y, sh)))
print(" ".join(map(repr, np.asarray(got)[0].tolist())))
"""


@pytest.mark.slow
def test_grad_norms_on_a_batch_sharded_over_two_devices_equal_one_devices():
  # vmap(grad) over a "data"-sharded batch goes wrong on XLA:CPU (see dp.per_example_grads).
  import subprocess
  import sys
  import jax
  import jax.numpy as jnp
  import optax
  from conftest import cpu_env
  from miajax import models
  from miajax import steps
  out = subprocess.run([sys.executable, "-c", _TWO_DEVICE_GRAD_NORMS], env=cpu_env(2),
                       capture_output=True, text=True, check=True).stdout.split()
  model = models.create("lenet5", 10)
  state = steps.init(jax.random.PRNGKey(0), model, optax.sgd(0.1), (28, 28, 1))
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 28, 28, 1))
  want = steps.example_grad_norms(state, (x, jnp.arange(8) % 10), model=model)
  np.testing.assert_allclose(np.array(out, float), want, rtol=1e-4)
