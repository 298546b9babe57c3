"""Tests for miajax.attack: the NN attack models, their gain, training and evaluation."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from miajax import attack
from miajax import metrics
from miajax.errors import UserError

C = 10


class _MLP(nn.Module):
  """A classifier wide enough to memorise a few hundred random points."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(C)(nn.relu(nn.Dense(256)(x)))


def _halves(member_logits, member_labels, nonmember_logits, nonmember_labels):
  """Attack-train and audit sets: disjoint halves of the members and of the non-members."""
  h = member_logits.shape[0] // 2
  g = nonmember_logits.shape[0] // 2
  probs_in = np.asarray(jax.nn.softmax(member_logits))
  probs_out = np.asarray(jax.nn.softmax(nonmember_logits))
  train = (probs_in[:h], member_labels[:h], probs_out[:g], nonmember_labels[:g])
  audit_probs = np.concatenate([probs_in[h:], probs_out[g:]])
  audit_labels = np.concatenate([member_labels[h:], nonmember_labels[g:]])
  audit_logits = np.concatenate([member_logits[h:], nonmember_logits[g:]])
  audit_is_member = np.r_[np.ones(len(probs_in) - h, bool), np.zeros(len(probs_out) - g, bool)]
  train_logits = np.concatenate([member_logits[:h], nonmember_logits[:g]])
  train_labels = np.concatenate([member_labels[:h], nonmember_labels[:g]])
  train_is_member = np.r_[np.ones(h, bool), np.zeros(g, bool)]
  return dict(train=train, audit_probs=audit_probs, audit_labels=audit_labels,
              audit_logits=audit_logits, audit_is_member=audit_is_member,
              train_logits=train_logits, train_labels=train_labels,
              train_is_member=train_is_member)


@pytest.fixture(scope="module")
def memorised():
  """An MLP trained to 100% on 256 random points with random labels; 256 fresh non-members."""
  n, d = 256, 20
  kx, ky, kxn, kyn, ki = jax.random.split(jax.random.PRNGKey(0), 5)
  x = jax.random.normal(kx, (n, d))
  y = jax.random.randint(ky, (n,), 0, C)
  x_out = jax.random.normal(kxn, (n, d))
  y_out = jax.random.randint(kyn, (n,), 0, C)
  model = _MLP()
  tx = optax.adam(1e-2)
  params = model.init(ki, x)

  def step(carry, _):
    params, opt_state = carry
    loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply(p, x), y).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, None, length=300))(
      (params, tx.init(params)))
  logits_in = np.asarray(model.apply(params, x), np.float64)
  logits_out = np.asarray(model.apply(params, x_out), np.float64)
  assert (logits_in.argmax(1) == np.asarray(y)).mean() == 1.0
  return _halves(logits_in, np.asarray(y), logits_out, np.asarray(y_out))


@pytest.fixture(scope="module")
def memorised_attack(memorised):
  return attack.train(jax.random.PRNGKey(1), "nasr", C, attack.AttackSet.of(*memorised["train"]),
                      attack.Schedule(epochs=100))


def test_memorising_classifier_is_attackable(memorised, memorised_attack):
  m = memorised
  p = attack.predict(memorised_attack, "nasr", C, m["audit_probs"], m["audit_labels"])
  out = attack.evaluate(p, m["audit_is_member"])
  assert out["attack_accuracy"] > 0.8
  assert out["attack_auc"] > 0.8
  assert out["gain"] > -math.log(4.0)
  loss = metrics.threshold_attack(
      metrics.loss_score(m["train_logits"], m["train_labels"]), m["train_is_member"],
      metrics.loss_score(m["audit_logits"], m["audit_labels"]), m["audit_is_member"])
  assert loss["accuracy"] > 0.8


def test_same_distribution_is_not_attackable():
  """Members and non-members drawn from one distribution: nothing to find.

  A fixed random classifier on Gaussian inputs; four disjoint samples of n = 1000 (attack
  members, attack non-members, audit members, audit non-members). The trained attack is a
  fixed function of data independent of the audit set, so under this null its audit numbers
  are centred on 0.5 with standard errors sqrt(1/(8n)) = 0.011 (balanced accuracy) and
  sqrt((2n+1)/(12n^2)) = 0.013 (AUC, Mann-Whitney). We allow 3 standard errors: 0.034 and
  0.039.
  """
  n, d = 1000, 20
  kw, kx, ky = jax.random.split(jax.random.PRNGKey(2), 3)
  w = 3.0 * jax.random.normal(kw, (d, C)) / math.sqrt(d)
  x = jax.random.normal(kx, (4 * n, d))
  logits = np.asarray(x @ w, np.float64)
  labels = np.asarray(jax.random.randint(ky, (4 * n,), 0, C))
  # Order: attack members, audit members, attack non-members, audit non-members.
  m = _halves(logits[:2 * n], labels[:2 * n], logits[2 * n:], labels[2 * n:])
  params = attack.train(jax.random.PRNGKey(3), "nasr", C, attack.AttackSet.of(*m["train"]),
                        attack.Schedule(epochs=10))
  p = attack.predict(params, "nasr", C, m["audit_probs"], m["audit_labels"])
  out = attack.evaluate(p, m["audit_is_member"])
  acc_tol = 3 * math.sqrt(1 / (8 * n))
  auc_tol = 3 * math.sqrt((2 * n + 1) / (12 * n * n))
  assert abs(out["attack_accuracy"] - 0.5) < acc_tol
  assert abs(out["attack_auc"] - 0.5) < auc_tol
  loss = metrics.threshold_attack(
      metrics.loss_score(m["train_logits"], m["train_labels"]), m["train_is_member"],
      metrics.loss_score(m["audit_logits"], m["audit_labels"]), m["audit_is_member"])
  assert abs(loss["accuracy"] - 0.5) < acc_tol
  assert abs(loss["auc"] - 0.5) < auc_tol


def test_kernel_init_std():
  """Kernels start N(0, 0.01^2) (standard deviation 0.01), biases at zero.

  500 classes, so each kernel but Nasr's 64x1 output has >= 1000 entries and its sample std
  is within 10% of 0.01 (over 4 standard errors of the estimate, 1/sqrt(2 * 1000) = 2.2%).
  """
  classes = 500
  for kind in attack.KINDS:
    model = attack.create(kind, classes)
    params = attack.init_state(jax.random.PRNGKey(0), model, classes, 1e-3).params
    leaves = jax.tree_util.tree_leaves_with_path(params)
    kernels = [np.asarray(v) for p, v in leaves if "kernel" in jax.tree_util.keystr(p)]
    biases = [np.asarray(v) for p, v in leaves if "bias" in jax.tree_util.keystr(p)]
    assert kernels and len(kernels) == len(biases)
    for b in biases:
      assert not b.any()
    for k in kernels:
      if k.size >= 1000:
        assert k.std() == pytest.approx(0.01, rel=0.1)
        assert abs(k.mean()) < 0.001
    small = np.concatenate([k.ravel() for k in kernels if k.size < 1000] or [np.zeros(0)])
    assert (np.abs(small) < 0.06).all()  # 6 standard deviations


def test_nasr_architecture():
  model = attack.create("nasr", C)
  params = attack.init_state(jax.random.PRNGKey(0), model, C, 1e-3).params
  shapes = {k: v["kernel"].shape for k, v in params.items()}
  assert shapes == {
      "prediction_0": (C, 1024), "prediction_1": (1024, 512), "prediction_2": (512, 64),
      "label_0": (C, 512), "label_1": (512, 64),
      "joint_0": (128, 256), "joint_1": (256, 64), "output": (64, 1)}
  one = attack.init_state(jax.random.PRNGKey(0), attack.create("one_layer", C), C, 1e-3)
  assert one.params["output"]["kernel"].shape == (2 * C, 1)
  probs = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(1), (5, C)))
  assert model.apply({"params": params}, probs, jnp.arange(5)).shape == (5,)


def test_create_rejects_unknown_kind():
  with pytest.raises(UserError, match="attack.kind"):
    attack.create("shadow", C)
  with pytest.raises(UserError, match="num_classes"):
    attack.create("nasr", 1)


def test_gain_is_differentiable_in_probs(memorised, memorised_attack):
  probs_in, y_in, probs_out, y_out = memorised["train"]
  model = attack.create("nasr", C)
  grad = jax.jit(jax.grad(attack.gain_loss, argnums=(2, 4)), static_argnums=1)
  init = attack.init_state(jax.random.PRNGKey(0), model, C, 1e-3).params
  for params in (init, memorised_attack):
    g_in, g_out = grad(params, model, probs_in, y_in, probs_out, y_out)
    for g in (g_in, g_out):
      assert np.isfinite(g).all() and np.abs(g).max() > 0
  # The trained attack's gain moves visibly with the classifier's outputs.
  assert np.abs(g_in).max() > 1e-3


def test_gain_loss_is_minus_empirical_gain(memorised, memorised_attack):
  probs_in, y_in, probs_out, y_out = memorised["train"]
  model = attack.create("nasr", C)
  loss = attack.gain_loss(memorised_attack, model, probs_in, y_in, probs_out, y_out)
  p = attack.predict(memorised_attack, "nasr", C, np.concatenate([probs_in, probs_out]),
                     np.concatenate([y_in, y_out]))
  is_member = np.r_[np.ones(len(y_in), bool), np.zeros(len(y_out), bool)]
  # The empirical gain clips at 1e-7; the loss does not. They agree unless p saturates.
  assert float(loss) == pytest.approx(-metrics.empirical_gain(p, is_member), rel=1e-3)
  init = attack.init_state(jax.random.PRNGKey(0), model, C, 1e-3).params
  assert float(attack.gain_loss(init, model, probs_in, y_in, probs_out, y_out)) == (
      pytest.approx(math.log(4.0), abs=1e-3))


def test_attack_step_improves_gain_and_does_not_recompile(memorised):
  probs_in, y_in, probs_out, y_out = memorised["train"]
  batch_in = (probs_in[:64], y_in[:64])
  batch_out = (probs_out[:64], y_out[:64])
  model = attack.create("one_layer", C)
  tx = attack.optimizer(1e-2)
  state = attack.init_state(jax.random.PRNGKey(0), model, C, 1e-2)
  state, first = attack.attack_step(state, model, tx, batch_in, batch_out)
  size = attack.attack_step._cache_size()
  for _ in range(50):
    # Equal but distinct model and optimizer objects must hit the same compiled step.
    state, last = attack.attack_step(state, attack.create("one_layer", C),
                                     attack.optimizer(1e-2), batch_in, batch_out)
  assert attack.attack_step._cache_size() == size
  assert int(state.step) == 51
  assert set(first) == {"loss", "gain"}
  assert float(last["gain"]) > float(first["gain"])


def test_train_is_seeded_and_compiles_one_epoch(memorised):
  probs_in, y_in, probs_out, y_out = memorised["train"]
  size = attack._train_epoch._cache_size()
  data = attack.AttackSet.of(probs_in, y_in, probs_out[:100], y_out[:100])
  a = attack.train(jax.random.PRNGKey(5), "one_layer", C, data,
                   attack.Schedule(epochs=3, batch_size=32))
  assert attack._train_epoch._cache_size() == size + 1
  b = attack.train(jax.random.PRNGKey(5), "one_layer", C, data,
                   attack.Schedule(epochs=4, batch_size=32))
  c = attack.train(jax.random.PRNGKey(5), "one_layer", C, data,
                   attack.Schedule(epochs=3, batch_size=32))
  assert attack._train_epoch._cache_size() == size + 1
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, c)
  assert not np.array_equal(a["output"]["kernel"], b["output"]["kernel"])


def test_train_rejects_bad_input(memorised):
  probs_in, y_in, probs_out, y_out = memorised["train"]
  with pytest.raises(UserError, match="attack.kind"):
    attack.train(jax.random.PRNGKey(0), "x", C,
                 attack.AttackSet.of(probs_in, y_in, probs_out, y_out), attack.Schedule(epochs=1))
  with pytest.raises(UserError, match="attack.epochs"):
    attack.train(jax.random.PRNGKey(0), "nasr", C,
                 attack.AttackSet.of(probs_in, y_in, probs_out, y_out),
                 attack.Schedule(epochs=-1))
  with pytest.raises(UserError, match="member_probs"):
    attack.train(jax.random.PRNGKey(0), "nasr", C,
                 attack.AttackSet.of(probs_in[:, :3], y_in, probs_out, y_out),
                 attack.Schedule(epochs=1))


def test_evaluate_keys_and_values():
  is_member = np.r_[np.ones(500, bool), np.zeros(500, bool)]
  p = np.where(is_member, 0.9, 0.1)
  out = attack.evaluate(p, is_member)
  assert set(out) == {"attack_accuracy", "attack_accuracy_at_half", "attack_auc",
                      "attack_tpr_at_fpr", "gain", "js_divergence", "notes"}
  assert out["attack_accuracy"] == 1.0 and out["attack_auc"] == 1.0
  # 500 non-members measure FPR 1% but not 0.1%: that one is null, with its reason.
  assert out["attack_tpr_at_fpr"] == {"0.001": None, "0.01": 1.0}
  assert out["notes"] == ["attack_tpr_at_fpr: TPR at FPR 0.001: null, 500 non-members were "
                          "scored; an FPR below 0.001 needs at least "
                          f"{metrics.min_nonmembers(0.001)}"]
  assert out["gain"] == pytest.approx(2 * math.log(0.9))
  assert out["js_divergence"] == pytest.approx(math.log(0.9) + math.log(2.0))
  for v in (out["attack_accuracy"], out["attack_auc"], out["gain"], out["js_divergence"]):
    assert type(v) is float
  coin = attack.evaluate(np.full(1000, 0.5), is_member)
  assert coin["attack_accuracy"] == 0.5 and coin["attack_auc"] == 0.5
  assert coin["js_divergence"] == pytest.approx(0.0, abs=1e-12)


def test_evaluate_reports_accuracy_at_the_given_threshold_and_at_one_half():
  # Scores shifted below 0.5 (a miscalibrated attack): p >= 0.5 flags nobody, while a
  # threshold of 0.3 separates the groups.
  is_member = np.r_[np.ones(100, bool), np.zeros(100, bool)]
  p = np.where(is_member, 0.4, 0.2)
  out = attack.evaluate(p, is_member, threshold=0.3)
  assert out["attack_accuracy"] == 1.0
  assert out["attack_accuracy_at_half"] == 0.5
  assert attack.evaluate(p, is_member)["attack_accuracy"] == 0.5
  with pytest.raises(UserError, match="threshold"):
    attack.evaluate(p, is_member, threshold=float("nan"))


def _no_signal(seed, n):
  """Softmax outputs and labels drawn at random: membership is a coin flip of nothing."""
  rng = np.random.default_rng(seed)
  probs = rng.dirichlet(np.full(C, 0.3), size=n).astype(np.float32)
  return probs, rng.integers(0, C, n)


def test_early_stopping_stops_early_when_more_epochs_only_overfit():
  # 128 members and 128 non-members with nothing to tell them apart: whatever the attack
  # learns is its training set's noise, so the held-out gain only falls as it trains.
  p_in, y_in = _no_signal(0, 128)
  p_out, y_out = _no_signal(1, 128)
  p_held, y_held = _no_signal(2, 400)
  held_is_member = np.arange(400) < 200
  _, epoch, gains = attack.train_early_stopped(
      jax.random.PRNGKey(0), "nasr", C, attack.AttackSet.of(p_in, y_in, p_out, y_out),
      attack.HeldOut(p_held, y_held, held_is_member),
      attack.Schedule(epochs=30, learning_rate=3e-3))
  assert len(gains) == 31 and epoch == int(np.argmax(gains))
  assert epoch <= 5
  assert gains[-1] < gains[epoch] - 0.05          # 30 epochs would have overfit


def test_early_stopping_keeps_training_while_the_held_out_gain_improves(memorised):
  probs_in, y_in, probs_out, y_out = memorised["train"]
  h = 32
  fit = (probs_in[h:], y_in[h:], probs_out[h:], y_out[h:])
  params, epoch, gains = attack.train_early_stopped(
      jax.random.PRNGKey(1), "nasr", C, attack.AttackSet.of(*fit), attack.HeldOut(
          np.concatenate([probs_in[:h], probs_out[:h]]), np.concatenate([y_in[:h], y_out[:h]]),
          np.arange(2 * h) < h), attack.Schedule(epochs=30))
  assert epoch >= 20 and gains[epoch] > gains[0] + 0.03
  # The kept parameters are exactly `train`'s after that many epochs.
  again = attack.train(jax.random.PRNGKey(1), "nasr", C, attack.AttackSet.of(*fit),
                       attack.Schedule(epochs=epoch))
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, again)


def test_early_stopping_with_patience_stops_the_run():
  p_in, y_in = _no_signal(0, 128)
  p_out, y_out = _no_signal(1, 128)
  p_held, y_held = _no_signal(2, 200)
  data = attack.AttackSet.of(p_in, y_in, p_out, y_out)
  _, epoch, gains = attack.train_early_stopped(
      jax.random.PRNGKey(0), "one_layer", C, data,
      attack.HeldOut(p_held, y_held, np.arange(200) < 100),
      attack.Schedule(epochs=50, batch_size=32, patience=3))
  assert len(gains) == epoch + 4
  with pytest.raises(UserError, match="patience"):
    attack.train_early_stopped(jax.random.PRNGKey(0), "one_layer", C, data,
                               attack.HeldOut(p_held, y_held, np.arange(200) < 100),
                               attack.Schedule(epochs=5, patience=0))
  with pytest.raises(UserError, match="held_is_member"):
    attack.train_early_stopped(jax.random.PRNGKey(0), "one_layer", C, data,
                               attack.HeldOut(p_held, y_held, np.ones(200, bool)),
                               attack.Schedule(epochs=5))


def test_log_features_tell_apart_margins_where_float32_softmax_saturates():
  """Two members predicted right by margins of 20 and 40 nats. In float32 softmax p_y is 1.0
  for both and the other classes differ by e^-20 ~ 2e-9, nothing a network whose weights start
  at N(0, 0.01^2) can resolve. Their log-probabilities stay 20 nats apart in every other class
  and distinct in the label's; their log-losses are 20 apart in the label's."""
  logits = np.zeros((2, C), np.float32)
  logits[:, 3] = [20.0, 40.0]
  probs = attack.features(logits, "probs")
  assert probs.dtype == np.float32 and probs[0, 3] == probs[1, 3] == 1.0
  assert np.abs(probs[0] - probs[1]).max() < 1e-8
  logp = attack.features(logits, "log_probs")
  assert logp.dtype == np.float32
  others = np.arange(C) != 3
  np.testing.assert_allclose(logp[1, others] - logp[0, others], -20.0, rtol=1e-6)
  assert logp[0, 3] < logp[1, 3] < 0.0        # -9 e^-20 and -9 e^-40, both representable
  np.testing.assert_allclose(logp[0, 3], -9 * math.exp(-20), rtol=1e-5)
  loglosses = attack.features(logits, "log_losses")
  assert loglosses.dtype == np.float32
  np.testing.assert_allclose(loglosses[:, 3], [math.log(9) - 20, math.log(9) - 40], rtol=1e-6)
  np.testing.assert_allclose(loglosses[0, others], math.log(20), rtol=1e-6)
  np.testing.assert_allclose(loglosses[1, others], math.log(40), rtol=1e-6)
  np.testing.assert_array_equal(attack.features(logits), loglosses)      # the default
  # Clipped below: a margin of 1,000 nats reads as LOG_FLOOR, not -1000.
  logits[1, 3] = 1000.0
  assert attack.features(logits, "log_probs")[1].min() == attack.LOG_FLOOR
  assert attack.features(logits, "log_losses")[1, 3] == attack.LOG_FLOOR
  with pytest.raises(UserError, match="attack.features"):
    attack.features(logits, "logits")


def test_the_attack_finds_members_beyond_float32_saturation_only_on_log_features():
  """Every example is right by more than 20 nats, members by 10 more than non-members: an
  attack on float32 probabilities sees one point (AUC ~0.5), one on log features the gap."""
  rng = np.random.default_rng(0)
  n = 300
  labels = rng.integers(0, C, 4 * n)
  margin = 20.0 + 4 * rng.random(4 * n) + 10.0 * (np.arange(4 * n) % 2 == 0)
  logits = rng.normal(size=(4 * n, C))
  logits[np.arange(4 * n), labels] += margin
  is_member = np.arange(4 * n) % 2 == 0
  train, audit = np.arange(4 * n) < 2 * n, np.arange(4 * n) >= 2 * n
  aucs = {}
  for rep in attack.FEATURES:
    x = attack.features(logits, rep)
    params = attack.train(jax.random.PRNGKey(0), "nasr", C, attack.AttackSet.of(
        x[train & is_member], labels[train & is_member], x[train & ~is_member],
        labels[train & ~is_member]), attack.Schedule(epochs=20))
    p = attack.predict(params, "nasr", C, x[audit], labels[audit])
    aucs[rep] = metrics.roc_auc(p, is_member[audit])
  assert aucs["log_probs"] > 0.9 and aucs["log_losses"] > 0.9
  assert abs(aucs["probs"] - 0.5) < 0.1


def _class_0_signal(seed, n, member):
  """Probabilities whose class 0 sits higher for members: linear in the one-layer's input."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, C, n)
  z = rng.normal(size=(n, C))
  z[:, 0] += float(member)
  return attack.features(z, "probs"), labels


def test_early_stopping_on_auc_keeps_an_attack_that_ranks_but_is_overconfident():
  """A large step makes the attack confident at once: it ranks members well, but its held-out
  gain falls below a coin's. Stopping on the gain keeps the untrained attack (epoch 0, a random
  function of the outputs); stopping on the AUC keeps the trained one."""
  p_in, y_in = _class_0_signal(0, 128, True)
  p_out, y_out = _class_0_signal(1, 128, False)
  held = [_class_0_signal(2, 200, True), _class_0_signal(3, 200, False)]
  held_p, held_y = (np.concatenate(a) for a in zip(*held))
  held_m = np.arange(400) < 200
  audit = [_class_0_signal(4, 2000, True), _class_0_signal(5, 2000, False)]
  audit_p, audit_y = (np.concatenate(a) for a in zip(*audit))
  audit_m = np.arange(4000) < 2000
  aucs = {}
  for criterion in attack.EARLY_STOPPING:
    params, epoch, values = attack.train_early_stopped(
        jax.random.PRNGKey(0), "one_layer", C, attack.AttackSet.of(p_in, y_in, p_out, y_out),
        attack.HeldOut(held_p, held_y, held_m),
        attack.Schedule(epochs=20, batch_size=32, learning_rate=1.0, criterion=criterion))
    assert epoch == int(np.argmax(values))
    p = attack.predict(params, "one_layer", C, held_p, held_y)
    measure = metrics.empirical_gain if criterion == "gain" else metrics.roc_auc
    assert values[epoch] == measure(p, held_m)
    aucs[criterion] = (epoch, metrics.roc_auc(
        attack.predict(params, "one_layer", C, audit_p, audit_y), audit_m))
  assert aucs["gain"][0] == 0 and aucs["auc"][0] > 0
  assert aucs["auc"][1] > 0.65 and aucs["auc"][1] > aucs["gain"][1] + 0.15
  with pytest.raises(UserError, match="criterion"):
    attack.train_early_stopped(jax.random.PRNGKey(0), "one_layer", C,
                               attack.AttackSet.of(p_in, y_in, p_out, y_out),
                               attack.HeldOut(held_p, held_y, held_m),
                               attack.Schedule(epochs=1, criterion="loss"))
