"""Training batches: what each trial reads, in which order, and that a resumed run reads the same."""

import dataclasses
import threading
import time

import numpy as np
import pytest

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


def _prefetched(make, depth=2):
  """The batches of make() through pipeline.prefetch, placed on a one-device mesh as a run
  places them, back on the host."""
  import jax  # pylint: disable=g-import-not-at-top
  mesh = jax.make_mesh((1, 1), ("trial", "data"), devices=jax.devices()[:1],
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  return [jax.device_get(b) for b in pipeline.prefetch(
      make(), lambda b: pipeline.place(b, mesh), depth)]


def test_prefetching_yields_exactly_the_plain_batches_also_after_a_resume():
  data = _data()
  side = {"mem": ("train", np.arange(1, NUM_TRAIN, 2), 2)}
  augmented = dataclasses.replace(data, augment=True)
  for d, sets in ((data, None), (augmented, side)):
    for start in (0, 7):       # a fresh run, and one resumed mid-epoch
      make = lambda: pipeline.train_batches(d, MEMBERS, np.asarray([7, 8]), 4, start, 13,
                                            side_sets=sets)
      plain, fetched = list(make()), _prefetched(make)
      assert len(fetched) == len(plain) == 13 - start
      for a, b in zip(plain, fetched):
        assert a.keys() == b.keys()
        for key in a:
          np.testing.assert_array_equal(a[key], b[key])
  make = lambda: pipeline.poisson_batches(data, MEMBERS, np.asarray([3]), 4, 5, 12, 16)
  for a, b in zip(list(make()), _prefetched(make, depth=1), strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_prefetching_raises_the_readers_error_and_has_stopped_once_closed():
  def failing():
    yield {"x": np.zeros(1)}
    raise OSError("unreadable record")
  got = pipeline.prefetch(failing())
  assert next(got)["x"].shape == (1,)
  with pytest.raises(OSError, match="unreadable record"):
    next(got)
  def slow(b):                         # the thread is mid-batch when the run closes it
    time.sleep(0.3)
    return b
  endless = pipeline.prefetch(iter(lambda: {"x": np.zeros(1)}, None), slow, depth=1)
  next(endless)
  endless.close()                      # returns only when the thread has ended
  assert not any(t.name == "miajax-prefetch" for t in threading.enumerate())
