"""Membership splits: who is a member, who is not, and which sets each party may touch.

- `train` (D): the members, the dataset's train split or a seeded subset of it.
- The test split (D') gives three pairwise disjoint sets of one size: `reference`
  (non-members for the post-hoc attack's training, and Algorithm 1's selection accuracy),
  `audit` (never touched by any training or choice: test accuracy and every attack evaluation
  are measured on it) and `minmax_reference` (below). Their size is half of D' (or of D, if
  smaller) where D' has room for three such halves, else a third of D' (at full size,
  CIFAR-10, MNIST and Fashion-MNIST: 3,333 of 10,000 test examples each; digits: 265 of 797).
- `attack_members` and `audit_members` are two disjoint samples of D, the size of `reference`
  and `audit` respectively, so that both attack sets are balanced.
- Min-Max's inner attack (App. D: "half of the training set and half of the testing set")
  gets sets of its own, drawn apart from the post-hoc attack's, which App. D retrains "using
  another D and D' sampled differently": `minmax_members`, a seeded half of D drawn
  independently of the attack and audit members (so no member subset is singled out for the
  defence), and `minmax_reference`, the third set of test examples.

The splits depend only on (seed, dataset sizes, train_size). A run's trials share one split,
or with `split_per_trial` each draws its own from (seed, trial seed). Each trial saves its
split as `splits.npz`, so an audit can be reproduced from disk.
"""

import dataclasses
from pathlib import Path

import numpy as np

from miajax import paths
from miajax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Splits:
  train: np.ndarray             # indices into the train split: D, the members
  reference: np.ndarray         # indices into the test split: non-members for attack training
  audit: np.ndarray             # indices into the test split: non-members for evaluation
  attack_members: np.ndarray    # subset of train, |reference| of them
  audit_members: np.ndarray     # subset of train disjoint from attack_members, |audit| of them
  minmax_members: np.ndarray    # Min-Max's inner attack: half of train, drawn on its own
  minmax_reference: np.ndarray  # Min-Max's inner attack: test examples, apart from the two above
  # Canaries (miajax/canaries.py): rows appended to the train split, each a member (in
  # `train`) by its own fair coin; never in any set above but `train`. Empty without them.
  canaries: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
  canary_member: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, bool))

  def save(self, path: str | Path) -> None:
    paths.savez(path, **dataclasses.asdict(self))

  def same_as(self, other: "Splits") -> bool:
    return all(np.array_equal(getattr(self, f.name), getattr(other, f.name))
               for f in dataclasses.fields(self))

  @classmethod
  def load(cls, path: str | Path) -> "Splits":
    with paths.load_npz(path) as f:
      # Files written before the Min-Max sets (or the canaries) existed load with those empty.
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
  # Where D' has no room for Min-Max's third set, all three shrink to a third of D'. The draws
  # are the same either way, so splits with room are exactly what they were before.
  half = min(num_test // 2, len(train) // 2)
  if 3 * half > num_test:
    half = num_test // 3
  if half == 0:
    raise UserError(f"data: {num_train} train / {num_test} test examples are too few to split")
  members = rng.permutation(train)
  # Drawn after the sets above, so adding them left every earlier split unchanged.
  minmax_members = np.sort(rng.permutation(train)[:len(train) // 2])
  return Splits(
      train=train,
      reference=np.sort(test[:half]),
      audit=np.sort(test[half:2 * half]),
      attack_members=np.sort(members[:half]),
      audit_members=np.sort(members[half:2 * half]),
      minmax_members=minmax_members,
      minmax_reference=np.sort(test[2 * half:3 * half]),
  )
