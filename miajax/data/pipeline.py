"""Batches for training and evaluation: grain over a TFDS source, placed as sharded arrays.

Training batches carry a leading trial axis: trial k reads the members in its own seeded order
(epoch e is a permutation drawn from (seed_k, e)), so the batch of any step is a pure function of
the step number. That makes the input position of a checkpoint just its step, and a resumed run
reads exactly the batches an uninterrupted one would. DP-SGD instead reads Poisson-sampled
batches (`poisson_batches`), also a pure function of (seed, step), padded to one static size
with a mask. Each host reads only its rows of every global batch (`jax.process_index()`), and
the arrays are assembled across hosts as `jax.Array`s.

Small datasets (digits, MNIST, CIFAR) are read once into host memory; ImageNet is read from its
array_record source per batch.
"""

import dataclasses
import queue
import threading
from typing import Any, Callable, Iterator

import grain
import jax
import numpy as np
from absl import logging
from PIL import Image

from miajax.data import sources as sources_lib
from miajax.data import specs
from miajax.data import synthetic
from miajax.errors import NotPrepared, UserError



@dataclasses.dataclass
class Data:
  """The two splits of a dataset, each readable by index, and how to turn records into inputs."""
  name: str
  num_classes: int
  train: Any          # dict of arrays (in memory) or a random-access source
  test: Any
  augment: bool
  image_size: int     # ImageNet crop; other datasets keep their stored geometry
  synthetic: bool = False   # stand-in images (miajax.data.synthetic), not the dataset

  @property
  def record_fields(self) -> dict[str, Any]:
    """What every result record says of its data: SYNTHETIC stand-ins are marked twice."""
    if self.synthetic:
      return {"dataset": f"{self.name} (synthetic)", "synthetic": True}
    return {"dataset": self.name}

  @property
  def input_shape(self) -> tuple[int, int, int]:
    return specs.SPECS[self.name].input_shape(self.image_size)

  def num_examples(self, split: str) -> int:
    data = getattr(self, split)
    return len(data["label"]) if isinstance(data, dict) else len(data)

  def read(self, split: str, indices: np.ndarray, rng: np.random.Generator | None = None
           ) -> dict[str, np.ndarray]:
    """Preprocessed examples `indices` of `split`; augmented when `rng` is given."""
    data = getattr(self, split)
    if isinstance(data, dict):
      images, labels = data["image"][indices], data["label"][indices]
    else:
      records = [data[int(i)] for i in indices]
      labels = np.asarray([r["label"] for r in records], np.int32)
      images = [r["image"] for r in records]
    if specs.SPECS[self.name].cropped:
      crop = _inception_crop if rng is not None and self.augment else _centre_crop
      images = np.stack([crop(im, self.image_size, rng) for im in images])
    elif rng is not None and self.augment:
      images = _crop_and_flip(images, rng)
    return {"image": normalise(images, self.name), "label": labels.astype(np.int32)}


def load(config) -> Data:
  src = _sources(config)
  train, test = src.train, src.test
  if specs.SPECS[config.data.name].in_memory:
    train, test = sources_lib.to_arrays(train), sources_lib.to_arrays(test)
  return Data(name=config.data.name, num_classes=src.num_classes, train=train, test=test,
              augment=bool(config.data.augment), image_size=int(config.data.image_size),
              synthetic=src.synthetic)


def _sources(config) -> sources_lib.Sources:
  """The dataset; synthetic images where asked, or for a `:smoke` run whose data is missing.

  Only a smoke config falls back (validation refuses data.synthetic without it): any other run
  stops at the one-line error that says how to prepare the data.
  """
  name = config.data.name
  if config.data.synthetic:
    src = synthetic.load(name, config.data.train_size)
    logging.warning("data: data.synthetic=True: this run uses %s in place of %s",
                    synthetic.describe(src), name)
    return src
  try:
    return sources_lib.load(name, config.data.dir, config.data.manual_dir)
  except NotPrepared as e:
    if not config.smoke:
      raise
    src = synthetic.load(name, config.data.train_size)
    logging.warning("data: %s %s; this :smoke run uses %s instead: it checks the code path, "
                    "its numbers say nothing about %s", name, e.reason,
                    synthetic.describe(src), name)
    return src


def normalise(images: np.ndarray, name: str) -> np.ndarray:
  spec = specs.SPECS[name]
  mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
  return (images.astype(np.float32) / 255.0 - mean) / std


def _crop_and_flip(images: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
  """Random 4-pixel-padded crop and horizontal flip, vectorised over the batch."""
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
  rows = dy[:, None] + np.arange(h)[None]
  cols = dx[:, None] + np.arange(w)[None]
  flip = rng.random(n) < 0.5
  cols = np.where(flip[:, None], cols[:, ::-1], cols)
  return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def _inception_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """Random crop of 8-100% of the area, aspect 3/4-4/3, resized to `size`, random flip."""
  h, w = image.shape[:2]
  for _ in range(10):
    area = h * w * rng.uniform(0.08, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch, cw = int(round(np.sqrt(area / aspect))), int(round(np.sqrt(area * aspect)))
    if 0 < ch <= h and 0 < cw <= w:
      y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
      break
  else:
    ch = cw = min(h, w)
    y, x = (h - ch) // 2, (w - cw) // 2
  out = _resize(image[y:y + ch, x:x + cw], size, size)
  return out[:, ::-1] if rng.random() < 0.5 else out


def _centre_crop(image: np.ndarray, size: int, rng=None) -> np.ndarray:
  """Resize the short side to size * 256/224, then take the central size x size."""
  del rng
  h, w = image.shape[:2]
  scale = size * 256 / 224 / min(h, w)
  rh, rw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
  image = _resize(image, rh, rw)
  y, x = (rh - size) // 2, (rw - size) // 2
  return image[y:y + size, x:x + size]


def _resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
  return np.asarray(Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
                    .resize((w, h), Image.BILINEAR)).reshape(h, w, -1)


class _EpochOrders:
  """The rows of an index set that a trial reads at each step: epoch e is a permutation drawn
  from (seed, stream, e), so each set a step reads from (stream) has its own order.

  Each (trial, stream) keeps its current epoch's permutation: drawing 60,000 of them afresh
  every step cost 0.4-0.7 ms, ~7% of a LeNet-5 step (benchmarks/NOTES.md).
  """

  def __init__(self):
    self._orders = {}

  def rows(self, indices: np.ndarray, seed: int, step: int, batch_size: int, stream: int = 0,
           trial: int = 0) -> np.ndarray:
    steps_per_epoch = len(indices) // batch_size
    epoch, i = divmod(step, steps_per_epoch)
    key = (trial, stream)
    cached = self._orders.get(key)
    if cached is None or cached[0] != (seed, epoch, len(indices)):
      cached = ((seed, epoch, len(indices)),
                np.random.default_rng([seed, stream, epoch]).permutation(len(indices)))
      self._orders[key] = cached  # One assignment: safe under grain's reader threads.
    return indices[cached[1][i * batch_size:(i + 1) * batch_size]]


def train_batches(data: Data, members: np.ndarray | list[np.ndarray], seeds: np.ndarray,
                  batch_size: int,
                  start: int, stop: int, workers: int = 0,
                  side_sets: dict[str, tuple[str, np.ndarray | list[np.ndarray], int]] | None = None
                  ) -> Iterator[dict[str, np.ndarray]]:
  """This host's rows of the training batches of steps [start, stop): (trials, rows, ...).

  `members` is one index set for all trials or a list with one per trial (LiRA: every model
  trains on its own half). `side_sets` adds, per step, `count` batches from other sets, e.g.
  Min-Max's attack batches {"mem": ("train", minmax_members, k), "ref": ("test",
  minmax_reference, k)}, under "mem/image" etc. with shape (trials, count, rows, ...); their
  index sets may also be given per trial.
  """
  side_sets = side_sets or {}
  per_trial = lambda idx: idx if isinstance(idx, list) else [idx] * len(seeds)
  sets = {"members": ("train", per_trial(members), 1)} | {
      name: (split, per_trial(idx), count) for name, (split, idx, count) in side_sets.items()}
  for name, (_, idxs, count) in sets.items():
    smallest = min(len(idx) for idx in idxs)
    if smallest < count * batch_size:
      raise UserError(f"data.batch_size={batch_size}: the {name} set has {smallest} examples, "
                      f"fewer than the {count * batch_size} a step reads; allowed: a smaller "
                      "batch size")
  hosts, host = jax.process_count(), jax.process_index()
  rows = slice(host * batch_size // hosts, (host + 1) * batch_size // hosts)

  orders = _EpochOrders()

  def one_trial(k: int, seed: int, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, step, 1])
    out = data.read("train",
                    orders.rows(sets["members"][1][k], seed, step, batch_size, 0, k)[rows], rng)
    for stream, name in enumerate(side_sets, start=1):
      split, idxs, count = sets[name]
      picked = orders.rows(idxs[k], seed, step, count * batch_size, stream, k).reshape(count, -1)
      side = [data.read(split, p[rows], rng) for p in picked]
      for key in side[0]:
        out[f"{name}/{key}"] = np.stack([b[key] for b in side])
    return out

  def batch(step: int) -> dict[str, np.ndarray]:
    trials = [one_trial(k, int(seed), step) for k, seed in enumerate(seeds)]
    return {k: np.stack([b[k] for b in trials]) for k in trials[0]}

  return _iterate(grain.MapDataset.range(start, stop).map(batch), workers)


def _iterate(dataset: grain.MapDataset, workers: int) -> Iterator[dict[str, np.ndarray]]:
  if workers > 0:
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=workers,
                                                          prefetch_buffer_size=2 * workers)))
  return iter(dataset)


# ------------------------------------------------------------------ Poisson sampling (DP-SGD)
# DP-SGD's accountant assumes that every member is in every step's batch independently with
# probability q = batch_size / members. A step draws n ~ Binomial(members, q), then a uniformly
# random n-subset: exactly that distribution. Sizes are drawn in blocks of _BLOCK steps, from
# (seed, block), so that all the sizes of a run are known up front for a few ms; each step's
# subset comes from (seed, step). Both are pure functions of the step, so a resumed run reads
# what an uninterrupted one would.
_BLOCK = 1024
_SIZES, _SUBSET = 0x5015, 0x5016   # salts of the two streams


def poisson_sizes(num_members: int, batch_size: int, seed: int, start: int, stop: int
                  ) -> np.ndarray:
  """The batch sizes of steps [start, stop) at rate batch_size / num_members: (stop - start,)."""
  first, last = start // _BLOCK, -(-stop // _BLOCK)
  rate = batch_size / num_members
  blocks = [np.random.default_rng([seed, 0, b, _SIZES]).binomial(num_members, rate, _BLOCK)
            for b in range(first, last)]
  sizes = np.concatenate(blocks) if blocks else np.zeros(0, np.int64)
  return sizes[start - first * _BLOCK:stop - first * _BLOCK]


def poisson_max_batch(members: list[np.ndarray], seeds, batch_size: int, steps: int,
                      multiple: int = 1) -> int:
  """The static size Poisson batches are padded to: the largest draw of any trial's steps
  [0, steps), rounded up to `multiple` (the devices and hosts the rows are split over).

  Not a high quantile: a draw cut to fit would no longer be a Poisson sample, and the
  accountant's epsilon would not hold. The sizes are pure functions of (seed, step), so the
  true maximum is known before training and is the same on every host and after a resume.
  """
  largest = max((int(poisson_sizes(len(m), batch_size, int(s), 0, steps).max(initial=0))
                 for m, s in zip(members, seeds)), default=0)
  return max(multiple, -(-largest // multiple) * multiple)


def poisson_batches(data: Data, members: np.ndarray | list[np.ndarray], seeds: np.ndarray,
                    batch_size: int, start: int, stop: int, max_batch: int, workers: int = 0
                    ) -> Iterator[dict[str, np.ndarray]]:
  """This host's rows of the Poisson-sampled batches of steps [start, stop), padded to
  `max_batch` rows: "image", "label" (trials, rows, ...) and "mask" (trials, rows), True for
  the sampled rows (first), False for padding (copies of a member, to be masked out).

  `members` is one index set for all trials or one per trial (LiRA); trial k samples its own
  set at rate batch_size / len(members[k]), so every trial's expected batch is batch_size.

  Raises:
    RuntimeError: a draw is larger than `max_batch` (take it from `poisson_max_batch`).
  """
  per_trial = members if isinstance(members, list) else [members] * len(seeds)
  hosts, host = jax.process_count(), jax.process_index()
  rows = slice(host * max_batch // hosts, (host + 1) * max_batch // hosts)
  sizes = [poisson_sizes(len(m), batch_size, int(s), start, stop)
           for m, s in zip(per_trial, seeds)]

  def one_trial(k: int, seed: int, step: int) -> dict[str, np.ndarray]:
    idx, n = per_trial[k], int(sizes[k][step - start])
    if n > max_batch:
      raise RuntimeError(f"a Poisson batch of {n} rows at step {step} (trial {k}) exceeds "
                         f"max_batch={max_batch}; it must not be truncated")
    picked = np.random.default_rng([seed, 0, step, _SUBSET]).choice(len(idx), n,
                                                                     replace=False)
    padded = np.concatenate([idx[picked], np.full(max_batch - n, idx[0], idx.dtype)])
    out = data.read("train", padded[rows], np.random.default_rng([seed, step, 1]))
    return out | {"mask": (np.arange(max_batch) < n)[rows]}

  def batch(step: int) -> dict[str, np.ndarray]:
    trials = [one_trial(k, int(seed), step) for k, seed in enumerate(seeds)]
    return {key: np.stack([b[key] for b in trials]) for key in trials[0]}

  return _iterate(grain.MapDataset.range(start, stop).map(batch), workers)


def eval_batches(data: Data, split: str, indices: np.ndarray, batch_size: int
                 ) -> Iterator[tuple[dict[str, np.ndarray], int]]:
  """This host's rows of fixed-size evaluation batches (the last one padded) and their count."""
  hosts, host = jax.process_count(), jax.process_index()
  for start in range(0, len(indices), batch_size):
    idx = indices[start:start + batch_size]
    valid = len(idx)
    idx = np.pad(idx, (0, batch_size - valid), mode="edge")
    rows = slice(host * batch_size // hosts, (host + 1) * batch_size // hosts)
    yield data.read(split, idx[rows]), valid


_END = object()


def prefetch(batches: Iterator, prepare: Callable = lambda b: b, depth: int = 2) -> Iterator:
  """`prepare(b)` for each b of `batches`, in order, the next `depth` made by a background
  thread while the caller computes with the current one: reading, augmenting and placing a
  batch leave the step's critical path. The batches are those of `batches` exactly, so a
  resumed run still reads what an uninterrupted one would. Closing the generator stops the
  thread and waits for it; an error in it is raised here."""
  ready, stop = queue.Queue(maxsize=depth), threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        ready.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def work():
    try:
      for b in batches:
        if not put((prepare(b), None)):
          return
      put((_END, None))
    except BaseException as e:  # pylint: disable=broad-except
      put((None, e))

  thread = threading.Thread(target=work, daemon=True, name="miajax-prefetch")
  thread.start()
  try:
    while True:
      item, error = ready.get()
      if error is not None:
        raise error
      if item is _END:
        return
      yield item
  finally:
    stop.set()
    # A thread still placing a batch when the interpreter exits (after Ctrl-C, say) aborts
    # the process inside XLA: close returns only once it has left.
    thread.join()


def place(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Assembles this host's rows into global arrays: trials on "trial", rows on "data" (the
  images, labels and a Poisson batch's mask alike)."""
  P = jax.sharding.PartitionSpec
  out = {}
  for k, v in batch.items():
    # Side-set batches carry a (count,) axis between the trial and the row axes.
    spec = P("trial", None, "data") if "/" in k else P("trial", "data")
    out[k] = jax.make_array_from_process_local_data(jax.sharding.NamedSharding(mesh, spec), v)
  return out
