"""Who each attack learns from: Min-Max's inner attack, the post-hoc attack and the audit
never share what they must not, in a plain run, a LiRA stack, and with a split per trial."""

import json

import numpy as np
import pytest

from miajax import config as config_lib
from miajax import dp as dp_lib
from miajax import lira
from miajax import methods
from miajax import models
from miajax import splits as splits_lib
from miajax import train
from miajax import trials as trials_lib
from miajax.defences import minmax


def _smoke(data_dir, **changes):
  c = config_lib.base()
  config_lib.smoke(c)
  c.data.dir = str(data_dir)
  c.train.epochs = 1.0
  c.attack.epochs = 1
  for key, value in changes.items():
    section, _, name = key.rpartition(".")
    (c[section] if section else c)[name] = value
  return c


def test_minmax_inner_attack_reads_its_own_sets_not_the_post_hoc_attacks():
  c = config_lib.base()
  c.methods = ("minmax",)
  s = splits_lib.make(0, 60000, 10000, train_size=2500)
  group = trials_lib.make(c)
  sets = minmax.side_sets(c, group, [s], [s.train], lira=False, count=2)
  assert sets["mem"][0] == "train" and sets["mem"][2] == 2
  np.testing.assert_array_equal(sets["mem"][1][0], s.minmax_members)
  np.testing.assert_array_equal(sets["ref"][1][0], s.minmax_reference)
  assert not set(sets["ref"][1][0]) & set(s.audit)


def test_in_a_lira_stack_each_models_inner_attack_sees_only_that_models_members():
  c = config_lib.base()
  c.methods = ("minmax",)
  c.lira.num_shadows = 4
  group = trials_lib.make(c)
  s = splits_lib.make(0, 60000, 10000, train_size=1000)
  keep = np.asarray(lira.keep_masks(__import__("jax").random.PRNGKey(0), 5, 1000))
  members = [s.train[keep[t.lira_model]] for t in group]
  sets = minmax.side_sets(c, group, [s] * 5, members, lira=True, count=1)
  for own, inner in zip(members, sets["mem"][1]):
    assert set(inner) <= set(own) and len(inner) == len(own) // 2
  # The shared post-hoc attack members are, for most models, partly other models' members.
  assert any(not set(s.attack_members) <= set(own) for own in members)


def test_dp_records_what_the_model_actually_normalises_with():
  c = config_lib.base()
  c.model.name, c.model.norm = "lenet5", "batch"
  report = methods.recipe("dp", c, models.create("lenet5", 10), None, 10, 10, 640).report
  assert report["dp_model_norm"] == "none"         # LeNet-5 has no normalisation layer
  assert models.normalisation("vgg16", "group") == "group"


@pytest.mark.slow
def test_a_lira_stack_accounts_dp_with_each_models_real_member_count(tmp_path, data_dir):
  # Odd model count (target + 2 shadows) over an odd pool: every model gets 499 of 999.
  c = _smoke(data_dir, methods=("dp",), **{"lira.num_shadows": 2, "data.train_size": 999})
  records = train.train_and_evaluate(c, tmp_path)
  keep = np.load(tmp_path / "lira_keep.npz")["keep"]
  assert keep.sum(axis=1).tolist() == [499, 499, 499]
  for r, k in zip(records, keep):
    rate = c.data.batch_size / k.sum()
    assert r["dp_epsilon"] == pytest.approx(
        dp_lib.epsilon(r["dp_noise_multiplier"], rate, r["step"], c.dp.delta), rel=1e-9)
  assert records[0]["lira"]["online"]["auc"] is not None


@pytest.mark.slow
def test_a_split_per_trial_gives_each_trial_its_own_members_and_audit(tmp_path, data_dir):
  c = _smoke(data_dir, seeds=(0, 1), split_per_trial=True)
  records = train.train_and_evaluate(c, tmp_path)
  audits = []
  for r in records:
    s = splits_lib.Splits.load(tmp_path / r["name"] / "splits.npz")
    want = splits_lib.make((0, r["seed"]), 1000, 797)
    np.testing.assert_array_equal(s.audit, want.audit)
    assert r["split_seed"] == [0, r["seed"]]
    scores = np.load(tmp_path / r["name"] / "scores.npz")
    audited = scores["index"][(scores["split"] == 1) & ~scores["is_member"]]
    np.testing.assert_array_equal(audited, s.audit)   # measured on its own audit set
    audits.append(set(s.audit))
  assert audits[0] != audits[1]
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["split_per_trial"] is True
