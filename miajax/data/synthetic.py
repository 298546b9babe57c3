"""SYNTHETIC stand-ins for the datasets, so a `:smoke` check runs before any data is prepared.

Never a dataset: each image is seeded noise around one coarse pattern per class, in the real
dataset's shape and number of classes, so every model, crop and split runs as it would on the
real data and training has something to learn (and members something to leak). A `:smoke`
config uses them only when the real data is not on the machine (`pipeline.load`), and every
record and table of such a run says SYNTHETIC.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from miajax.data import sources
from miajax.data import specs

DEFAULT_TRAIN = 1024  # members when the config does not set data.train_size
_GRID = 4             # a class's pattern: a 4x4 grid of colours, upsampled to the image
_SIGNAL, _NOISE = 16.0, 40.0   # grey levels of the pattern and of each image's own noise
_SPLITS = {"train": 0, "test": 1}


@dataclasses.dataclass(frozen=True)
class Records:
  """One split of synthetic images, readable by index like `sources.Records`; picklable.

  Record i is a pure function of (seed, split, i): the same on every host and every run.
  """

  name: str
  split: str
  labels: np.ndarray
  seed: int = 0

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} of a synthetic split of {len(self)}")
    label = int(self.labels[index])
    noise = np.random.default_rng([self.seed, _SPLITS[self.split], index]).standard_normal(
        specs.SPECS[self.name].image_shape, np.float32)
    image = 128.0 + _SIGNAL * pattern(self.name, label, self.seed) + _NOISE * noise
    return {"image": np.clip(np.rint(image), 0, 255).astype(np.uint8), "label": label}

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    return [self[i] for i in indices]


def pattern(name: str, label: int, seed: int = 0) -> np.ndarray:
  """Class `label`'s pattern in [-1, 1], shaped like the dataset's images."""
  h, w, c = specs.SPECS[name].image_shape
  grid = np.random.default_rng([seed, 0xC1A55, label]).uniform(-1, 1, (_GRID, _GRID, c))
  return np.repeat(np.repeat(grid, h // _GRID, axis=0), w // _GRID, axis=1).astype(np.float32)


def sizes(train_size: int | None) -> tuple[int, int]:
  """(train, test) sizes: the members a config asks for, and 1.5x as many test images, so that
  both attack sets and Min-Max's reference set are full (see `splits.make`)."""
  train = train_size or DEFAULT_TRAIN
  return train, max(3, train * 3 // 2)


def classes_used(num_classes: int, num_train: int) -> np.ndarray:
  """The labels drawn: every class, or for a set too small for that (ImageNet's 1,000 classes
  and 32 smoke members) train/8 classes spread over the whole range. The NN attack pairs
  members with non-members of their class (`evaluate._class_matched`), so 32 members over
  1,000 classes would leave it none."""
  used = min(num_classes, max(2, num_train // 8))
  return np.unique(np.round(np.linspace(0, num_classes - 1, used)).astype(np.int64))


def load(name: str, train_size: int | None = None, seed: int = 0) -> sources.Sources:
  """Synthetic train and test sources of dataset `name`'s shape and classes."""
  num_classes = specs.SPECS[name].num_classes
  num_train, num_test = sizes(train_size)
  used = classes_used(num_classes, num_train)
  sets = {}
  for split, n in zip(_SPLITS, (num_train, num_test)):
    draw = np.random.default_rng([seed, 0x1ABE1, _SPLITS[split]]).integers(0, len(used), n)
    sets[split] = Records(name, split, used[draw], seed)
  return sources.Sources(train=sets["train"], test=sets["test"], num_classes=num_classes,
                         image_shape=specs.SPECS[name].image_shape, name=name, synthetic=True)


def describe(src: sources.Sources) -> str:
  """What a log line says of synthetic sources: their geometry and sizes."""
  h, w, c = src.image_shape
  used = len(np.unique(src.train.labels))
  classes = (f"{src.num_classes} classes" if used == src.num_classes
             else f"{used} of {src.num_classes} classes")
  return (f"SYNTHETIC images ({h}x{w}x{c}, {classes}, {len(src.train)} train / "
          f"{len(src.test)} test; seeded noise around one pattern per class)")
