"""inspect and report read a real workdir and never change it.

One small run of `python -m miajax.main` (two baseline seeds) is built per session; inspect and
report are then run on it from the command line, as a user would, and their output is checked
against what is on disk (the checkpoints restored independently, results.json).
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT, cpu_env, run_main
from miajax import report as report_lib
from miajax import results

pytestmark = pytest.mark.slow
SEEDS = (0, 1)
TRIALS = [f"baseline-seed{s}" for s in SEEDS]


def _cli(module: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
  env = cpu_env()
  return subprocess.run([sys.executable, "-m", f"miajax.{module}", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def _snapshot(root: Path, skip: str | None = None) -> dict[str, str | None]:
  """Every path under root -> sha256 of its bytes (None for directories)."""
  out = {}
  for path in sorted(root.rglob("*")):
    rel = path.relative_to(root).as_posix()
    if skip and (rel == skip or rel.startswith(skip + "/")):
      continue
    out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
  return out


def _shared_dir(tmp_path_factory) -> Path:
  """A directory every xdist worker of this session sees (the session's own without xdist)."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _result(proc: subprocess.CompletedProcess) -> dict:
  return {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_dir) -> tuple[Path, dict]:
  """The run, then inspect (text, --json) and report (default --out) on it, with snapshots
  of the workdir around them; made once per session, even when xdist splits this module.

  The run and the report start in a working directory holding a folder named `miajax` with a
  `report/` inside (a workdir such as /tmp/miajax, after its report): it must not shadow the
  package (once a crash after training, and `No module named miajax.report.__main__`)."""
  shared = _shared_dir(tmp_path_factory)
  wd, saved = shared / "inspect_report_run", shared / "inspect_report_cli.json"
  with open(shared / "inspect_report.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not saved.exists():
      shadowing = shared / "cwd_with_a_miajax_folder"
      (shadowing / "miajax" / "report").mkdir(parents=True, exist_ok=True)
      proc = run_main(f"--workdir={wd}", f"--config.data.dir={data_dir}",
                      "--config.train.epochs=1", "--config.methods=('baseline',)",
                      "--config.attack.epochs=1",
                      f"--config.seeds={SEEDS}", "--config.train.log_every=3",
                      "--config.train.checkpoint_every=10", cwd=shadowing)
      assert proc.returncode == 0, proc.stderr[-3000:]
      before = _snapshot(wd)
      out = {"text": _result(_cli("inspect", str(wd))),
             "json": _result(_cli("inspect", str(wd), "--json")),
             "report": _result(_cli("report", str(wd), cwd=shadowing))}
      out["before"], out["after"] = before, _snapshot(wd, skip="report")
      saved.write_text(json.dumps(out))
  return wd, json.loads(saved.read_text())


@pytest.fixture
def workdir(built) -> Path:
  return built[0]


@pytest.fixture
def runs(built) -> dict:
  out = built[1]
  for name in ("text", "json", "report"):
    assert out[name]["returncode"] == 0, (name, out[name]["stderr"][-3000:])
  return out


def _steps_on_disk(trial: Path) -> list[int]:
  return sorted(int(p.name) for p in (trial / "checkpoints").iterdir() if p.name.isdigit())


def _restored_params(trial: Path, step: int):
  """The params restored the plain Orbax way, independently of miajax.inspect."""
  manager = ocp.CheckpointManager(trial / "checkpoints", item_names=("state", "meta"))
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
  manager.close()
  return state["params"]


def _leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_reading_leaves_the_workdir_byte_identical(workdir, runs):
  assert runs["after"] == runs["before"]
  assert (workdir / "report" / "table1.md").is_file()     # the default --out


def test_inspect_text_lists_each_trial_its_steps_and_parameter_total(workdir, runs):
  text = runs["text"]["stdout"]
  for name in TRIALS:
    steps = _steps_on_disk(workdir / name)
    assert len(steps) >= 2                     # checkpoint_every=10 of 15 steps: 10 and 15
    block = text[text.index(f"{name}  method baseline"):]
    assert f"checkpoints: {', '.join(map(str, steps))}  (latest {steps[-1]}" in block
    total = sum(x.size for x in _leaves(_restored_params(workdir / name, steps[-1])))
    assert re.search(rf"^\s+total\s+{total:,}$", block, re.M), block[:800]
    assert "results: yes" in block.splitlines()[0]


def test_inspect_json_counts_match_the_restored_checkpoint(workdir, runs):
  report = json.loads(runs["json"]["stdout"])
  assert report["kind"] == "workdir"
  assert [t["name"] for t in report["trials"]] == TRIALS
  records = {r["name"]: r for r in results.load(workdir)}
  for t in report["trials"]:
    steps = _steps_on_disk(workdir / t["name"])
    params = _restored_params(workdir / t["name"], steps[-1])
    assert t["steps"] == steps and t["latest_step"] == steps[-1]
    assert t["method"] == "baseline" and t["seed"] == records[t["name"]]["seed"]
    assert t["phase"] == "train" and t["has_results"]
    assert t["params_total"] == sum(x.size for x in _leaves(params))
    assert t["params_total"] == sum(t["params"].values())
    assert set(t["params"]) == set(params)
    for layer, counts in t["layer_sparsity"].items():
      top, leaf = layer.split("/")
      kernel = np.asarray(params[top][leaf])
      assert counts == {"total": kernel.size, "nonzero": int(np.count_nonzero(kernel))}


def test_inspect_one_trial_directory(workdir):
  proc = _cli("inspect", str(workdir / TRIALS[1]), "--json")
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = json.loads(proc.stdout)
  assert report["kind"] == "trial" and [t["name"] for t in report["trials"]] == [TRIALS[1]]
  assert report["trials"][0]["seed"] == SEEDS[1]


def test_report_writes_the_table_figures_and_numbers(workdir, runs):
  out = workdir / "report"
  for name in ("fig2_loss.png", "fig4_gap_vs_attack.png", "roc.png", "fig3_weights.png"):
    data = (out / name).read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5000, name
  records = results.load(workdir)
  table = results.table(records)
  markdown = (out / "table1.md").read_text()
  assert table in markdown and table in runs["report"]["stdout"]
  numbers = json.loads((out / "report.json").read_text())
  assert set(numbers["figures"].values()) == {"written"}
  row = numbers["table1"]["baseline"]
  assert row["trials"] == TRIALS
  for header, get in ((c.header, c.get) for c in results.columns()):
    assert row[header]["values"] == [get(r) for r in records], header
    mean, half, n = results.mean_interval(get(r) for r in records)
    assert (row[header]["mean"], row[header]["half"], row[header]["n"]) == (mean, half, n)
  # The printed row shows exactly those numbers.
  line = next(l for l in markdown.splitlines() if l.startswith("baseline "))
  mean, half, _ = results.mean_interval(r["test_accuracy"] for r in records)
  assert f"{100 * mean:.2f}±{100 * half:.2f}" in line
  # Numbers behind the figures: per-class points and a loss curve per trial, from disk.
  gaps = sorted(c["gap"] for r in records for c in r["per_class"].values())
  assert sorted(p["gap"] for p in numbers["fig4_gap_vs_attack"]["baseline"]) == gaps
  for name in TRIALS:
    lines = (workdir / name / "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(l) for l in lines]
    assert numbers["fig2_loss"][name]["cross_entropy"] == [m["cross_entropy"] for m in logged]
    assert numbers["fig2_loss"][name]["objective"] is None     # the baseline adds no term
  roc = numbers["roc"]["baseline"]
  assert roc["trial"] == TRIALS[0] and "nn" in roc["attacks"]
  record = next(r for r in records if r["name"] == TRIALS[0])
  assert roc["attacks"]["nn"]["auc"] == pytest.approx(record["attack_auc"])
  hist = numbers["fig3_weights"]["baseline"]
  assert hist["trial"] == TRIALS[0] and sum(hist["counts"]) == hist["nonzero"]
  if record["weights_nonzero"] is not None:
    assert hist["nonzero"] == record["weights_nonzero"]


def test_report_tables_pruning_and_dp_and_skips_figures_without_inputs(workdir, tmp_path):
  # results.json alone: the pruning and DP rows come from its fields; figures that need
  # trial directories are skipped with a note.
  records = results.load(workdir)
  pruned = dict(records[0], name="pruning-seed0", method="pruning", group="pruning",
                weights_total=1000,
                weights_nonzero=80, compression_ratio=12.5,
                layer_sparsity={"conv1/kernel": {"total": 200, "nonzero": 60},
                                "fc1/kernel": {"total": 800, "nonzero": 20}})
  private = dict(records[1], name="dp-seed0", method="dp", group="dp", dp_epsilon=6.28,
                 dp_delta=1e-5)
  alone = tmp_path / "alone"
  alone.mkdir()
  (alone / "results.json").write_text(json.dumps([pruned, private]))
  built = report_lib.build(alone, tmp_path / "out")
  md = (tmp_path / "out" / "table1.md").read_text()
  assert "| pruning | 1,000 | 80 | 92.00 | 12.50x |" in md
  assert "| conv1/kernel | 200 | 60 | 70.00 |" in md and "| fc1/kernel | 800 | 20 | 97.50 |" in md
  test_acc = f"{100 * private['test_accuracy']:.2f}"
  assert re.search(rf"\| dp-seed0 \| dp \| \d+ \| 6\.28 \| 1e-05 \| {test_acc} \|", md), md
  assert built["figures"]["fig4_gap_vs_attack.png"] == "written"
  for name in ("fig2_loss.png", "roc.png", "fig3_weights.png"):
    assert built["figures"][name].startswith("skipped"), name
    assert not (tmp_path / "out" / name).exists()
    assert any(name in note for note in built["notes"])


def _no_results(tmp_path: Path) -> Path:
  trial = tmp_path / "w" / "baseline-seed0"
  trial.mkdir(parents=True)
  (trial / "config.json").write_text(json.dumps({"trial": {"name": trial.name}}))
  return trial.parent


def _bad_results(tmp_path: Path) -> Path:
  (tmp_path / "w").mkdir()
  (tmp_path / "w" / "results.json").write_text("{not json")
  return tmp_path / "w"


@pytest.mark.parametrize("module,make,says", [
    ("inspect", lambda t: t / "missing", "does not exist"),
    ("inspect", lambda t: t, "neither a workdir nor a trial directory"),
    ("report", lambda t: t, "neither a workdir nor a trial directory"),
    ("report", _no_results, "no results.json"),
    ("report", lambda t: _no_results(t) / "baseline-seed0", "is a trial directory"),
    ("report", _bad_results, "not readable JSON"),
])
def test_bad_paths_are_one_line_with_exit_code_2(tmp_path, module, make, says):
  path = make(tmp_path)
  before = _snapshot(tmp_path)
  proc = _cli(module, str(path))
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr
  assert "allowed" in lines[0] and "Traceback" not in proc.stderr
  assert _snapshot(tmp_path) == before                      # no report/ left behind either


def test_a_copied_workdir_reports_the_same_numbers(workdir, runs, tmp_path):
  # Nothing depends on absolute paths recorded at run time (checkpoint_dir, say).
  copy = tmp_path / "moved"
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("report"))
  del runs                                                  # wrote workdir/report
  built = report_lib.build(copy, tmp_path / "out")
  original = json.loads((workdir / "report" / "report.json").read_text())
  assert built["table1"] == original["table1"]
  assert built["fig3_weights"] == original["fig3_weights"]
