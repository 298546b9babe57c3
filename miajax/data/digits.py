"""scikit-learn's bundled 8x8 handwritten digits as a TFDS dataset in MNIST geometry.

1,797 real images ship inside scikit-learn, so this dataset builds with no network and no
TensorFlow; it is the embedded default. Each digit is scaled from 0..16 to 0..255, resized
bilinearly to 20x20 and centred in a 28x28 frame (MNIST's 20x20 box), so models written for
MNIST run on it unchanged.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import tensorflow_datasets as tfds

from miajax.data import idx

NUM_TRAIN = 1000  # the remaining 797 images are the test split
SPLIT_SEED = 0
_BOX = 20
_FRAME = 28


def to_mnist_geometry(images: np.ndarray) -> np.ndarray:
  """Maps (N, 8, 8) digits with values 0..16 to (N, 28, 28, 1) uint8 in MNIST's layout."""
  images = np.asarray(images, dtype=np.float64) * (255.0 / 16.0)
  # order=1 is bilinear; zoom only the two spatial axes.
  zoomed = scipy.ndimage.zoom(images, (1, _BOX / images.shape[1], _BOX / images.shape[2]),
                              order=1, grid_mode=False)
  out = np.zeros((len(images), _FRAME, _FRAME, 1), np.uint8)
  lo = (_FRAME - _BOX) // 2
  out[:, lo:lo + _BOX, lo:lo + _BOX, 0] = np.clip(np.rint(zoomed), 0, 255).astype(np.uint8)
  return out


def split_indices() -> dict[str, np.ndarray]:
  """Indices into `sklearn.datasets.load_digits()` of each split (fixed seeded permutation)."""
  order = np.random.default_rng(SPLIT_SEED).permutation(1797)
  return {"train": order[:NUM_TRAIN], "test": order[NUM_TRAIN:]}


class MiajaxDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8x8 handwritten digits, resized to 20x20 and centred in 28x28x1 uint8."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "1,000 train / 797 test, MNIST geometry."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=idx.mnist_features(),
        supervised_keys=("image", "label"),
        homepage="https://scikit-learn.org/stable/modules/generated/"
        "sklearn.datasets.load_digits.html",
        # Record i of a split is the split's i-th index from `split_indices()`.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data ships with scikit-learn.
    import sklearn.datasets  # pylint: disable=g-import-not-at-top  (only needed to build)

    digits = sklearn.datasets.load_digits()
    images = to_mnist_geometry(digits.images)
    labels = digits.target.astype(np.int64)
    return {split: self._generate_examples(images[ix], labels[ix])
            for split, ix in split_indices().items()}

  def _generate_examples(self, images, labels):
    # With shuffling disabled TFDS writes in key order, so the key is the position.
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": label}
