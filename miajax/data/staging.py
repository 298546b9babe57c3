"""A data dir in Cloud Storage (gs://BUCKET/PATH): the prepared dataset copied to local disk.

TFDS's data sources read records through ArrayRecord's own C++ reader, which reads local files
only (it hung on gs://, and no endpoint setting points it at an emulator). A dataset held in
memory (`DatasetSpec.in_memory`: MNIST, Fashion-MNIST, CIFAR) is small, so its prepared
directory, `<data.dir>/<builder>/<version>/`, is copied through the project's path layer
(`miajax.paths`: gcsfs, which honours the emulator settings) into a local cache, and read there
by the usual local code. A streamed dataset (ImageNet) is refused: mount the bucket with
gcsfuse and pass the mount point.

The copy goes into a temporary sibling directory renamed into place when whole, so an
interrupted copy is never trusted; a lock file serialises the processes of one host (each
host of a pod stages its own copy). A staged copy is reused while its file names and sizes
match the bucket's, which one listing of the bucket tells.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid

from absl import logging

from miajax import paths
from miajax.data import specs
from miajax.errors import UserError

CACHE_ENV = "MIAJAX_DATA_CACHE"


def cache_root() -> str:
  """$MIAJAX_DATA_CACHE, else the user's cache directory + miajax/data."""
  if os.environ.get(CACHE_ENV):
    return os.path.expanduser(os.environ[CACHE_ENV])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "miajax", "data")


def local_dir(data_dir: str) -> str:
  """The local TFDS data dir that mirrors gs://BUCKET/PATH: CACHE/BUCKET/PATH."""
  parts = str(data_dir)[len("gs://"):].rstrip("/").split("/")
  if not parts[0] or any(p in ("", ".", "..") for p in parts):
    raise UserError(f"data.dir={data_dir!r} is not a Cloud Storage URL miajax can mirror; "
                    "allowed: gs://BUCKET/PATH without empty, . or .. parts")
  return os.path.join(cache_root(), *parts)


def refusal(name: str, data_dir: str) -> str | None:
  """Why dataset `name` cannot be read from gs:// data dir `data_dir`; None when it can."""
  if specs.SPECS[name].in_memory:
    return None
  return (f"data.dir={data_dir!r} is not allowed for data.name={name!r}, which is streamed "
          "from its files, not copied to local disk; allowed: a local or shared-disk "
          "directory, e.g. the bucket mounted with gcsfuse (gcsfuse BUCKET /mnt/BUCKET, then "
          "--config.data.dir=/mnt/BUCKET/PATH)")


def stage(name: str, builder_name: str, version: str, data_dir: str) -> str:
  """Copies `<data_dir>/<builder_name>/<version>/` to the local cache unless a whole copy is
  there already; returns the local data dir to read instead of `data_dir`.

  Raises:
    UserError: a streamed dataset, a bucket that does not exist or cannot be read, or no
      prepared dataset there (nothing is written then).
  """
  why = refusal(name, data_dir)
  if why:
    raise UserError(why)
  rel = f"{builder_name}/{version}"
  source = f"{str(data_dir).rstrip('/')}/{rel}"
  local = local_dir(data_dir)
  wanted = _remote_sizes(name, builder_name, data_dir, source)
  target = os.path.join(local, builder_name, version)
  if _local_sizes(target) == wanted:
    logging.info("data: %s: the copy of %s in %s", name, source, target)
    return local
  try:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    lock = open(os.path.join(os.path.dirname(target), f".{version}.lock"), "a")
  except OSError as e:
    raise UserError(f"data.dir={data_dir!r} cannot be copied to {target} ({e.strerror}); "
                    f"allowed: a cache directory you can write, set with {CACHE_ENV}=DIR") from None
  with lock:
    fcntl.flock(lock, fcntl.LOCK_EX)            # held until closed
    if _local_sizes(target) == wanted:          # another process of this host copied it
      return local
    logging.info("data: %s: copying %d files (%.1f MB) of %s to %s", name, len(wanted),
                 sum(wanted.values()) / 1e6, source, target)
    tmp = os.path.join(os.path.dirname(target), f".{version}.tmp-{uuid.uuid4().hex}")
    try:
      try:
        for file in sorted(wanted):
          os.makedirs(os.path.dirname(os.path.join(tmp, file)), exist_ok=True)
          paths.download(f"{source}/{file}", os.path.join(tmp, file))
      except Exception as e:  # pylint: disable=broad-except
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"data.dir={data_dir!r}: copying {source} to {target} broke off "
                        f"({reason[:200]}); nothing of it is kept, run again") from None
      if _local_sizes(tmp) != wanted:
        raise UserError(f"data.dir={data_dir!r}: {source} changed while it was copied to "
                        f"{target}; allowed: a prepared dataset nothing writes to (run again)")
      if os.path.exists(target):                # stale: the bucket's copy differs
        old = os.path.join(os.path.dirname(target), f".{version}.old-{uuid.uuid4().hex}")
        os.rename(target, old)
        shutil.rmtree(old, ignore_errors=True)
      os.rename(tmp, target)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
  return local


def _remote_sizes(name: str, builder_name: str, data_dir: str, source: str) -> dict[str, int]:
  """{name relative to `source`: size} of every object under it, or a one-line UserError."""
  how = (f"prepare it on a local disk and copy it there: python -m miajax.data.prepare {name} "
         f"--data_dir=DIR && gsutil -m cp -r DIR/{builder_name} {str(data_dir).rstrip('/')}/")
  try:
    sizes = paths.sizes(source)
  except FileNotFoundError:
    raise UserError(f"data.dir={data_dir!r}: bucket {paths.bucket(data_dir)} does not exist; "
                    f"allowed: a bucket holding the prepared {name}: {how}") from None
  except Exception as e:  # pylint: disable=broad-except
    # gcsfs raises OSError subclasses, aiohttp and google-auth their own: all mean the same.
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise UserError(f"data.dir={data_dir!r} cannot be read ({reason[:200]}); allowed: a "
                    f"bucket you can read holding the prepared {name}") from None
  if not any(n.endswith("dataset_info.json") for n in sizes):
    raise UserError(f"data.name={name!r} is not prepared in data.dir={data_dir!r} (no "
                    f"dataset_info.json under {source}); {how}")
  bad = [n for n in sizes if any(p in ("", ".", "..") for p in n.split("/"))]
  if bad:
    raise UserError(f"data.dir={data_dir!r}: {source}/{bad[0]} is not a name a local copy "
                    "can hold; allowed: the files miajax.data.prepare writes")
  return sizes


def _local_sizes(directory: str) -> dict[str, int] | None:
  if not os.path.isdir(directory):
    return None
  sizes = {}
  for root, _, files in os.walk(directory):
    for f in files:
      path = os.path.join(root, f)
      sizes[os.path.relpath(path, directory).replace(os.sep, "/")] = os.path.getsize(path)
  return sizes

