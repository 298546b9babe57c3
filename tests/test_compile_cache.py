"""A rerun with the persistent compilation cache compiles nothing that the first run compiled,
and the classifier's initialisation is compiled once per run, not once per method."""

import collections
import re
import subprocess
import sys

import pytest

from conftest import ROOT, cpu_env

pytestmark = pytest.mark.slow

ARGS = ("--config.methods=('baseline','pruning')", "--config.train.epochs=1",
        "--config.attack.epochs=1", "--config.pruning.pretrain_epochs=0.5",
        "--config.admm.epochs=0.5", "--config.admm.update_every=4",
        "--config.pruning.retrain_epochs=0.5", "--config.attack.bootstrap_replicates=20")


def _run(workdir, data_dir, cache):
  env = cpu_env(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_LOG_COMPILES="1",
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  proc = subprocess.run([sys.executable, "-m", "miajax.main", f"--workdir={workdir}",
                         f"--config.data.dir={data_dir}", *ARGS], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stderr


def _compiled(log: str) -> collections.Counter:
  """The programs a run compiled, by name: JAX_LOG_COMPILES logs every program it compiled or
  loaded ("jit(one)"), and each load again as a cache hit ('jit_one')."""
  done = re.findall(r"Finished XLA compilation of (\S+) in", log)
  hits = re.findall(r"Persistent compilation cache hit for '([^']+)'", log)
  key = lambda name: re.sub(r"[^a-z0-9]", "", name.lower())   # jit(<lambda>) ~ jit__lambda_
  return collections.Counter(map(key, done)) - collections.Counter(map(key, hits))


def test_a_rerun_with_the_cache_compiles_nothing_and_init_compiles_once(tmp_path, data_dir):
  first = _run(tmp_path / "first", data_dir, tmp_path / "cache")
  compiled = _compiled(first)
  assert compiled, "JAX_LOG_COMPILES printed no compile"
  # The model's initialisers: one program for both methods' one-trial stacks.
  assert compiled["jitinitvariables"] == 1, compiled
  second = _run(tmp_path / "second", data_dir, tmp_path / "cache")
  assert not _compiled(second), _compiled(second)
  assert "Persistent compilation cache hit" in second
