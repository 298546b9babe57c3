"""Training batches: what each trial reads, in which order, and that a resumed run reads the same."""

import numpy as np

from miajax.data import pipeline
from miajax.data import specs

NUM_TRAIN = 40


def _data() -> pipeline.Data:
  # Each image holds its own row number, so a batch says which rows it read.
  rows = np.arange(NUM_TRAIN, dtype=np.uint8)
  split = {"image": np.broadcast_to(rows[:, None, None, None], (NUM_TRAIN, 2, 2, 1)).copy(),
           "label": (rows % 10).astype(np.int64)}
  return pipeline.Data(name="mnist", num_classes=10, train=split, test=split, augment=False,
                       image_size=2)


def _rows(members, seeds, start, stop, side_sets=None, batch_size=4):
  data = _data()
  out = []
  for b in pipeline.train_batches(data, members, np.asarray(seeds), batch_size, start, stop,
                                  side_sets=side_sets):
    out.append({k: _row_numbers(v) for k, v in b.items() if k.endswith("image")})
  return out


def _row_numbers(images: np.ndarray) -> np.ndarray:
  # Undo the MNIST normalisation of the one pixel we need; rows are exact small integers.
  (mean,), (std,) = specs.SPECS["mnist"].mean, specs.SPECS["mnist"].std
  pixel = images[..., 0, 0, 0] * std + mean
  return np.rint(pixel * 255).astype(int)


MEMBERS = np.arange(0, NUM_TRAIN, 2)  # 20 members, 5 steps of 4 per epoch


def test_each_epoch_reads_every_member_exactly_once_and_nothing_else():
  steps = _rows(MEMBERS, [7], 0, 15)
  for epoch in range(3):
    read = np.concatenate([s["image"][0] for s in steps[5 * epoch:5 * epoch + 5]])
    np.testing.assert_array_equal(np.sort(read), MEMBERS)


def test_epochs_are_shuffled_afresh_and_trials_with_other_seeds_read_other_orders():
  steps = _rows(MEMBERS, [7, 8], 0, 10)
  epoch = lambda e, t: np.concatenate([s["image"][t] for s in steps[5 * e:5 * e + 5]])
  assert not np.array_equal(epoch(0, 0), epoch(1, 0))
  assert not np.array_equal(epoch(0, 0), epoch(0, 1))


def test_a_run_resumed_mid_epoch_reads_the_batches_of_an_uninterrupted_one():
  whole = _rows(MEMBERS, [7, 8], 0, 12)
  resumed = _rows(MEMBERS, [7, 8], 7, 12)
  for a, b in zip(whole[7:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])


def test_per_trial_members_and_side_sets_read_only_their_own_rows():
  own = [np.arange(0, 20), np.arange(20, 40)]
  side = {"mem": ("train", [np.arange(0, 8), np.arange(20, 28)], 2)}
  for s in _rows(own, [7, 7], 0, 6, side_sets=side):
    assert set(s["image"][0]) <= set(own[0]) and set(s["image"][1]) <= set(own[1])
    assert s["mem/image"].shape == (2, 2, 4)
    assert set(s["mem/image"][0].ravel()) <= set(range(8))
    assert set(s["mem/image"][1].ravel()) <= set(range(20, 28))
