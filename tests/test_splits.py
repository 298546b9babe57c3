"""Membership splits are disjoint where they must be, balanced, and reproducible."""

import numpy as np
import pytest

from miajax import splits
from miajax.errors import UserError


@pytest.mark.parametrize("num_train,num_test,train_size", [
    (1000, 797, None), (60000, 10000, None), (60000, 10000, 5000), (300, 2000, None)])
def test_every_pair_that_must_be_disjoint_is_disjoint(num_train, num_test, train_size):
  s = splits.make(0, num_train, num_test, train_size)
  assert not set(s.reference) & set(s.audit)
  assert not set(s.attack_members) & set(s.audit_members)
  assert set(s.attack_members) <= set(s.train)
  assert set(s.audit_members) <= set(s.train)
  assert set(s.minmax_members) <= set(s.train)
  assert not set(s.minmax_reference) & set(s.audit)     # the audit split stays untouched
  for a in (s.train, s.reference, s.audit, s.attack_members, s.audit_members,
            s.minmax_members, s.minmax_reference):
    assert len(np.unique(a)) == len(a)


def test_minmax_inner_attack_sets_are_sampled_apart_from_the_post_hoc_attacks():
  # App. D: the post-hoc attack is retrained on "another D and D' sampled differently".
  s = splits.make(0, 60000, 10000, train_size=2500)
  assert len(s.minmax_members) == 1250 and len(s.minmax_reference) == len(s.reference)
  assert not set(s.minmax_reference) & set(s.reference)   # room in the test split: disjoint
  # Half of D, drawn on its own: it covers attack and audit members alike, about half each.
  for subset in (s.attack_members, s.audit_members):
    shared = len(set(s.minmax_members) & set(subset)) / len(subset)
    assert 0.4 < shared < 0.6
  # No room (D' halves fill the test split): the reference set is reused, never the audit.
  s = splits.make(0, 50000, 10000)
  assert set(s.minmax_reference) <= set(s.reference)


@pytest.mark.parametrize("num_train,num_test", [(1000, 797), (300, 2000), (50000, 10000)])
def test_attack_sets_are_balanced(num_train, num_test):
  s = splits.make(3, num_train, num_test)
  assert len(s.attack_members) == len(s.reference) > 0
  assert len(s.audit_members) == len(s.audit) > 0


def test_train_size_takes_a_seeded_subset_of_the_train_split():
  s = splits.make(0, 60000, 10000, train_size=2000)
  assert len(s.train) == 2000 and s.train.max() < 60000


def test_splits_are_fixed_by_seed_and_change_with_it():
  a, b, c = splits.make(1, 1000, 797), splits.make(1, 1000, 797), splits.make(2, 1000, 797)
  np.testing.assert_array_equal(a.audit, b.audit)
  np.testing.assert_array_equal(a.audit_members, b.audit_members)
  assert not np.array_equal(a.audit, c.audit)


def test_save_and_load_round_trip(tmp_path):
  s = splits.make(0, 1000, 797)
  s.save(tmp_path / "splits.npz")
  t = splits.Splits.load(tmp_path / "splits.npz")
  for name in ("train", "reference", "audit", "attack_members", "audit_members",
               "minmax_members", "minmax_reference"):
    np.testing.assert_array_equal(getattr(s, name), getattr(t, name))


def test_adding_the_minmax_sets_left_the_earlier_sets_as_they_were():
  # The sets of seed 0 on digits' sizes, as drawn before minmax_* existed.
  s = splits.make(0, 1000, 797)
  assert s.audit[:5].tolist() == [1, 2, 4, 6, 7] and s.audit_members[:3].tolist() == [1, 2, 6]


def test_a_split_seed_tuple_draws_another_split():
  a, b = splits.make((0, 1), 1000, 797), splits.make((0, 2), 1000, 797)
  assert not np.array_equal(a.audit, b.audit)
  np.testing.assert_array_equal(splits.make(0, 1000, 797).audit, splits.make((0,), 1000, 797).audit)


def test_train_size_outside_the_dataset_is_a_user_error():
  with pytest.raises(UserError, match="data.train_size"):
    splits.make(0, 100, 100, train_size=101)
