"""Shared fixtures: one offline TFDS data dir per test session, CPU only."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = Path(__file__).resolve().parent.parent


# The tests compile many small programs and run each for a few steps, so compiling is most of
# their time. Level 0 lowers LLVM's effort only; the HLO and what it computes are XLA's usual.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def pytest_configure(config):
  """Sets, for this process, its xdist workers and every run they start: TEST_XLA_FLAGS, and
  one persistent compilation cache for the session, since the runs compile the same programs
  again and again (every resume, every method's reference run). A cache hit loads what XLA
  compiled before, so results are bitwise a fresh compile's; the size limit turns on the
  cache's file lock, as processes read and write it at once. Flags or a cache given from
  outside are kept.
  """
  if "PYTEST_XDIST_WORKER" in os.environ:
    return                                    # inherited from the controller
  flags = os.environ.get("XLA_FLAGS", "")
  if "--xla_backend_optimization_level" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {TEST_XLA_FLAGS}".strip()
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    config.jax_cache = tempfile.mkdtemp(prefix="miajax-tests-jax-cache-")
    os.environ.update(JAX_COMPILATION_CACHE_DIR=config.jax_cache,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.1",
                      JAX_COMPILATION_CACHE_MAX_SIZE=str(8 << 30))


def pytest_unconfigure(config):
  if hasattr(config, "jax_cache"):
    shutil.rmtree(config.jax_cache, ignore_errors=True)


def cpu_env(devices: int | None = None, *, fast_compile: bool = True, **extra: str
            ) -> dict[str, str]:
  """The environment of a run a test starts: CPU only, this session's XLA flags, and `devices`
  forced CPU devices where given (JAX fixes the count when it starts). fast_compile=False
  drops TEST_XLA_FLAGS, for runs whose time goes into running rather than compiling (measured:
  the CIFAR models' per-example gradients ran 3x slower at level 0, processes of 2 devices
  each 1.1x slower)."""
  drop = (DEVICE_COUNT_FLAG,) if fast_compile else (DEVICE_COUNT_FLAG, TEST_XLA_FLAGS)
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(drop)]
  if devices is not None:
    flags.append(f"{DEVICE_COUNT_FLAG}={devices}")
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES",)}
  return env | {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": " ".join(flags)} | extra


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
  return tmp_path_factory.mktemp("tfds")


def run_main(*args: str, timeout: float = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
  """`python -m miajax.main ARGS` from `cwd` (the repository root), output captured."""
  return subprocess.run([sys.executable, "-m", "miajax.main", *args], cwd=cwd, env=cpu_env(),
                        capture_output=True, text=True, timeout=timeout)
