"""The one entry point to the datasets: random-access train and test sources by name.

`digits`, `mnist` and `fashion_mnist` are TFDS builders of this package, prepared as
array_record in the data dir on first use from local files (nothing is downloaded). `cifar10`,
`cifar100` and `imagenet2012` are the stock TFDS builders, read from a data dir prepared
beforehand with `python -m miajax.data.prepare NAME`; they are never downloaded here.

Every record comes back as `{"image": np.uint8 (H, W, C), "label": int}`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from typing import Any, Sequence
from unittest import mock

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from miajax import paths
from miajax.data import digits
from miajax.data import idx
from miajax.data import specs
from miajax.data import staging
from miajax.errors import NotPrepared, UserError

NAMES = specs.NAMES
STOCK_NAMES = specs.STOCK_NAMES

# Builders of this package, prepared on first use.
_OURS = {
    "digits": digits.MiajaxDigits,
    "mnist": idx.MiajaxMnist,
    "fashion_mnist": idx.MiajaxFashionMnist,
}


@dataclasses.dataclass(frozen=True)
class Records:
  """A random-access view of a TFDS data source that yields only image and label.

  Stock datasets carry extra features (`id`, cifar100's `coarse_label`); dropping them here
  keeps every dataset's records alike. Picklable when the wrapped source is, as grain's
  worker processes need.
  """

  source: Any

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return _record(self.source[index])

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    if _reads_batches(self.source):
      records = self.source.__getitems__(list(indices))
    else:
      records = [self.source[i] for i in indices]
    return [_record(r) for r in records]

  def __iter__(self):
    for i in range(len(self)):
      yield self[i]


def _reads_batches(source: Any) -> bool:
  """Whether `source.__getitems__` can be used (one batched read, several times faster).

  Under `tfds.testing.mock_data` (TFDS 4.9.10) the faked `__getitems__` is installed unbound
  and raises TypeError, while `__getitem__` works; so mocked sources are read record by record.
  """
  inner = getattr(source, "data_source", None)
  return hasattr(source, "__getitems__") and not isinstance(inner, mock.Mock)


def _record(record: dict[str, Any]) -> dict[str, Any]:
  return {"image": np.asarray(record["image"], dtype=np.uint8), "label": int(record["label"])}


@dataclasses.dataclass(frozen=True)
class Sources:
  """Train and test sources of one dataset.

  Attributes:
    train: random-access source (`len(src)`, `src[i]`, `src.__getitems__(keys)`) of the train
      split; `src[i]` is `{"image": np.uint8 (H, W, C), "label": int}`.
    test: the same for the test split (ImageNet: the `validation` split).
    num_classes: number of labels.
    image_shape: (H, W, C) as stored; (None, None, 3) where sizes vary (ImageNet).
    name: the dataset's name, one of `NAMES`.
    synthetic: True for `miajax.data.synthetic`'s stand-in images, never the dataset itself.
  """

  train: Any
  test: Any
  num_classes: int
  image_shape: tuple[int | None, int | None, int]
  name: str
  synthetic: bool = False


def load(name: str, data_dir: str | None = None, manual_dir: str | None = None) -> Sources:
  """Returns the train and test sources of dataset `name`.

  Args:
    name: one of `NAMES`.
    data_dir: TFDS data dir; None means TFDS's default ($TFDS_DATA_DIR, else
      ~/tensorflow_datasets). A gs:// URL is staged to local disk first (`staging`), for the
      datasets held in memory only.
    manual_dir: directory of the IDX `.gz` files for `mnist` (required on first use) and
      `fashion_mnist` (default /usr/share/datasets/fashion-mnist); for `imagenet2012`, only
      named in the error that says how to prepare it; ignored otherwise.

  Raises:
    NotPrepared: missing local files, or a stock dataset not prepared in data_dir.
    UserError: unknown name, or a prepared dataset that cannot be read.
  """
  if name not in NAMES:
    raise UserError(f"data.name={name!r} is not a known dataset; allowed: {', '.join(NAMES)}")
  if paths.is_remote(data_dir):
    # ArrayRecord's reader reads local files only: the prepared dataset is copied to disk.
    builder_cls = _OURS.get(name) or tfds.builder_cls(name)
    data_dir = staging.stage(name, builder_cls.name, str(builder_cls.VERSION), data_dir)
  # Resolved now, not at TFDS import, so a TFDS_DATA_DIR set later is still honoured.
  data_dir = os.path.expanduser(data_dir or tfds.core.constants.get_default_data_dir())
  if name in _OURS:
    train, test, info = _load_ours(name, data_dir, manual_dir)
  else:
    train, test, info = _load_stock(name, data_dir, manual_dir)
  return Sources(
      train=Records(train),
      test=Records(test),
      num_classes=specs.SPECS[name].num_classes,
      image_shape=tuple(info.features["image"].shape),
      name=name,
  )


def _load_ours(name: str, data_dir: str, manual_dir: str | None):
  builder = _OURS[name](data_dir=data_dir)
  if not builder.is_prepared():
    _prepare_ours(name, data_dir, manual_dir)
    builder = _OURS[name](data_dir=data_dir)
  train, test = builder.as_data_source(split=["train", "test"])
  return train, test, builder.info


def _prepare_ours(name: str, data_dir: str, manual_dir: str | None) -> None:
  """Builds one of this package's datasets as array_record in `data_dir`, offline."""
  builder_cls = _OURS[name]
  if name in ("mnist", "fashion_mnist"):
    manual_dir = manual_dir or builder_cls.DEFAULT_MANUAL_DIR
    if manual_dir is not None:
      manual_dir = os.path.expanduser(manual_dir)
    idx.check_manual_dir(name, manual_dir)
  config = tfds.download.DownloadConfig(
      manual_dir=manual_dir,
      # Otherwise TFDS first asks GCS whether a prepared copy exists: a network call.
      try_download_gcs=False,
  )
  builder = builder_cls(data_dir=data_dir)
  logging.info("building %s in %s from %s (nothing is downloaded)", name, data_dir,
               manual_dir or "the copy bundled with scikit-learn")
  try:
    # TFDS prints "Downloading and preparing dataset ..." whatever the source (not true
    # here), and progress bars that tear the log lines apart.
    tfds.disable_progress_bar()
    with contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare(file_format="array_record", download_config=config)
  except OSError:
    # Another process (a second host, a parallel run) may have finished the same
    # directory first, so our final rename found it there: theirs is as good as ours.
    if not builder_cls(data_dir=data_dir).is_prepared():
      raise


def prepare_ours(name: str, data_dir: str | None = None, manual_dir: str | None = None) -> str:
  """Builds `digits`, `mnist` or `fashion_mnist` if needed; returns its prepared directory."""
  data_dir = os.path.expanduser(data_dir or tfds.core.constants.get_default_data_dir())
  if not _OURS[name](data_dir=data_dir).is_prepared():
    _prepare_ours(name, data_dir, manual_dir)
  return os.fspath(_OURS[name](data_dir=data_dir).data_path)


def not_prepared_message(name: str, data_dir: str, manual_dir: str | None = None) -> str:
  """The one-line error for a stock dataset missing from `data_dir`: how to prepare it."""
  if name == "imagenet2012":
    # TFDS cannot download ImageNet: the two tar files must be fetched by hand.
    tars = manual_dir or "TARS"
    how = (f"put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from image-net.org) in "
           f"{tars} and prepare it first (needs TensorFlow and hours): python -m "
           f"miajax.data.prepare imagenet2012 --data_dir={data_dir} --manual_dir={tars}")
  else:
    how = (f"prepare it first (needs network and TensorFlow): python -m miajax.data.prepare "
           f"{name} --data_dir={data_dir}")
  return (f"data.name={name!r} is not prepared in data.dir={data_dir!r}; {how} "
          "(a :smoke config runs without it, on SYNTHETIC images)")


def _load_stock(name: str, data_dir: str, manual_dir: str | None = None):
  test_split = specs.SPECS[name].test_split
  try:
    # download=False: preparing is a separate, explicit step (it needs network).
    train, test = tfds.data_source(name, split=["train", test_split], data_dir=data_dir,
                                   download=False)
  except (NotImplementedError, ValueError, FileNotFoundError) as e:
    # Reading first and diagnosing after keeps `tfds.testing.mock_data` working, which
    # fakes the read but not the files a check beforehand would look for.
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      raise NotPrepared(not_prepared_message(name, data_dir, manual_dir),
                        f"is not prepared in {data_dir}") from None
    command = f"python -m miajax.data.prepare {name} --data_dir={data_dir}"
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise UserError(f"data.name={name!r} in data.dir={data_dir!r} cannot be read as "
                    f"array_record ({reason}); prepare it again with: {command}") from e
  return train, test, train.dataset_info


def to_arrays(source: Any, indices: Sequence[int] | np.ndarray | None = None,
              chunk_size: int = 4096) -> dict[str, np.ndarray]:
  """Reads records of a source into memory (for small datasets).

  Args:
    source: a random-access source such as `Sources.train`.
    indices: which records, in this order; None means all.
    chunk_size: records per batched read (`__getitems__`, when the source has it).

  Returns:
    {"image": (N, H, W, C) uint8, "label": (N,) int32}.

  Raises:
    ValueError: the records' images differ in shape (e.g. ImageNet), so they cannot stack.
  """
  indices = (np.arange(len(source)) if indices is None
             else np.asarray(indices, dtype=np.int64).reshape(-1))
  if len(indices) == 0:
    shape = np.shape(source[0]["image"]) if len(source) else (0, 0, 0)
    return {"image": np.zeros((0, *shape), np.uint8), "label": np.zeros((0,), np.int32)}
  images = labels = None
  for start in range(0, len(indices), chunk_size):
    keys = [int(k) for k in indices[start:start + chunk_size]]
    if hasattr(source, "__getitems__"):
      records = source.__getitems__(keys)
    else:
      records = [source[k] for k in keys]
    if images is None:
      shape = np.shape(records[0]["image"])
      images = np.empty((len(indices), *shape), np.uint8)
      labels = np.empty((len(indices),), np.int32)
    for j, record in enumerate(records):
      image = record["image"]
      if np.shape(image) != shape:
        raise ValueError(f"record {keys[j]} has image shape {np.shape(image)}, record "
                         f"{int(indices[0])} has {shape}; to_arrays needs one fixed shape")
      images[start + j] = image
      labels[start + j] = record["label"]
  return {"image": images, "label": labels}
