"""What a user sees on the command line: one line per mistake, a clean stop on Ctrl-C that the
next run resumes from, and the run's own progress without the libraries' chatter."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_main


@pytest.mark.parametrize("args, line", [
    (["--config.optimizer.learnign_rate=0.1"],
     "error: --config.optimizer.learnign_rate: no such config key; allowed: the config's "
     "keys, e.g. --config.optimizer.learning_rate"),
    (["--config.optimzer.learning_rate=0.1"],
     "error: --config.optimzer.learning_rate: no such config key; allowed: the config's keys, "
     "e.g. --config.optimizer.learning_rate"),
    (["--config=configs/nonexistent.py"],
     "error: --config=configs/nonexistent.py: cannot read it (no such file); allowed: a config "
     "file such as configs/default.py or configs/default.py:smoke"),
    (["--config=configs/default.py:smok"],
     "error: config argument 'smok' is not known; allowed: smoke"),
    (["--config.train.epochs=0"],
     "error: train.epochs=0.0 is not allowed; allowed: a number > 0 (0 trains nothing)"),
    (["--config.sweep.keep=(0.5,0.1)"],
     "error: sweep.keep=(0.5, 0.1) applies to none of methods=('baseline',); allowed: a sweep "
     "of a method in the run (pruning, pruning_minmax), or sweep.keep=()"),
    (["--config.lira.num_shadows=3"],
     "error: lira.num_shadows=3 is not allowed; allowed: 0 (off) or an even integer >= 2"),
    (["--workdir=/proc/miajax"],
     "error: --workdir=/proc/miajax cannot be created (No such file or directory); allowed: "
     "a new or existing directory you can write"),
])
def test_each_mistake_is_one_line_with_exit_status_2(args, line):
  proc = run_main(*args, "--config.methods=('baseline',)")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines() == [line]


def _start(args, env=None, python=sys.executable):
  env = dict(env or os.environ, JAX_PLATFORMS="cpu")
  return subprocess.Popen([str(python), "-m", "miajax.main", *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _smoke(workdir, data_dir, epochs):
  return [f"--workdir={workdir}", "--config=configs/default.py:smoke",
          f"--config.data.dir={data_dir}", "--config.methods=('baseline',)",
          f"--config.train.epochs={epochs}", "--config.train.log_every=5",
          "--config.train.checkpoint_every=1000", "--config.attack.epochs=1"]


@pytest.mark.slow
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_a_checkpoint_says_so_and_the_rerun_resumes_there(
    tmp_path, data_dir, sig, status):
  args = _smoke(tmp_path / "run", data_dir, epochs=100)   # 1,500 steps: far from done
  proc = _start(args)
  for line in proc.stderr:          # wait until training is under way
    if " step 10/" in line:
      break
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == status, err[-3000:]
  last = err.strip().splitlines()[-1]
  match = re.fullmatch(r"interrupted at step (\d+) of baseline; rerun the same command to "
                       r"resume", last)
  assert match, err[-3000:]
  step = int(match.group(1))
  assert (tmp_path / "run" / "baseline-seed0" / "checkpoints" / str(step)).is_dir()
  assert "Traceback" not in err and not (tmp_path / "run" / "results.json").exists()
  if sig == signal.SIGINT:          # the rerun picks up exactly there (and is cut short here)
    again = _start(args)
    for line in again.stderr:
      if "resumed" in line:
        assert f"at step {step} of 1500" in line
        break
    again.send_signal(signal.SIGTERM)
    again.communicate(timeout=300)


@pytest.mark.slow
def test_only_our_own_info_lines_reach_stderr_even_from_a_folder_named_miajax(
    tmp_path, data_dir):
  # A venv inside a clone called "miajax": every library's path then contains "/miajax/".
  clone = tmp_path / "miajax"
  clone.mkdir()
  (clone / ".venv").symlink_to(Path(sys.prefix))
  python = clone / ".venv" / "bin" / "python"
  proc = _start(_smoke(tmp_path / "run", data_dir, epochs=1), python=python)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  info = [l for l in err.splitlines() if l.startswith("I")]
  assert info, err
  for line in info:                 # absl: "I1129 10:00:00.000000 123 train.py:42] ..."
    source = re.match(r"I\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\]", line).group(1)
    assert source in {p.name for p in (ROOT / "miajax").rglob("*.py")}, line
  assert not [l for l in err.splitlines() if "Unable to initialize backend" in l]


def test_a_workdir_whose_saved_splits_differ_is_refused_and_left_as_it_was(tmp_path):
  # Splits written by a version of miajax that drew them differently: resuming would audit
  # against members that the checkpoint's training may not have seen.
  from miajax import splits as splits_lib
  trial = tmp_path / "run" / "baseline-seed0"
  trial.mkdir(parents=True)
  splits_lib.make(99, num_train=1000, num_test=500).save(trial / "splits.npz")
  before = (trial / "splits.npz").read_bytes()
  proc = run_main(f"--workdir={tmp_path / 'run'}", "--config.methods=('baseline',)")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines() == [
      f"error: --workdir={tmp_path / 'run'}: {trial / 'splits.npz'} holds membership splits "
      "this version of miajax draws differently; allowed: a new --workdir"]
  assert (trial / "splits.npz").read_bytes() == before
  assert sorted(p.name for p in trial.iterdir()) == ["splits.npz"]
