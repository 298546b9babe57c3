"""A workdir with a damaged checkpoint: the rerun resumes from the newest step every trial can
restore, keeps what it skipped, and says so; with nothing restorable it stops in one line."""

import json
import logging

import pytest

from miajax import config as config_lib
from miajax import train
from miajax.errors import UserError


def _config(data_dir):
  c = config_lib.base()
  config_lib.smoke(c)
  c.data.dir = str(data_dir)
  c.seeds = (0, 1)
  c.train.epochs = 2.0              # 30 steps, checkpoints at 10, 20, 30 (two kept)
  c.train.checkpoint_every = 10
  c.attack.epochs = 1
  return c


def _truncate(path, size=100):
  path.write_bytes(path.read_bytes()[:size])


@pytest.mark.slow
def test_a_truncated_checkpoint_is_skipped_kept_and_the_run_resumes_before_it(
    tmp_path, data_dir, caplog):
  caplog.set_level(logging.INFO)
  c = _config(data_dir)
  first = train.train_and_evaluate(c, tmp_path)
  ckpts = tmp_path / "baseline-seed0" / "checkpoints"
  assert sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) == [20, 30]
  _truncate(ckpts / "30" / "state" / "_sharding")
  (tmp_path / "results.json").unlink()

  again = train.train_and_evaluate(c, tmp_path)
  assert "checkpoint step 30 does not restore (baseline-seed0 at step 30" in caplog.text
  assert "resumed 2 trials at step 20 of 30" in caplog.text
  # Nothing deleted: the damaged step and the other trial's step 30 sit beside the new ones.
  for trial in ("baseline-seed0", "baseline-seed1"):
    assert (tmp_path / trial / "checkpoints_set_aside" / "30" / "state").is_dir()
    assert (tmp_path / trial / "checkpoints" / "30" / "commit_success.txt").exists()
  # Same data order and keys from step 20: the same model as the undamaged run.
  for a, b in zip(first, again):
    assert a["test_accuracy"] == b["test_accuracy"] and a["step"] == b["step"] == 30
  assert json.loads((tmp_path / "results.json").read_text())[0]["name"] == "baseline-seed0"


@pytest.mark.slow
def test_no_restorable_step_is_one_line_naming_the_trials_and_the_way_out(tmp_path, data_dir):
  c = _config(data_dir)
  train.train_and_evaluate(c, tmp_path)
  for step in ("20", "30"):
    _truncate(tmp_path / "baseline-seed1" / "checkpoints" / step / "state" / "_sharding")
  (tmp_path / "results.json").unlink()
  with pytest.raises(UserError) as e:
    train.train_and_evaluate(c, tmp_path)
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith("no checkpoint of baseline-seed0, baseline-seed1 restores "
                            "(baseline-seed1 at step 20")
  assert "a new --workdir" in message
  assert (tmp_path / "baseline-seed1" / "checkpoints" / "30").is_dir()   # kept
