"""The controls of "is it pruning, or any regulariser?" and the attacks that know the defence:
the narrow model, the dense weights pruning keeps, the pruning-aware (SAMIA-style) and the
differencing audits."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from miajax import attack
from miajax import audits
from miajax import config as config_lib
from miajax import defences
from miajax import evaluate
from miajax import models
from miajax import steps
from miajax import trials
from miajax.audits import differencing
from miajax.audits import samia
from miajax.defences import admm
from miajax.defences.defence import kept_dense, state_fields
from miajax.errors import UserError

C = 4
ATTACK = types.SimpleNamespace(kind="one_layer", epochs=30, batch_size=32, learning_rate=3e-2,
                               features="log_losses", bootstrap_replicates=200)


# ------------------------------------------------------------------------- the narrow model


def test_narrow_trains_its_own_model_and_its_trials_config_says_so():
  c = config_lib.base()
  c.methods = ("baseline", "pruning", "narrow")
  assert defences.get("narrow").model_name(c) == "lenet5_narrow"
  assert defences.get("pruning").model_name(c) == c.model.name == "lenet5"
  by_method = {t.method: trials.config_for(c, t).model.name for t in trials.make(c)}
  assert by_method == {"baseline": "lenet5", "pruning": "lenet5", "narrow": "lenet5_narrow"}
  assert c.model.name == "lenet5"                     # the run's config is untouched


def test_a_narrow_model_that_is_not_registered_is_a_one_line_error():
  c = config_lib.base()
  c.methods = ("narrow",)
  c.narrow.model = "lenet4"
  with pytest.raises(UserError, match=r"narrow\.model.*allowed: lenet5, ") as e:
    config_lib.validate(c)
  assert "\n" not in str(e.value)


def test_the_controls_config_adds_the_narrow_control_and_the_attacks_that_know_pruning():
  from miajax.configs import leaky_fashion_mnist_lenet5
  c = leaky_fashion_mnist_lenet5.get_config("controls")
  config_lib.validate(c)
  assert "narrow" in c.methods and c.pruning.keep_dense
  assert {"samia", "differencing", "grad_norm"} <= set(c.audits)
  # The default and the other variants keep neither the dense weights nor the new audits.
  plain = leaky_fashion_mnist_lenet5.get_config()
  assert not plain.pruning.keep_dense and "samia" not in plain.audits


def test_the_lira_stacks_of_the_leaky_regime_train_each_defence_as_the_leaky_config_does():
  # Only the lengths differ (half the epochs, rho growing faster to the same end): a LiRA
  # stack of a weaker Min-Max (say, at App. D's inert attack rate) would flatter the others.
  from miajax.configs import leaky_fashion_mnist_lenet5, lira_leaky_fashion_mnist_lenet5
  leaky = leaky_fashion_mnist_lenet5.get_config()
  lira = lira_leaky_fashion_mnist_lenet5.get_config()
  for section in ("minmax", "dp", "optimizer", "model"):
    assert lira[section].to_dict() == leaky[section].to_dict(), section
  assert lira.pruning.keep == leaky.pruning.keep and lira.admm.rho == leaky.admm.rho
  assert lira.admm.rho * lira.admm.rho_growth ** 10 == pytest.approx(
      leaky.admm.rho * leaky.admm.rho_growth ** 20, rel=0.01)


# ------------------------------------------------------------- the dense weights, kept


def _pruning_recipe(keep_dense, admm_epochs=1.0):
  c = config_lib.base()
  c.pruning.keep_dense = keep_dense
  c.pruning.keep = "0.5"
  c.admm.epochs = admm_epochs
  model = models.create("lenet5", 10)
  tx = optax.sgd(0.1)
  recipe = defences.get("pruning").recipe(c, model, tx, 2, 10, 100)
  state = steps.init(jax.random.PRNGKey(0), model, tx, (28, 28, 1), extra_fn=recipe.extra)
  return recipe, state, recipe.hp(state.params)


@pytest.mark.parametrize("admm_epochs", [1.0, 0.0])
def test_pruning_keeps_the_weights_of_its_pretrainings_end_through_the_prune(admm_epochs):
  recipe, state, hp = _pruning_recipe(True, admm_epochs)
  assert defences.get("pruning").dense_phase == "pretrain"
  assert defences.get("pruning_minmax").dense_phase == "pretrain"
  pretrained = state.params
  phases = {p.name: p for p in recipe.phases}
  if phases["admm"].steps:
    state = phases["admm"].enter(state, hp)
    # ADMM moves the weights; the kept ones must not follow.
    state = state.replace(params=jax.tree.map(lambda w: w + 1.0, state.params))
  state = phases["retrain"].enter(state, hp)
  kept = kept_dense(state.extra)
  assert "dense" in state_fields(state.extra)
  expected = pretrained
  for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)
  zeros = sum(int(jnp.sum(w == 0)) for w in jax.tree.leaves(state.params))
  assert zeros > 0 and sum(int(jnp.sum(w == 0)) for w in jax.tree.leaves(kept)) < zeros


def test_pruning_keeps_no_dense_weights_unless_asked():
  _, state, _ = _pruning_recipe(False)
  assert "dense" not in state_fields(state.extra) and not kept_dense(state.extra)
  assert defences.get("baseline").dense_phase is None


# --------------------------------------------------------------------- the attack's width


def test_the_attack_trains_and_predicts_on_more_features_than_classes():
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(200, C + 2)).astype(np.float32)
  labels = rng.integers(0, C, 200)
  params, _, _ = attack.train_early_stopped(
      jax.random.PRNGKey(0), "nasr", C,
      attack.AttackSet.of(feats[:80], labels[:80], feats[80:160], labels[80:160]),
      attack.HeldOut(feats[160:], labels[160:], np.arange(40) % 2 == 0),
      attack.Schedule(epochs=1), width=C + 2)
  assert attack.predict(params, "nasr", C, feats, labels).shape == (200,)
  with pytest.raises(UserError, match=r"probs: shape \(200, 4\); allowed: \(N, 6\)"):
    attack.predict(params, "nasr", C, feats[:, :C], labels)


# ------------------------------------------------------------------ the pruning-aware attack


def test_log_one_minus_gap_is_log_of_one_minus_top1_plus_top2_and_never_saturates():
  logits = np.array([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0], [60.0, 0.0, 1.0, 0.0]])
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  gap = samia.confidence_gap(logits)
  top = np.sort(p, -1)
  np.testing.assert_allclose(gap, top[:, -1] - top[:, -2], atol=1e-7)
  got = samia.log_one_minus_gap(logits)
  np.testing.assert_allclose(got[:2], np.log(1 - gap[:2]), rtol=1e-6)
  # Margin 59: 1 - gap = 2 e^-59 + 2 e^-60, about 7.3e-26; as a difference of probabilities
  # it rounds to 0.
  np.testing.assert_allclose(got[2], np.log(2 * np.exp(-59.0) + 2 * np.exp(-60.0)), rtol=1e-9)
  assert gap[2] == 1.0


def test_sensitivity_is_the_mean_change_of_the_labels_logit_scaled_confidence():
  model = models.create("lenet5", 10)
  state = steps.init(jax.random.PRNGKey(0), model, optax.sgd(0.1), (28, 28, 1))
  images = jax.random.normal(jax.random.PRNGKey(1), (3, 28, 28, 1))
  labels = jnp.array([0, 3, 7])
  noise = samia.noise(0, (28, 28, 1))
  assert noise.shape == (samia.DRAWS, 28, 28, 1)
  np.testing.assert_array_equal(noise, samia.noise(0, (28, 28, 1)))    # a function of the seed
  got = jax.jit(functools.partial(samia.sensitivity, model=model, noise=noise))(
      state, (images, labels))

  def phi(x):
    z = np.asarray(model.apply({"params": state.params}, x, train=False), np.float64)
    y = np.asarray(labels)
    others = z.copy()
    others[np.arange(3), y] = -np.inf
    return z[np.arange(3), y] - np.log(np.exp(others).sum(-1))

  want = np.mean([np.abs(phi(images + d) - phi(images)) for d in noise], axis=0)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  zero = jax.jit(functools.partial(samia.sensitivity, model=model,
                                   noise=np.zeros_like(noise)))(state, (images, labels))
  np.testing.assert_array_equal(zero, 0.0)


def _outputs(seed=0, n=150):
  """Two splits of n members and n non-members whose logits carry no membership signal."""
  rng = np.random.default_rng(seed)
  is_member = np.tile(np.repeat([True, False], n), 2)
  split = np.repeat(np.array([0, 1], np.int8), 2 * n)
  labels = rng.integers(0, C, 4 * n).astype(np.int32)
  logits = rng.normal(size=(4 * n, C))
  logits[np.arange(4 * n), labels] += 2.0
  return evaluate.Outputs(logits=logits[None].astype(np.float32), labels=labels,
                          is_member=is_member, split=split, index=np.arange(4 * n))


def _config(names):
  c = config_lib.base()
  c.audits = ("nn",) + tuple(names)
  for key, value in vars(ATTACK).items():
    c.attack[key] = value
  return c


def _stack(out, values: dict, extra_keys=()):
  """A one-trial "splits" stack with given outputs and per-example values."""
  stack = evaluate.StackOutputs(None, types.SimpleNamespace(input_shape=(28, 28, 1)),
                                splits=[None], split_keys=[None], per_example=lambda *a: None,
                                extra_keys=extra_keys)
  stack._cache[("membership", None)] = out    # pylint: disable=protected-access
  for name, v in values.items():
    stack._cache[(name, None)] = v[None]       # pylint: disable=protected-access
  return stack


def _audit(out, values, names, extra_keys=()):
  result, = audits.audit_stack(_stack(out, values, extra_keys), [3], _config(names), C,
                               swept=False)
  return result


def _planted_sensitivity(out, seed=0):
  """Members move less under noise: log-normal sensitivities, members' a third."""
  rng = np.random.default_rng(seed)
  return np.exp(rng.normal(size=out.labels.size)) * np.where(out.is_member, 1 / 3, 1.0)


def test_samia_finds_members_by_their_sensitivity_when_the_logits_do_not_tell():
  out = _outputs()
  result = _audit(out, {"samia_sensitivity": _planted_sensitivity(out)}, ["samia"])
  s = result.fields["samia"]
  assert result.fields["attack_auc"] < 0.6        # the paper's attack sees nothing
  assert s["auc"] > 0.75 and s["sensitivity_auc"] > 0.75 and abs(s["gap_auc"] - 0.5) < 0.1
  lo, hi = s["intervals"]["auc"]
  assert lo < s["auc"] < hi
  assert set(s["tpr_at_fpr"]) == {"0.001", "0.01"}
  assert s["tpr_at_fpr"]["0.001"] is None        # 150 non-members cannot show 0.1% FPR
  assert result.scores["score_samia"].shape == out.labels.shape
  assert "samia" not in result.fields["headline_selection"]


def test_samia_fits_nothing_on_the_audit_split():
  out = _outputs()
  sens = _planted_sensitivity(out)
  moved = sens.copy()
  moved[out.split == 1] = np.random.default_rng(5).permutation(moved[out.split == 1])
  a = _audit(out, {"samia_sensitivity": sens}, ["samia"]).fields["samia"]
  b = _audit(out, {"samia_sensitivity": moved}, ["samia"]).fields["samia"]
  assert a["split0_auc"] == b["split0_auc"] and a["epochs"] == b["epochs"]
  assert abs(b["auc"] - 0.5) < 0.1 < a["auc"] - 0.5


def _planted_dense(out, seed=0):
  """The dense model before pruning: members' label logits 3 higher (it memorised them)."""
  rng = np.random.default_rng(seed)
  dense = out.logits[0].astype(np.float64) + 0.3 * rng.normal(size=out.logits[0].shape)
  dense[np.arange(out.labels.size), out.labels] += 3.0 * out.is_member
  return dense.astype(np.float32)


def test_differencing_finds_members_in_the_dense_checkpoint_the_pruned_model_forgot():
  out = _outputs()
  result = _audit(out, {"dense_logits": _planted_dense(out)}, ["differencing"],
                  extra_keys=("z", "dense"))
  d = result.fields["differencing"]
  assert result.fields["attack_auc"] < 0.6
  # The one-layer attack cannot pick the label's feature out of each vector: weaker than
  # the loss, but it finds the members.
  assert d["auc"] > 0.6 and d["dense_loss_auc"] > 0.8
  # loss_dense - loss_final is lower for members (they lost the most): the sign chosen on
  # split 0 turns it around.
  assert d["loss_difference"]["sign"] == -1.0 and d["loss_difference"]["auc"] > 0.8
  assert d["intervals"]["auc"][0] < d["auc"] < d["intervals"]["auc"][1]
  np.testing.assert_array_equal(result.scores["dense_logits"], _planted_dense(out))


def test_differencing_is_null_on_a_stack_without_dense_weights():
  out = _outputs()
  result = _audit(out, {}, ["differencing"], extra_keys=("z", "u"))
  assert result.fields["differencing"] is None
  assert "score_differencing" not in result.scores


# ------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_a_controls_run_trains_the_narrow_model_and_audits_pruning_with_the_new_attacks(
    tmp_path, data_dir):
  from miajax import train
  c = config_lib.base()
  config_lib.smoke(c)
  c.data.dir = str(data_dir)
  c.methods = ("baseline", "pruning", "narrow")
  c.pruning.keep = "paper"
  c.pruning.keep_dense = True
  c.attack.epochs = 1
  c.audits = audits.DEFAULT + ("samia", "differencing")
  records = {r["method"]: r for r in train.train_and_evaluate(c, tmp_path)}
  assert records["narrow"]["model"] == "lenet5_narrow"
  assert records["narrow"]["weights_nonzero"] == records["narrow"]["weights_total"] == 4005
  assert abs(records["pruning"]["weights_nonzero"] - 4005) / 4005 < 0.01
  for r in records.values():
    assert 0.0 <= r["samia"]["auc"] <= 1.0
  assert records["baseline"]["differencing"] is None
  assert records["narrow"]["differencing"] is None
  d = records["pruning"]["differencing"]
  assert 0.0 <= d["auc"] <= 1.0 and 0.0 <= d["dense_test_accuracy"] <= 1.0
  scores = np.load(tmp_path / records["pruning"]["name"] / "scores.npz")
  assert scores["dense_logits"].shape == scores["logits"].shape
