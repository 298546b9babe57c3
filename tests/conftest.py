"""Shared fixtures: one offline TFDS data dir per test session, CPU only."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
  return tmp_path_factory.mktemp("tfds")


def run_main(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
  """`python -m miajax.main ARGS` from the repository root, output captured."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "miajax.main", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)
