"""Membership splits are disjoint where they must be, balanced, and reproducible."""

import hashlib

import numpy as np
import pytest

from miajax import splits
from miajax.errors import UserError


# (train, test, train_size): digits; MNIST and Fashion-MNIST; CIFAR-10; the leaky config's
# 2,500 members and a smaller subset (room for three test halves); a test split larger than D.
@pytest.mark.parametrize("num_train,num_test,train_size", [
    (1000, 797, None), (60000, 10000, None), (50000, 10000, None), (60000, 10000, 2500),
    (60000, 10000, 5000), (300, 2000, None), (1000, 797, 100)])
def test_every_pair_that_must_be_disjoint_is_disjoint(num_train, num_test, train_size):
  s = splits.make(0, num_train, num_test, train_size)
  # Three non-member sets of the test split, pairwise disjoint: the post-hoc attack's, the
  # audit's, and Min-Max's inner attack's (App. D: "another D and D' sampled differently").
  assert not set(s.reference) & set(s.audit)
  assert not set(s.minmax_reference) & set(s.audit)     # the audit split stays untouched
  assert not set(s.minmax_reference) & set(s.reference)
  assert not set(s.attack_members) & set(s.audit_members)
  assert set(s.attack_members) <= set(s.train)
  assert set(s.audit_members) <= set(s.train)
  assert set(s.minmax_members) <= set(s.train)
  assert len(s.minmax_reference) == len(s.reference) == len(s.audit) > 0
  assert len(s.attack_members) == len(s.reference) and len(s.audit_members) == len(s.audit)
  assert max(map(max, (s.reference, s.audit, s.minmax_reference))) < num_test
  for a in (s.train, s.reference, s.audit, s.attack_members, s.audit_members,
            s.minmax_members, s.minmax_reference):
    assert len(np.unique(a)) == len(a)


@pytest.mark.parametrize("num_train,num_test", [(60000, 10000), (50000, 10000), (1000, 797)])
def test_a_test_split_without_room_for_three_halves_is_cut_in_three_equal_thirds(
    num_train, num_test):
  s = splits.make(0, num_train, num_test)
  third = num_test // 3
  assert len(s.reference) == len(s.audit) == len(s.minmax_reference) == third
  assert len(s.attack_members) == len(s.audit_members) == third


def test_minmax_inner_attack_sets_are_sampled_apart_from_the_post_hoc_attacks():
  # App. D: the post-hoc attack is retrained on "another D and D' sampled differently".
  s = splits.make(0, 60000, 10000, train_size=2500)
  assert len(s.minmax_members) == 1250 and len(s.minmax_reference) == len(s.reference)
  assert not set(s.minmax_reference) & set(s.reference)   # room in the test split: disjoint
  # Half of D, drawn on its own: it covers attack and audit members alike, about half each.
  for subset in (s.attack_members, s.audit_members):
    shared = len(set(s.minmax_members) & set(subset)) / len(subset)
    assert 0.4 < shared < 0.6
  # No room for three halves (CIFAR-10's 10,000 test images): three disjoint thirds instead.
  s = splits.make(0, 50000, 10000)
  assert len(s.minmax_reference) == 3333 and not set(s.minmax_reference) & set(s.reference)


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


def _digest(s: splits.Splits) -> str:
  h = hashlib.sha256()
  for name in ("train", "reference", "audit", "attack_members", "audit_members",
               "minmax_members", "minmax_reference"):
    h.update(name.encode() + np.ascontiguousarray(getattr(s, name), np.int64).tobytes())
  return h.hexdigest()[:16]


# Where the test split has room for three disjoint halves, every set is as it was drawn before
# the no-room case was cut in thirds: the leaky Fashion-MNIST config's split (seed 0, 2,500 of
# 60,000 members, 10,000 test examples), behind the README's published numbers, and others.
@pytest.mark.parametrize("seed,num_train,num_test,train_size,digest", [
    (0, 60000, 10000, 2500, "e52a43f88cccd3a9"),
    ((0, 1), 60000, 10000, 2500, "14613a67b0d41fe1"),   # split_per_trial, trial seed 1
    (0, 60000, 10000, 5000, "0e73ff69de0e83a4"),
    (0, 300, 2000, None, "a0a1c2f91a4c8e43")])
def test_splits_with_room_for_three_halves_are_drawn_as_before(seed, num_train, num_test,
                                                              train_size, digest):
  assert _digest(splits.make(seed, num_train, num_test, train_size)) == digest


def test_a_split_seed_tuple_draws_another_split():
  a, b = splits.make((0, 1), 1000, 797), splits.make((0, 2), 1000, 797)
  assert not np.array_equal(a.audit, b.audit)
  np.testing.assert_array_equal(splits.make(0, 1000, 797).audit, splits.make((0,), 1000, 797).audit)


def test_train_size_outside_the_dataset_is_a_user_error():
  with pytest.raises(UserError, match="data.train_size"):
    splits.make(0, 100, 100, train_size=101)
