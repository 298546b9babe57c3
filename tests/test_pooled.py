"""Runs of one config over disjoint seeds pool into one experiment (`python -m miajax.pooled`):
a trial is a function of its config and seed, not of the other seeds in its run; configs that
differ in more than the seeds, or share a seed, are refused in one line."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, cpu_env
from miajax import config as config_lib
from miajax import pooled
from miajax import train
from miajax.errors import UserError

# What a trial computed (not where or when).
COMPARED = ("test_accuracy", "train_accuracy", "attack_auc", "headline_auc", "split_seed",
            "weights_nonzero")


def _run(workdir, data_dir, seeds):
  c = config_lib.base()
  config_lib.smoke(c)
  c.methods = ("baseline",)
  c.seeds = seeds
  c.split_per_trial = True
  c.data.dir = str(data_dir)
  c.data.train_size = 320
  c.train.epochs = 1.0
  c.attack.epochs = 1
  c.attack.bootstrap_replicates = 20
  train.train_and_evaluate(c, workdir)
  return workdir


def _by_name(records):
  return {r["name"]: {k: r.get(k) for k in COMPARED} for r in records}


def test_two_runs_over_disjoint_seeds_pool_into_what_one_run_over_both_computes(
    tmp_path, data_dir, capsys):
  one, two = _run(tmp_path / "s0", data_dir, (0,)), _run(tmp_path / "s1", data_dir, (1,))
  both = _run(tmp_path / "both", data_dir, (0, 1))
  pooled_records = pooled.pool([str(one), str(two)])
  want = json.loads((both / "results.json").read_text())
  assert _by_name(pooled_records) == _by_name(want)
  assert sorted(r["name"] for r in pooled_records) == ["baseline-seed0", "baseline-seed1"]
  # A seed in both runs is refused, in one line with exit status 2 from the command line.
  out = subprocess.run([sys.executable, "-m", "miajax.pooled", str(one), str(both)], cwd=ROOT,
                       env=cpu_env(), capture_output=True, text=True, timeout=120)
  assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
  assert "seed 0 is in both" in out.stderr and "disjoint seeds" in out.stderr
  pooled.main(["pooled", str(one), str(two)])
  out, err = capsys.readouterr()
  assert "baseline" in out and "pooled 2 trials over seeds 0, 1" in err


def _workdir(path, seeds, **changes):
  config = json.loads(config_lib.base().to_json_best_effort())
  config["seeds"] = list(seeds)
  for key, value in changes.items():
    section, field = key.split(".")
    config[section][field] = value
  path.mkdir()
  (path / "config.json").write_text(json.dumps(config))
  (path / "results.json").write_text(json.dumps(
      [{"name": f"baseline-seed{s}", "method": "baseline", "seed": s} for s in seeds]))
  return str(path)


def test_configs_that_differ_in_more_than_the_seeds_are_refused_naming_the_keys(tmp_path):
  a = _workdir(tmp_path / "a", (0,))
  b = _workdir(tmp_path / "b", (1,), **{"train.epochs": 3.0})
  with pytest.raises(UserError, match=r"differs in train\.epochs\).*allowed: workdirs of one "
                     r"config that differ only in seeds") as e:
    pooled.pool([a, b])
  assert "\n" not in str(e.value)
  assert len(pooled.pool([a, _workdir(tmp_path / "c", (1, 2))])) == 3
  with pytest.raises(UserError, match="1 workdir given; usage"):
    pooled.pool([a])


def test_a_config_written_before_a_section_existed_counts_as_that_sections_default(tmp_path):
  a = _workdir(tmp_path / "a", (0,))
  old = tmp_path / "old"
  _workdir(old, (1,))
  config = json.loads((old / "config.json").read_text())
  del config["canaries"]           # an older run: no such section, i.e. no canaries
  (old / "config.json").write_text(json.dumps(config))
  assert len(pooled.pool([a, str(old)])) == 2
  changed = _workdir(tmp_path / "changed", (2,), **{"canaries.count": 10})
  with pytest.raises(UserError, match=r"differs in canaries\.count"):
    pooled.pool([str(old), changed])
