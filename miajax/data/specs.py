"""What miajax knows of each dataset, in one table: classes, the split that plays `test`, the
stored geometry, the normalisation statistics, and whether it is small enough to hold in memory.

Sources, the pipeline, the synthetic stand-ins, export and config validation all read this
table; none keeps a list of its own.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  name: str
  num_classes: int
  # (H, W, C) as stored; ImageNet's records vary in size, so its entry is the models' input,
  # which `input_shape` replaces by the configured crop.
  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]     # per channel, of the train split, on the [0, 1] scale
  std: tuple[float, ...]
  in_memory: bool             # read whole into NumPy arrays at start
  stock: bool                 # a stock TFDS builder, prepared beforehand (`miajax.data.prepare`)
  test_split: str = "test"    # the labelled split that plays `test`
  cropped: bool = False       # inputs are crops of `data.image_size`, not the stored images

  def input_shape(self, image_size: int) -> tuple[int, int, int]:
    """The models' input geometry under `data.image_size` (used only by cropped datasets)."""
    if self.cropped:
      return (image_size, image_size, self.image_shape[-1])
    return self.image_shape


_GREY = (28, 28, 1)
_MNIST_STATS = dict(mean=(0.1307,), std=(0.3081,))

SPECS = {s.name: s for s in (
    DatasetSpec("digits", 10, _GREY, **_MNIST_STATS, in_memory=True, stock=False),
    DatasetSpec("mnist", 10, _GREY, **_MNIST_STATS, in_memory=True, stock=False),
    DatasetSpec("fashion_mnist", 10, _GREY, mean=(0.2860,), std=(0.3530,), in_memory=True,
                stock=False),
    DatasetSpec("cifar10", 10, (32, 32, 3), mean=(0.4914, 0.4822, 0.4465),
                std=(0.2470, 0.2435, 0.2616), in_memory=True, stock=True),
    DatasetSpec("cifar100", 100, (32, 32, 3), mean=(0.5071, 0.4865, 0.4409),
                std=(0.2673, 0.2564, 0.2762), in_memory=True, stock=True),
    # ImageNet has no labelled test split: its validation split plays `test`.
    DatasetSpec("imagenet2012", 1000, (224, 224, 3), mean=(0.485, 0.456, 0.406),
                std=(0.229, 0.224, 0.225), in_memory=False, stock=True,
                test_split="validation", cropped=True),
)}
NAMES = tuple(SPECS)
STOCK_NAMES = tuple(n for n, s in SPECS.items() if s.stock)
