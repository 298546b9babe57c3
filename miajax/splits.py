"""Membership splits: who is a member, who is not, and which sets each party may touch.

- `train` (D): the members, the dataset's train split or a seeded subset of it.
- The test split (D') is cut into two disjoint halves: `reference` (non-members for the
  post-hoc attack's training) and `audit` (never touched by any training: test accuracy and
  every attack evaluation are measured on it).
- `attack_members` and `audit_members` are two disjoint samples of D, the size of `reference`
  and `audit` respectively, so that both attack sets are balanced.
- Min-Max's inner attack (App. D: "half of the training set and half of the testing set")
  gets sets of its own, drawn apart from the post-hoc attack's, which App. D retrains "using
  another D and D' sampled differently": `minmax_members`, a seeded half of D drawn
  independently of the attack and audit members (so no member subset is singled out for the
  defence), and `minmax_reference`, test examples outside `audit`, disjoint from `reference`
  where the test split has room and topped up from it where it has not.

The splits depend only on (seed, dataset sizes, train_size). A run's trials share one split,
or with `split_per_trial` each draws its own from (seed, trial seed). Each trial saves its
split as `splits.npz`, so an audit can be reproduced from disk.
"""

import dataclasses
from pathlib import Path

import numpy as np

from miajax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Splits:
  train: np.ndarray             # indices into the train split: D, the members
  reference: np.ndarray         # indices into the test split: non-members for attack training
  audit: np.ndarray             # indices into the test split: non-members for evaluation
  attack_members: np.ndarray    # subset of train, |reference| of them
  audit_members: np.ndarray     # subset of train disjoint from attack_members, |audit| of them
  minmax_members: np.ndarray    # Min-Max's inner attack: half of train, drawn on its own
  minmax_reference: np.ndarray  # Min-Max's inner attack: test examples outside audit

  def save(self, path: str | Path) -> None:
    np.savez(path, **dataclasses.asdict(self))

  @classmethod
  def load(cls, path: str | Path) -> "Splits":
    with np.load(path) as f:
      # Files written before the Min-Max sets existed load with those sets empty.
      return cls(**{k.name: f[k.name] if k.name in f else np.zeros(0, np.int64)
                    for k in dataclasses.fields(cls)})


def make(seed: int | tuple[int, ...], num_train: int, num_test: int,
         train_size: int | None = None) -> Splits:
  """Draws the membership splits for a dataset with `num_train`/`num_test` examples."""
  if train_size is not None and not 0 < train_size <= num_train:
    raise UserError(
        f"data.train_size={train_size} is not allowed; allowed: 1..{num_train} or None (all)")
  rng = np.random.default_rng([*np.atleast_1d(seed), 0x5EED])
  train = np.sort(rng.permutation(num_train)[:train_size or num_train])
  test = rng.permutation(num_test)
  # Both attack sets need as many members as non-members; shrink D' halves if D is smaller.
  half = min(num_test // 2, len(train) // 2)
  if half == 0:
    raise UserError(f"data: {num_train} train / {num_test} test examples are too few to split")
  reference, audit = np.sort(test[:half]), np.sort(test[half:2 * half])
  members = rng.permutation(train)
  # Drawn after the sets above, so adding them left every earlier split unchanged.
  minmax_members = np.sort(rng.permutation(train)[:len(train) // 2])
  rest = test[2 * half:3 * half]
  top_up = rng.choice(reference, half - len(rest), replace=False)
  return Splits(
      train=train,
      reference=reference,
      audit=audit,
      attack_members=np.sort(members[:half]),
      audit_members=np.sort(members[half:2 * half]),
      minmax_members=minmax_members,
      minmax_reference=np.sort(np.concatenate([rest, top_up])),
  )
