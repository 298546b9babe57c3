"""A gs:// workdir, against a Cloud Storage emulator on loopback (tests/gcs_emulator.py): the
run writes every file of its workdir to the bucket and nothing on disk, ends where the same
run on local disk ends, resumes after SIGKILL (past a damaged checkpoint too), refuses a
changed config, and inspect, report and export read it there. A bucket that does not exist is
one line before any data is built. A data dir in a bucket is staged to a local cache and gives
the same run (miajax/data/staging.py); one without the dataset is one line.
"""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, cpu_env
from gcs_emulator import emulator  # pylint: disable=unused-import  (the fixture)

pytestmark = pytest.mark.slow

# Pruning: every phase's checkpoints (pretraining, ADMM, masked retraining) and the export of
# a pruned trial; the baseline's plain steps are its pretraining.
SMOKE = ("--config=configs/default.py:smoke", "--config.methods=('pruning',)")
# The kill test: baseline only, a checkpoint every 5 of its 30 steps (2 kept).
KILL = ("--config=configs/default.py:smoke", "--config.methods=('baseline',)",
        "--config.train.checkpoint_every=5")
# Fields that name where or when, not what was computed.
PLACE = ("checkpoint_dir", "wall_seconds")


def _run(module, *args, env, timeout=600):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                        env=cpu_env(**env), capture_output=True, text=True, timeout=timeout)


def _npz(data: bytes) -> dict:
  import io  # pylint: disable=g-import-not-at-top
  with np.load(io.BytesIO(data)) as f:
    return {k: f[k] for k in f.files}


def _same_arrays(a: dict, b: dict, what: str) -> None:
  assert sorted(a) == sorted(b), what
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=f"{what}: {k}")


def _records(text: str) -> dict:
  return {r["name"]: {k: v for k, v in r.items() if k not in PLACE} for r in json.loads(text)}


def _config(text, data_dir=None):
  """A config.json, with data.dir replaced by `data_dir` where given (where the data was read
  from, not what was computed)."""
  config = json.loads(text)
  if data_dir is not None:
    config["data"]["dir"] = data_dir
  return config


def _assert_same_run(local, emu, bucket, prefix, trials, curves=True, data_dir=None):
  """The bucket's workdir holds what the local one holds, file by file where it matters;
  `data_dir`: the local run's data.dir, where the bucket's run read its data elsewhere."""
  read = lambda name: emu.read(bucket, f"{prefix}/{name}")
  assert _records(read("results.json")) == _records((local / "results.json").read_text())
  assert _config(read("config.json"), data_dir) == _config((local / "config.json").read_text())
  assert read("results.csv").splitlines()[0] == (local / "results.csv").read_bytes().splitlines()[0]
  for t in trials:
    assert _config(read(f"{t}/config.json"), data_dir) == _config(
        (local / t / "config.json").read_text())
    for name in ("splits.npz", "scores.npz"):
      _same_arrays(_npz(read(f"{t}/{name}")), _npz((local / t / name).read_bytes()), name)
    if curves:
      assert read(f"{t}/metrics.jsonl").decode() == (local / t / "metrics.jsonl").read_text()


def test_a_bucket_that_does_not_exist_is_one_line_before_any_data_is_built(emulator, tmp_path):
  proc = _run("miajax.main", *SMOKE, "--workdir=gs://no-such-bucket/run",
              f"--config.data.dir={tmp_path / 'tfds'}", env=emulator.env, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "gs://no-such-bucket" in lines[0] and "does not exist" in lines[0]
  assert not (tmp_path / "tfds").exists()            # the data was not built
  assert "Traceback" not in proc.stderr


def test_a_data_dir_in_a_bucket_without_the_dataset_is_one_line_before_anything_is_written(
    emulator, tmp_path):
  emulator.bucket("empty")
  env = {**emulator.env, "MIAJAX_DATA_CACHE": str(tmp_path / "cache")}
  for data_dir, says in (
      ("gs://empty/tfds", "data.name='digits' is not prepared in data.dir='gs://empty/tfds'"),
      ("gs://no-such-bucket/tfds", "bucket gs://no-such-bucket does not exist")):
    # Not even a :smoke run falls back to synthetic images: the bucket was asked for.
    proc = _run("miajax.main", *SMOKE, f"--workdir={tmp_path / 'run'}",
                f"--config.data.dir={data_dir}", env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], lines
    assert ("python -m miajax.data.prepare digits --data_dir=DIR && gsutil -m cp -r "
            f"DIR/miajax_digits {data_dir}/") in lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def _scalars(data: bytes, tmp_path) -> dict:
  """{tag: [(step, value), ...]} of a TensorBoard event file's scalars, by TensorBoard's reader."""
  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import event_file_loader
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  path = tmp_path / f"events-{len(list(tmp_path.glob('events-*')))}"
  path.write_bytes(data)
  scalars = {}
  for event in event_file_loader.EventFileLoader(str(path)).Load():
    for v in event.summary.value:
      value = (v.simple_value if v.WhichOneof("value") == "simple_value"
               else float(tensor_util.make_ndarray(v.tensor)))
      scalars.setdefault(v.tag, []).append((event.step, value))
  return scalars


def test_a_smoke_run_on_a_bucket_reading_its_data_from_the_bucket_writes_what_it_writes_on_disk(
    emulator, tmp_path, data_dir):
  bucket = emulator.bucket("smoke")
  local = tmp_path / "local"
  on_disk = _run("miajax.main", *SMOKE, f"--config.data.dir={data_dir}", f"--workdir={local}",
                 env={})
  assert on_disk.returncode == 0, on_disk.stderr[-3000:]
  # The dataset the local run prepared, copied to the bucket as `gsutil -m cp -r` would.
  uploaded = emulator.upload_tree("smoke", "tfds/miajax_digits", data_dir / "miajax_digits")
  assert any(n.endswith(".array_record-00000-of-00001") for n in uploaded), uploaded
  cache = tmp_path / "cache"
  env = {**emulator.env, "MIAJAX_DATA_CACHE": str(cache)}
  args = (*SMOKE, f"--config.data.dir={bucket}/tfds")
  remote = _run("miajax.main", *args, f"--workdir={bucket}/run", env=env)
  assert remote.returncode == 0, remote.stderr[-3000:]
  assert f"results: {bucket}/run/results.json" in remote.stdout
  assert f"copying {len(uploaded)} files" in remote.stderr
  staged = cache / "smoke" / "tfds" / "miajax_digits"
  assert sorted(f"miajax_digits/1.0.0/{p.name}" for p in (staged / "1.0.0").iterdir()) == \
      sorted(n[len("tfds/"):] for n in uploaded)
  # Beside it only the lock of this host's copies: no temporary directory left over.
  assert sorted(p.name for p in staged.iterdir()) == [".1.0.0.lock", "1.0.0"]
  trials = ("pruning-seed0",)
  # The same digits, read from the staged copy: the same records, splits and scores.
  _assert_same_run(local, emulator, "smoke", "run", trials, data_dir=str(data_dir))
  assert json.loads(emulator.read("smoke", "run/config.json"))["data"]["dir"] == f"{bucket}/tfds"

  names = emulator.objects("smoke", "run/")
  for t in trials:
    # TensorBoard's curves reached the bucket, each file (training from step N, audit) with
    # the scalars it has on disk. Names end in .SUFFIX after the time, host and process id.
    in_bucket = {n.rsplit(".", 1)[1]: _scalars(emulator.read("smoke", n), tmp_path)
                 for n in names if n.startswith(f"run/{t}/events.out.tfevents.")}
    on_disk = {p.name.rsplit(".", 1)[1]: _scalars(p.read_bytes(), tmp_path)
               for p in (local / t).glob("events.out.tfevents.*")}
    assert {"from0", "audit"} <= set(in_bucket), names
    assert all(in_bucket.values()) and set(in_bucket) == set(on_disk)
    for kind, scalars in in_bucket.items():
      assert sorted(scalars) == sorted(on_disk[kind]), kind
      timed = [tag for tag in scalars if tag.endswith("_per_s")]   # speed: not computed
      assert {k: v for k, v in scalars.items() if k not in timed} == \
          {k: v for k, v in on_disk[kind].items() if k not in timed}, kind
    assert any(n.startswith(f"run/{t}/checkpoints/45/state/") for n in names), names
  assert "run/command.json" in names
  assert not any(".miajax-probe-" in n or n.endswith(".tmp") for n in names), names
  assert not (ROOT / "gs:").exists()                 # nothing under a folder named "gs:"

  # The same command again: everything is done, nothing is trained again.
  again = _run("miajax.main", *args, f"--workdir={bucket}/run", env=env)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "compiling the train step" not in again.stderr
  assert "copying" not in again.stderr and f"the copy of {bucket}/tfds" in again.stderr
  # A different config on the bucket's run: refused, naming it.
  changed = _run("miajax.main", *args, "--config.seed=1", f"--workdir={bucket}/run", env=env)
  assert changed.returncode == 2, changed.stderr[-3000:]
  last = changed.stderr.strip().splitlines()[-1]
  assert f"--workdir={bucket}/run holds a run of configs/default.py:smoke with seed=0" in last

  # The readers: inspect (a workdir and a trial), report (to the bucket), export.
  inspected = _run("miajax.inspect", f"{bucket}/run", "--json", env=emulator.env)
  assert inspected.returncode == 0, inspected.stderr[-3000:]
  report = json.loads(inspected.stdout)
  assert report["kind"] == "workdir" and report["results_records"] == 1
  assert [t["latest_step"] for t in report["trials"]] == [45]
  made = _run("miajax.report", f"{bucket}/run", env=emulator.env)
  assert made.returncode == 0, made.stderr[-3000:]
  assert {"run/report/table1.md", "run/report/report.json", "run/report/fig3_weights.png"} <= \
      set(emulator.objects("smoke", "run/report/"))
  local_report = _run("miajax.report", str(local), env={})
  assert emulator.read("smoke", "run/report/table1.md").decode() == \
      (local / "report" / "table1.md").read_text().replace(str(local), f"{bucket}/run")
  exported = _run("miajax.export", f"{bucket}/run/pruning-seed0", f"--out={tmp_path / 'p.npz'}",
                  "--json", env=emulator.env)
  assert exported.returncode == 0, exported.stderr[-3000:]
  assert local_report.returncode == 0
  assert json.loads(exported.stdout)["weights_nonzero"] == \
      _records((local / "results.json").read_text())["pruning-seed0"]["weights_nonzero"]


def _killed_at(step, workdir, data_dir, env):
  proc = subprocess.run(
      [sys.executable, str(ROOT / "tests" / "killed_run.py"), "baseline", str(step),
       *KILL, f"--workdir={workdir}", f"--config.data.dir={data_dir}"],
      cwd=ROOT, env=cpu_env(**env), capture_output=True, text=True, timeout=600)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def test_a_run_killed_on_a_bucket_resumes_past_a_damaged_checkpoint_to_the_local_result(
    emulator, tmp_path, data_dir):
  bucket = emulator.bucket("killed")
  local = tmp_path / "local"
  whole = _run("miajax.main", *KILL, f"--config.data.dir={data_dir}", f"--workdir={local}",
               env={})
  assert whole.returncode == 0, whole.stderr[-3000:]

  _killed_at(20, f"{bucket}/run", data_dir, emulator.env)
  ckpts = "run/baseline-seed0/checkpoints"
  steps = {n.split("/")[3] for n in emulator.objects("killed", ckpts + "/")}
  assert steps == {"15", "20"}, steps                # two kept; results.json not yet written
  assert "run/results.json" not in emulator.objects("killed", "run/")
  # Step 20 damaged: its array shards gone, as a half-copied bucket would leave it.
  for name in emulator.objects("killed", f"{ckpts}/20/state/"):
    if "/d/" in name:
      _delete(emulator, "killed", name)

  resumed = _run("miajax.main", *KILL, f"--config.data.dir={data_dir}",
                 f"--workdir={bucket}/run", env=emulator.env)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "checkpoint step 20 does not restore" in resumed.stderr
  assert "resumed 1 trial at step 15 of 30" in resumed.stderr
  assert any(n.startswith("run/baseline-seed0/checkpoints_set_aside/20/")
             for n in emulator.objects("killed", "run/"))
  # A resumed window averages fewer steps, on disk too: the curve has each step once, no more.
  _assert_same_run(local, emulator, "killed", "run", ("baseline-seed0",), curves=False)
  lines = emulator.read("killed", "run/baseline-seed0/metrics.jsonl").decode().splitlines()
  assert [json.loads(l)["step"] for l in lines] == [10, 20, 30]


def _delete(emulator, bucket, name):
  import urllib.parse  # pylint: disable=g-import-not-at-top
  import urllib.request  # pylint: disable=g-import-not-at-top
  quoted = urllib.parse.quote(name, safe="")
  request = urllib.request.Request(f"{emulator.url}/storage/v1/b/{bucket}/o/{quoted}",
                                   method="DELETE")
  urllib.request.urlopen(request, timeout=10).close()


MULTI = ("--config=configs/default.py:smoke", "--config.methods=('baseline',)",
         # One step in flight at a time: XLA:CPU's collectives with more devices than cores
         # (tests/test_distributed.py). Does not change results.
         "--config.train.log_every=1", "--config.train.checkpoint_every=10")


def _two_by_two(workdir, data_dir, log_dir, env):
  proc = subprocess.run(
      ["bash", str(ROOT / "launch" / "local_multiprocess.sh"), "-n", "2", "-d", "2",
       "-l", str(log_dir), "--", *MULTI, f"--workdir={workdir}", f"--config.data.dir={data_dir}"],
      cwd=ROOT, env=cpu_env(**{"PYTHON": sys.executable, **env}), capture_output=True,
      text=True, timeout=600)
  logs = [(log_dir / f"process_{i}.log").read_text() for i in range(2)]
  assert proc.returncode == 0, proc.stderr[-2000:] + logs[0][-2000:] + logs[1][-2000:]
  return logs


def test_two_processes_of_two_devices_write_one_bucket_workdir_as_they_write_one_on_disk(
    emulator, tmp_path, data_dir):
  bucket = emulator.bucket("pod")
  local = tmp_path / "local"
  _two_by_two(local, data_dir, tmp_path / "local_logs", {})
  # The data from the bucket too: the two processes of this host stage one copy between them.
  emulator.upload_tree("pod", "tfds/miajax_digits", data_dir / "miajax_digits")
  logs = _two_by_two(f"{bucket}/run", f"{bucket}/tfds", tmp_path / "pod_logs",
                     {**emulator.env, "MIAJAX_DATA_CACHE": str(tmp_path / "cache")})
  assert sum("data: digits: copying" in log for log in logs) == 1, logs
  # Process 0 writes the files and prints the table; both write their checkpoint shards.
  assert "test acc" in logs[0] and "test acc" not in logs[1]
  _assert_same_run(local, emulator, "pod", "run", ("baseline-seed0",), data_dir=str(data_dir))
  names = emulator.objects("pod", "run/")
  for i in range(2):
    assert f"run/baseline-seed0/checkpoints/30/state/ocdbt.process_{i}/manifest.ocdbt" in names
  events = [n for n in names if "/events.out.tfevents." in n]
  assert len(events) == 2, events                    # training and audit, process 0's only
