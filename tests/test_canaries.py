"""Canaries: planted examples whose membership is a fair coin, kept out of every ordinary
set; the `epsilon` audit's bounds from them; and DP-SGD audited by them: a DP-SGD with its
noise switched off is caught, an honest one is not."""

import math

import numpy as np
import pytest
from scipy import stats

from miajax import audits
from miajax import canaries
from miajax import config as config_lib
from miajax import epsilon
from miajax import evaluate
from miajax import splits as splits_lib
from miajax.audits.audit import Target
from miajax.data import pipeline
from miajax.errors import UserError

ORDINARY = ("reference", "audit", "attack_members", "audit_members", "minmax_members",
            "minmax_reference")


def _data(num_train=600, num_test=300, classes=10):
  rng = np.random.default_rng(0)
  split = lambda n: {"image": rng.integers(0, 256, (n, 8, 8, 1)).astype(np.uint8),
                     "label": rng.integers(0, classes, n).astype(np.int32)}
  return pipeline.Data(name="digits", num_classes=classes, train=split(num_train),
                       test=split(num_test), augment=False, image_size=0)


def _config(count=100, kind="mislabel", seed=0):
  c = config_lib.base()
  c.canaries.count, c.canaries.kind, c.canaries.seed = count, kind, seed
  return c


def _planted(count=100, kind="mislabel", seed=0, train_size=200):
  data = _data()
  split = splits_lib.make(0, 600, 300, train_size)
  new_data, planted, trial_splits = canaries.insert(_config(count, kind, seed), data, split,
                                                    {"t": split})
  return data, split, new_data, planted, trial_splits


@pytest.mark.parametrize("kind", canaries.KINDS)
def test_canaries_are_new_rows_members_by_their_coin_and_in_no_ordinary_set(kind):
  data, split, new_data, planted, trial_splits = _planted(kind=kind)
  assert planted.same_as(trial_splits["t"])
  np.testing.assert_array_equal(planted.canaries, 600 + np.arange(100))
  assert new_data.num_examples("train") == 700
  # Members are exactly the ordinary members and the canaries whose coin came up heads.
  np.testing.assert_array_equal(
      planted.train, np.sort(np.r_[split.train, planted.canaries[planted.canary_member]]))
  for name in ORDINARY:       # every ordinary set is what it was, and holds no canary
    np.testing.assert_array_equal(getattr(planted, name), getattr(split, name))
    assert not np.isin(getattr(planted, name), planted.canaries).any()
  # The ordinary attack sets stay disjoint and balanced.
  assert not np.intersect1d(planted.reference, planted.audit).size
  assert not np.intersect1d(planted.attack_members, planted.audit_members).size
  assert len(planted.audit_members) == len(planted.audit)
  np.testing.assert_array_equal(new_data.train["image"][:600], data.train["image"])
  np.testing.assert_array_equal(new_data.train["label"][:600], data.train["label"])
  assert new_data.train["image"].shape == (700, 8, 8, 1)
  assert new_data.train["image"].dtype == np.uint8


def test_mislabelled_canaries_are_unused_train_images_under_a_wrong_label():
  data, split, new_data, planted, _ = _planted()
  images, labels = new_data.train["image"][600:], new_data.train["label"][600:]
  unused = np.setdiff1d(np.arange(600), split.train)
  source = [np.flatnonzero((data.train["image"] == im).all(axis=(1, 2, 3))) for im in images]
  assert all(np.isin(s, unused).any() for s in source)
  right = [data.train["label"][s[np.isin(s, unused)][0]] for s in source]
  assert np.all(labels != np.asarray(right))


def test_the_coins_are_fair_and_a_pure_function_of_the_canary_seed():
  *_, a, _ = _planted(count=2000, kind="ood", seed=7)
  *_, b, _ = _planted(count=2000, kind="ood", seed=7)
  *_, c, _ = _planted(count=2000, kind="ood", seed=8)
  np.testing.assert_array_equal(a.canary_member, b.canary_member)
  assert not np.array_equal(a.canary_member, c.canary_member)
  heads = int(a.canary_member.sum())
  assert stats.binomtest(heads, 2000, 0.5).pvalue > 0.001


def test_no_canaries_changes_nothing():
  data = _data()
  split = splits_lib.make(0, 600, 300, 200)
  got = canaries.insert(_config(count=0), data, split, {"t": split})
  assert got[0] is data and got[1] is split and got[2]["t"] is split
  assert split.canaries.size == 0 and split.canary_member.size == 0


def test_splits_with_canaries_save_and_load_and_old_files_load_without(tmp_path):
  *_, planted, _ = _planted()
  planted.save(tmp_path / "s.npz")
  assert splits_lib.Splits.load(tmp_path / "s.npz").same_as(planted)
  plain = splits_lib.make(0, 600, 300, 200)
  np.savez(tmp_path / "old.npz", **{k: getattr(plain, k) for k in ("train", *ORDINARY)})
  assert splits_lib.Splits.load(tmp_path / "old.npz").same_as(plain)


@pytest.mark.parametrize("change, field", [
    (dict(count=-1), "canaries.count"),
    (dict(kind="noise"), "canaries.kind"),
    (dict(seed=-2), "canaries.seed"),
    (dict(score="nn"), "canaries.score"),
])
def test_bad_canary_settings_are_one_line_errors(change, field):
  c = config_lib.base()
  for k, v in change.items():
    c.canaries[k] = v
  with pytest.raises(UserError, match=rf"^{field}=.*; allowed: ") as e:
    config_lib.validate(c)
  assert "\n" not in str(e.value)


def test_canaries_with_lira_or_too_few_unused_examples_are_refused_in_one_line():
  c = config_lib.base()
  c.canaries.count, c.lira.num_shadows = 10, 2
  with pytest.raises(UserError, match=r"^canaries.count=10 is not allowed; allowed: 0 with "):
    config_lib.validate(c)
  data = _data()
  split = splits_lib.make(0, 600, 300, 550)
  with pytest.raises(UserError, match=r"only 50 train examples .*; allowed: at most 50"):
    canaries.insert(_config(count=60), data, split, {"t": split})


def _canary_stack(member, canary_logits, out):
  split = splits_lib.Splits(**{k: np.zeros(0, np.int64) for k in ("train", *ORDINARY)},
                            canaries=np.arange(member.size), canary_member=member)
  stack = evaluate.StackOutputs(None, None, splits=[split], split_keys=[None])
  stack._cache[("membership", None)] = out                                 # pylint: disable=protected-access
  stack._cache[("canaries", None)] = (canary_logits[None], np.zeros(member.size, np.int32),
                                      member)                              # pylint: disable=protected-access
  return stack


def _ordinary(n=400, signal=0.0, seed=0):
  rng = np.random.default_rng(seed)
  member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
  split = np.tile(np.r_[np.zeros(n // 2, np.int8), np.ones(n // 2, np.int8)], 2)
  logits = rng.normal(size=(1, 2 * n, 3))
  logits[0, member, 0] += signal
  return evaluate.Outputs(logits=logits, labels=np.zeros(2 * n, np.int32), is_member=member,
                          split=split, index=np.arange(2 * n))


def test_the_epsilon_audit_on_perfectly_separated_canaries_gives_the_closed_form_bounds():
  member = np.r_[np.ones(100, bool), np.zeros(100, bool)]
  logits = np.zeros((200, 3))
  logits[member, 0] = 10.0          # members' canary labels fit: a loss near 0
  c = config_lib.base()
  c.canaries.count = 200
  stack = _canary_stack(member, logits, _ordinary())
  result = audits.get("epsilon").run(Target(0, 3, stack, c, 3, False), None)
  f = result.fields
  lo = 0.025 ** (1 / 50)            # 50 members and 50 non-members measured, all right
  assert f["epsilon_lower_bound"] == pytest.approx(math.log((lo - 1e-5) / (1 - lo)))
  # Every measured canary guessed, all right: at delta 0 the eps with q^100 = 0.05; dp.delta
  # (1e-5) takes a little off.
  q = 0.05 ** (1 / 100)
  assert f["epsilon_lower_bound_one_run"] == pytest.approx(
      epsilon.one_run_bound(100, 100, 100, 1e-5), abs=1e-5)
  assert math.log(q / (1 - q)) - 0.01 < f["epsilon_lower_bound_one_run"] < math.log(q / (1 - q))
  assert f["epsilon_lower_bound_confidence"] == 0.95
  assert f["epsilon_audit"]["method"].startswith("canaries")
  assert f["epsilon_lower_bound_ordinary"] < 0.5      # no signal on the ordinary examples
  saved = result.files["canary_scores.npz"]
  assert saved["chooses"].sum() == 100 and np.array_equal(saved["is_member"], member)


def test_without_canaries_the_bound_is_the_ordinary_examples_thresholded_on_split_0():
  c = config_lib.base()
  out = _ordinary(signal=3.0)
  split = splits_lib.make(0, 600, 300, 200)
  stack = evaluate.StackOutputs(None, None, splits=[split], split_keys=[None])
  stack._cache[("membership", None)] = out                                 # pylint: disable=protected-access
  f = audits.get("epsilon").run(Target(0, 0, stack, c, 3, False), None).fields
  assert f["epsilon_lower_bound"] == f["epsilon_lower_bound_ordinary"] > 0.5
  assert f["epsilon_lower_bound_one_run"] is None
  assert f["epsilon_audit"]["method"].startswith("ordinary")
  # Split 1 only measured: its scores changed, the threshold (from split 0) stays.
  changed = _ordinary(signal=3.0)
  changed.logits[0, changed.split == 1] = 0.0
  stack._cache[("membership", None)] = changed                             # pylint: disable=protected-access
  again = audits.get("epsilon").run(Target(0, 0, stack, c, 3, False), None).fields
  assert (again["epsilon_audit"]["ordinary"]["threshold"]
          == f["epsilon_audit"]["ordinary"]["threshold"])


# ------------------------------------------------------------------ DP-SGD audited

def _dp_run(tmp_path, data_dir):
  """DP-SGD at an accounted epsilon of 1 on 100 digits and 400 mislabelled canaries (about
  200 of them members), audited by the loss on the canaries."""
  from miajax import train  # pylint: disable=g-import-not-at-top
  c = config_lib.base()
  config_lib.smoke(c)
  c.data.dir = str(data_dir)
  c.data.train_size, c.data.batch_size = 100, 32
  c.methods = ("dp",)
  c.model.norm = "group"
  c.canaries.count = 400
  c.audits = ("loss", "epsilon")
  c.train.epochs = 30.0
  c.dp.epsilon = 1.0
  record, = train.train_and_evaluate(c, tmp_path)
  assert record["dp_epsilon"] == pytest.approx(1.0, abs=0.01)
  return record


@pytest.mark.slow
def test_dp_sgd_with_its_noise_switched_off_is_caught_by_the_canary_audit(tmp_path, data_dir,
                                                                          monkeypatch):
  from miajax import dp as dp_lib  # pylint: disable=g-import-not-at-top
  honest = dp_lib.privatise
  monkeypatch.setattr(dp_lib, "privatise", lambda key, clipped, clip_norm, noise, batch_size:
                      honest(key, clipped, clip_norm, 0.0, batch_size))
  record = _dp_run(tmp_path, data_dir)
  # The accountant still says 1; the canaries say the run leaked more than eps = 1 allows.
  assert record["epsilon_lower_bound"] > record["dp_epsilon"]


@pytest.mark.slow
def test_honest_dp_sgd_stays_below_its_accounted_epsilon_on_the_same_audit(tmp_path, data_dir):
  record = _dp_run(tmp_path, data_dir)
  assert record["epsilon_lower_bound"] <= record["dp_epsilon"]
  assert record["epsilon_lower_bound_one_run"] <= record["dp_epsilon"]


def test_the_leaky_privacy_config_puts_every_defence_on_the_epsilon_scale():
  import importlib.util  # pylint: disable=g-import-not-at-top
  from miajax import trials  # pylint: disable=g-import-not-at-top
  path = config_lib.__file__.replace("miajax/config.py", "configs/leaky_fashion_mnist_lenet5.py")
  spec = importlib.util.spec_from_file_location("leaky", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for arg in ("privacy", "privacy,smoke"):
    c = module.get_config(arg)
    config_lib.validate(c)
    assert c.canaries.count > 0 and c.canaries.kind == "mislabel" and "epsilon" in c.audits
    methods = {t.method for t in trials.make(c)}
    assert methods == {"baseline", "pruning", "minmax", "dp"}
    groups = {t.group for t in trials.make(c)}
    assert sum(g.startswith("pruning-") for g in groups) >= 2
    assert sum(g.startswith("minmax-") for g in groups) >= 2
    assert sum(g.startswith("dp-") for g in groups) >= 2
