"""Where a run's files live: a local directory, or a Cloud Storage URL (gs://BUCKET/PATH).

A gs:// workdir is read and written in place through etils `epath` (fsspec's gcsfs); Orbax
and TensorStore write the checkpoints there natively, and TensorBoard's event files go through
epath too (`_EventObject`). Every site that names a workdir's file calls `of`, so the rest of
the code handles a local `pathlib.Path` and an `epath.Path` alike. Cloud Storage has no
rename, no append and no directories: an object upload is already whole or absent, so the
atomic writes write in place there; appending rewrites the object; a "directory" exists once
an object is under it.
"""

import contextlib
import io
import logging
import os
import pathlib
import shutil
import uuid
from typing import Any

import numpy as np

from miajax.errors import UserError

SCHEMES = ("gs://",)
ALLOWED = "allowed: a local directory or a Cloud Storage URL gs://BUCKET/PATH"


def is_remote(path: Any) -> bool:
  return str(path).startswith(SCHEMES)


def of(path: Any):
  """`path` as a path object: an epath.Path for gs://, else a pathlib.Path.

  pathlib would fold "gs://b/x" into "gs:/b/x", so every path that may be remote comes here.
  """
  if is_remote(path):
    from etils import epath  # pylint: disable=g-import-not-at-top
    _no_listing_cache()
    return path if isinstance(path, epath.Path) else epath.Path(str(path))
  if "://" in str(path):
    raise UserError(f"{path} is a URL of a kind miajax does not write; {ALLOWED}")
  return pathlib.Path(path)


def absolute(path: Any):
  path = of(path)
  return path if is_remote(path) else path.absolute()


def bucket(path: Any) -> str:
  """gs://BUCKET of a gs:// path."""
  return "gs://" + str(path)[len("gs://"):].split("/", 1)[0]


def write_text(path: Any, text: str) -> None:
  """Writes the whole file or nothing: through a temporary file and a rename on disk; a
  Cloud Storage object is replaced whole by its upload."""
  write_bytes(path, text.encode())


def write_bytes(path: Any, data: bytes) -> None:
  path = of(path)
  if is_remote(path):
    path.write_bytes(data)
    return
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_bytes(data)
  tmp.replace(path)


def append_text(path: Any, text: str) -> None:
  path = of(path)
  if is_remote(path):   # objects cannot be appended to: rewritten with the new lines
    path.write_text((path.read_text() if path.exists() else "") + text)
    return
  with open(path, "a") as f:
    f.write(text)


def savez(path: Any, **arrays) -> None:
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  write_bytes(path, buffer.getvalue())


def load_npz(path: Any, **kwargs):
  """np.load of an .npz file (a context manager), from disk or read whole from a bucket."""
  path = of(path)
  if is_remote(path):
    return np.load(io.BytesIO(path.read_bytes()), **kwargs)
  return np.load(path, **kwargs)


def mkdir(path: Any) -> None:
  """A directory and its parents; nothing to do on Cloud Storage (prefixes, not folders)."""
  path = of(path)
  if not is_remote(path):
    path.mkdir(parents=True, exist_ok=True)


def move(src: Any, dst: Any) -> None:
  """Moves a file or a directory tree (on Cloud Storage: copies each object, then deletes)."""
  src, dst = of(src), of(dst)
  if not is_remote(src):
    shutil.move(str(src), str(dst))
    return
  _filesystem().mv(str(src), str(dst), recursive=True)


def mtime_ns(path: Any) -> int:
  path = of(path)
  if not is_remote(path):
    return path.stat().st_mtime_ns
  mtime = _filesystem().info(str(path)).get("mtime")   # gcsfs: the object's last upload
  return int(mtime.timestamp() * 1e9) if hasattr(mtime, "timestamp") else 0


def sizes(path: Any) -> dict[str, int]:
  """{name relative to gs:// `path`: size in bytes} of every object under it, from one listing
  ({} when there is none). FileNotFoundError: its bucket does not exist."""
  prefix = str(path)[len("gs://"):].rstrip("/")
  with _quiet_gcsfs():
    found = _filesystem().find(prefix, detail=True)
  return {key[len(prefix) + 1:]: int(info["size"]) for key, info in found.items()
          if key.startswith(prefix + "/") and not key.endswith("/")}   # "/": folder markers


def download(path: Any, local: Any) -> None:
  """Copies gs:// object `path` to local file `local`, streamed."""
  _filesystem().get_file(str(path), os.fspath(local))


def check_writable(path: Any, label: str) -> None:
  """A gs:// directory that can be written: its bucket exists and takes an object (a probe,
  deleted at once). Anything else is one UserError, `label` (the flag) and the bucket."""
  path = of(path)
  probe = path / f".miajax-probe-{uuid.uuid4().hex}"   # one per process of a pod
  try:
    with _quiet_gcsfs():
      probe.write_bytes(b"")
      probe.unlink()
  except FileNotFoundError:
    raise UserError(f"{label}: bucket {bucket(path)} does not exist; {ALLOWED} in an "
                    "existing bucket you can write") from None
  except Exception as e:  # pylint: disable=broad-except
    # gcsfs raises OSError subclasses, aiohttp and google-auth their own: all mean the same.
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise UserError(f"{label}: bucket {bucket(path)} cannot be written ({reason[:200]});"
                    f" {ALLOWED} in an existing bucket you can write") from None


@contextlib.contextmanager
def _quiet_gcsfs():
  """gcsfs's retries log tracebacks; the caller's one-line error says what went wrong."""
  quiet = logging.getLogger("gcsfs")
  was, quiet.disabled = quiet.disabled, True
  try:
    yield
  finally:
    quiet.disabled = was


def _filesystem():
  import fsspec  # pylint: disable=g-import-not-at-top
  _no_listing_cache()
  return fsspec.filesystem("gs")


def _no_listing_cache() -> None:
  """gcsfs forgets every listing: TensorStore writes checkpoint objects behind its back, so a
  cached listing of a step's directory would miss them (Orbax then fails to delete an old
  step it cannot see). Set before the first gs:// filesystem is made; an explicit setting,
  e.g. FSSPEC_GS_USE_LISTINGS_CACHE, is kept."""
  import fsspec  # pylint: disable=g-import-not-at-top
  fsspec.config.conf.setdefault("gs", {}).setdefault("use_listings_cache", False)


class _EventObject:
  """A TensorBoard event file as a Cloud Storage object: records gather in memory and each
  flush uploads the whole file (objects cannot be appended to)."""

  def __init__(self, path: str):
    self.path, self.buffer = of(path), io.BytesIO()

  def write(self, data: bytes) -> None:
    self.buffer.write(data)

  def flush(self) -> None:
    self.path.write_bytes(self.buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _EventObjects:
  def open(self, path):
    return _EventObject(path)

  def directory_check(self, path):
    del path   # no directories on Cloud Storage


def register_tensorboard() -> None:
  """tensorboardX writes gs:// event files through epath, like every other file of a run."""
  from tensorboardX import record_writer  # pylint: disable=g-import-not-at-top
  record_writer.register_writer_factory("gs", _EventObjects())
