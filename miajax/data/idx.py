"""MNIST and Fashion-MNIST as TFDS datasets built from local IDX `.gz` files.

The stock TFDS builders download the files and need TensorFlow to encode their `Image`
feature. These builders read the four standard files from a local directory (the TFDS manual
dir) and store `Tensor` features, so they prepare array_record files without TensorFlow and
never touch the network. Debian's `dataset-fashion-mnist` package installs Fashion-MNIST at
/usr/share/datasets/fashion-mnist.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import tensorflow_datasets as tfds

from miajax.errors import NotPrepared, UserError

# The four files of the IDX distribution, per split.
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte) and the number of dimensions.
_UBYTE = 0x08
_DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def mnist_features() -> tfds.features.FeaturesDict:
  """28x28x1 uint8 image and int64 label, as plain tensors (encodable without TensorFlow)."""
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
      "label": tfds.features.Tensor(shape=(), dtype=np.int64),
  })


def read_idx(path: str | os.PathLike[str], ndim: int) -> np.ndarray:
  """Reads a gzipped IDX file of unsigned bytes with `ndim` dimensions.

  Args:
    path: the `.gz` file.
    ndim: expected number of dimensions (3 for images, 1 for labels).

  Returns:
    A uint8 array of the shape the header declares.

  Raises:
    UserError: the file is not a gzipped IDX file of that kind, or is truncated.
  """
  path = os.fspath(path)
  try:
    with gzip.open(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise UserError(f"IDX file {path!r} is not a readable gzip file ({e}); "
                    "expected the standard MNIST-format .gz files") from None
  header_size = 4 + 4 * ndim
  if len(data) < header_size:
    raise UserError(f"IDX file {path!r} is malformed: {len(data)} bytes is shorter than "
                    f"its {header_size}-byte header")
  zeros, dtype_code, dims = struct.unpack(">HBB", data[:4])
  if zeros != 0 or dtype_code != _UBYTE or dims != ndim:
    raise UserError(f"IDX file {path!r} is malformed: magic number "
                    f"0x{data[:4].hex()} is not 0x0000{_UBYTE:02x}{ndim:02x} "
                    f"(unsigned-byte IDX with {ndim} dimension(s))")
  shape = struct.unpack(f">{ndim}I", data[4:header_size])
  size = int(np.prod(shape))
  if len(data) - header_size != size:
    raise UserError(f"IDX file {path!r} is malformed: header shape {shape} needs {size} "
                    f"bytes of data, found {len(data) - header_size}")
  return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def read_split(directory: str | os.PathLike[str], split: str) -> tuple[np.ndarray, np.ndarray]:
  """Returns (images (N, 28, 28, 1) uint8, labels (N,) int64) of one split's IDX files."""
  image_file, label_file = (os.path.join(os.fspath(directory), f) for f in FILES[split])
  images = read_idx(image_file, ndim=3)
  labels = read_idx(label_file, ndim=1)
  if images.shape[1:] != (28, 28):
    raise UserError(f"IDX file {image_file!r} holds {images.shape[1]}x{images.shape[2]} "
                    "images; allowed: 28x28")
  if len(images) != len(labels):
    raise UserError(f"IDX files {image_file!r} and {label_file!r} disagree: "
                    f"{len(images)} images but {len(labels)} labels")
  return images[..., None], labels.astype(np.int64)


def _where(name: str) -> str:
  if name != "fashion_mnist":
    return ""
  return f"; Debian's package dataset-fashion-mnist installs them at {_DEBIAN_FASHION_MNIST}"


def missing_dir_message(name: str, manual_dir, state: str = "does not exist") -> str:
  """The one-line error for a `data.manual_dir` that is unset or absent."""
  files = ", ".join(f for pair in FILES.values() for f in pair)
  if manual_dir is None:
    value, state = None, "is not set"
  else:
    value = os.fspath(manual_dir)
  return (f"data.manual_dir={value!r} {state}; {name} needs a directory holding "
          f"{files}{_where(name)}")


def check_manual_dir(name: str, manual_dir) -> None:
  """Raises NotPrepared unless `manual_dir` holds the four IDX files."""
  value = None if manual_dir is None else os.fspath(manual_dir)
  reason = f"has no IDX files in data.manual_dir={value!r}"
  if value is None or not os.path.isdir(value):
    raise NotPrepared(missing_dir_message(name, manual_dir), reason)
  missing = [f for pair in FILES.values() for f in pair
             if not os.path.isfile(os.path.join(value, f))]
  if missing:
    raise NotPrepared(f"data.manual_dir={value!r} lacks {', '.join(missing)}; "
                      f"{name} needs the four standard IDX .gz files there{_where(name)}",
                      reason)


class _IdxBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared generator of the MNIST-format builders below."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Built from the local IDX .gz files."}
  # Which dataset this is, as `data.name` spells it, and where it lives when not given.
  DATA_NAME: str = ""
  DEFAULT_MANUAL_DIR: str | None = None
  HOMEPAGE: str = ""

  def _info(self) -> tfds.core.DatasetInfo:
    # Built directly: `dataset_info_from_configs` would read any README.md beside this module.
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=mnist_features(),
        supervised_keys=("image", "label"),
        homepage=self.HOMEPAGE,
        # Record i of a split is record i of its IDX file, as in every other tool.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError:
      # The download manager's own message talks about downloading; ours says what to set.
      given = getattr(dl_manager, "_manual_dir", None)
      raise UserError(
          missing_dir_message(self.DATA_NAME, given, "is missing or empty")) from None
    check_manual_dir(self.DATA_NAME, manual_dir)
    return {split: self._generate_examples(manual_dir, split) for split in FILES}

  def _generate_examples(self, manual_dir, split):
    images, labels = read_split(manual_dir, split)
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": label}


class MiajaxMnist(_IdxBuilder):
  """MNIST handwritten digits (60,000 train, 10,000 test), from local IDX files."""

  DATA_NAME = "mnist"
  HOMEPAGE = "https://yann.lecun.com/exdb/mnist/"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
      "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in the manual dir.")


class MiajaxFashionMnist(_IdxBuilder):
  """Fashion-MNIST (60,000 train, 10,000 test), from local IDX files."""

  DATA_NAME = "fashion_mnist"
  DEFAULT_MANUAL_DIR = _DEBIAN_FASHION_MNIST
  HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the four Fashion-MNIST IDX .gz files in the manual dir; Debian's package "
      f"dataset-fashion-mnist installs them at {_DEBIAN_FASHION_MNIST}.")
