r"""Prepares a dataset as array_record in a TFDS data dir, so training can read it offline.

Usage:
  python -m miajax.data.prepare NAME [--data_dir=DIR] [--manual_dir=DIR]

NAME is one of digits, mnist, fashion_mnist, cifar10, cifar100, imagenet2012.

* digits, mnist, fashion_mnist: built from local files, no network, no TensorFlow (training
  also does this on first use). mnist needs --manual_dir holding the four IDX .gz files;
  fashion_mnist defaults to /usr/share/datasets/fashion-mnist (Debian's
  dataset-fashion-mnist package).
* cifar10, cifar100: the stock TFDS builders; they download the data, so this needs network,
  and TensorFlow to encode the images: pip install -e '.[prepare]'.
* imagenet2012: the stock TFDS builder, which cannot download ImageNet: put
  ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from image-net.org) in --manual_dir
  (default DATA_DIR/downloads/manual). Needs TensorFlow as above, and hours.

--data_dir defaults to $TFDS_DATA_DIR, else ~/tensorflow_datasets. Pass the same directory
to training as --config.data.dir. For a data dir in a bucket, prepare into a local DIR and copy
it with gsutil -m cp -r DIR/* gs://BUCKET/PATH, then pass --config.data.dir=gs://BUCKET/PATH.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from absl import app
from absl import flags

from miajax.errors import UserError

_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data dir to prepare into (default: $TFDS_DATA_DIR, else "
    "~/tensorflow_datasets).")
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Directory of local input files: the IDX .gz files for mnist and "
    "fashion_mnist; ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar for imagenet2012.")


def prepare(name: str, data_dir: str | None = None, manual_dir: str | None = None) -> str:
  """Prepares dataset `name` as array_record; returns the prepared directory.

  Raises:
    UserError: unknown name, missing local files, or TensorFlow missing for a stock dataset.
  """
  # Imported here so that `--help` answers without loading TFDS.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from miajax.data import sources  # pylint: disable=g-import-not-at-top

  if name not in sources.NAMES:
    raise UserError(f"NAME={name!r} is not a known dataset; allowed: "
                    f"{', '.join(sources.NAMES)}")
  if "://" in str(data_dir or ""):
    # TFDS builds through a local scratch directory and ArrayRecord writes local files only.
    raise UserError(f"--data_dir={data_dir} is not a directory this can prepare into; allowed: "
                    f"a local directory: python -m miajax.data.prepare {name} --data_dir=DIR, "
                    f"then copy it with: gsutil -m cp -r DIR/* {data_dir}")
  if name not in sources.STOCK_NAMES:
    return sources.prepare_ours(name, data_dir, manual_dir)
  if importlib.util.find_spec("tensorflow") is None:
    raise UserError(f"NAME={name!r} needs TensorFlow to prepare, which is not installed; "
                    "install it with: pip install -e '.[prepare]'")
  data_dir = os.path.expanduser(data_dir or tfds.core.constants.get_default_data_dir())
  builder = tfds.builder(name, data_dir=data_dir)
  config = tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(manual_dir) if manual_dir else None,
      # TFDS's hosted copies are tfrecord, which random access cannot read anyway.
      try_download_gcs=False,
  )
  builder.download_and_prepare(file_format="array_record", download_config=config)
  return os.fspath(builder.data_path)


def main(argv: list[str]) -> None:
  if len(argv) != 2:
    raise app.UsageError("give exactly one dataset NAME (see --help)", exitcode=2)
  try:
    path = prepare(argv[1], _DATA_DIR.value, _MANUAL_DIR.value)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"prepared {argv[1]} at {path}")


if __name__ == "__main__":
  app.run(main)
