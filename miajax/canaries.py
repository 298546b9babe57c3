"""Canaries: examples planted so that their membership is a fair coin, for privacy audits.

`canaries.count` examples are appended to the train split as new rows, after every ordinary
example, and each joins the members (`Splits.train`) by its own coin of probability 1/2. The
rows and the coins are drawn from `canaries.seed` alone, so every trial of a run (and every
method) trains with the same canaries and the same coins. They are:

- "mislabel": images of the train split that no trial trains on (outside every trial's
  `train`), each with a wrong label drawn uniformly from the other classes (the canaries of
  Jagielski et al. 2020 and Steinke et al. 2023: a model only fits such a label by
  memorising the example);
- "ood": uniform noise images with uniformly drawn labels, out of the data's distribution.

The canaries enter only `train` (the training members, and DP-SGD's sampling rate, which
counts every member); the membership splits of ordinary examples (attack and audit members,
reference and audit non-members, Min-Max's sets) are drawn before them and never hold one, so
the accuracies and attacks on the audit split measure ordinary examples only. The `epsilon`
audit reads the canaries (`Splits.canaries`, `Splits.canary_member`).
"""

import dataclasses

import numpy as np

from miajax import splits as splits_lib
from miajax.errors import UserError

KINDS = ("mislabel", "ood")
SECTION = {"count": 0, "kind": "mislabel", "seed": 0, "score": "loss"}


def validate(c, need) -> None:
  """One `need(ok, field, allowed)` per key of the canaries section."""
  from miajax import audits  # pylint: disable=g-import-not-at-top
  k = c.canaries
  need(isinstance(k.count, int) and not isinstance(k.count, bool) and k.count >= 0,
       "canaries.count", "an integer >= 0 (0: no canaries)")
  need(k.kind in KINDS, "canaries.kind", ", ".join(KINDS))
  need(isinstance(k.seed, int) and not isinstance(k.seed, bool) and k.seed >= 0,
       "canaries.seed", "an integer >= 0")
  scored = [a for a in audits.NAMES if audits.get(a).score is not None]
  need(k.score in scored, "canaries.score",
       "a threshold audit scored from the logits: " + ", ".join(scored))
  need(k.count == 0 or c.lira.num_shadows == 0, "canaries.count",
       "0 with lira.num_shadows > 0 (LiRA draws each model's members from one pool)")


def insert(config, data, split: splits_lib.Splits, trial_splits: dict):
  """(data with the canary rows appended to its train split, split and trial_splits with the
  canaries and their coins, the members among them added to `train`); unchanged without
  canaries."""
  count = int(config.canaries.count)
  if count == 0:
    return data, split, trial_splits
  if not isinstance(data.train, dict):
    raise UserError(f"canaries.count={count} needs a dataset held in memory; allowed: 0 for "
                    f"data.name={data.name}")
  images, labels = data.train["image"], data.train["label"]
  num_train = len(labels)
  rng = np.random.default_rng([int(config.canaries.seed), 0xCA9A])
  if config.canaries.kind == "mislabel":
    used = np.zeros(num_train, bool)
    for s in [split, *trial_splits.values()]:
      used[s.train] = True
    free = np.flatnonzero(~used)
    if free.size < count:
      raise UserError(f"canaries.count={count}: only {free.size} train examples lie outside "
                      f"the members to make mislabelled canaries of; allowed: at most "
                      f"{free.size}, a smaller data.train_size, or canaries.kind=ood")
    source = np.sort(rng.choice(free, count, replace=False))
    new_images = images[source]
    new_labels = (labels[source] + rng.integers(1, data.num_classes, count)) % data.num_classes
  else:
    new_images = rng.integers(0, 256, (count, *images.shape[1:])).astype(images.dtype)
    new_labels = rng.integers(0, data.num_classes, count)
  member = rng.random(count) < 0.5
  index = num_train + np.arange(count, dtype=np.int64)
  data = dataclasses.replace(data, train={
      **data.train, "image": np.concatenate([images, new_images]),
      "label": np.concatenate([labels, new_labels.astype(labels.dtype)])})

  def planted(s: splits_lib.Splits) -> splits_lib.Splits:
    return dataclasses.replace(s, train=np.sort(np.concatenate([s.train, index[member]])),
                               canaries=index, canary_member=member)

  return data, planted(split), {name: planted(s) for name, s in trial_splits.items()}
