"""What a newcomer meets first: the default workdir, the shipped configs, --help, a mistyped
config name, and printed lines that say what they mean (export's norm, "1 trial")."""

import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT, cpu_env, run_main
from miajax import shipped_configs
from miajax.errors import UserError


def _default_config_json(**changes) -> dict:
  """configs/default.py's config as a run writes it to DIR/config.json, with `changes`
  ({"admm.epochs": 20.0}) applied."""
  spec = importlib.util.spec_from_file_location("default_config", shipped_configs.DEFAULT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = json.loads(module.get_config().to_json_best_effort())
  for key, value in changes.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def _snapshot(root: Path) -> dict[str, bytes]:
  return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))}


# ---------------------------------------------------------------- the default workdir


def test_forgetting_workdir_names_the_default_and_the_config_that_made_the_run_in_one_line(
    tmp_path):
  # An earlier run of the leaky config in the default workdir; this one forgets --workdir.
  # The flag's default is pointed at tmp_path, so /tmp/miajax is never touched.
  workdir = tmp_path / "default"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps(_default_config_json(**{"admm.epochs": 20.0})))
  (workdir / "command.json").write_text(json.dumps(
      {"config": "configs/leaky_fashion_mnist_lenet5.py", "argv": []}))
  before = _snapshot(workdir)
  code = ("import sys; from absl import flags; from miajax import main; "
          f"flags.FLAGS.set_default('workdir', {str(workdir)!r}); "
          "sys.argv = ['miajax.main']; main.run()")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=cpu_env(),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines() == [
      f"error: --workdir={workdir} (the default, as --workdir was not given) holds a run of "
      "configs/leaky_fashion_mnist_lenet5.py with admm.epochs=20.0, not 10.0; allowed: pass "
      "--workdir=DIR for a new run, or the same config to resume"]
  assert _snapshot(workdir) == before


def test_a_run_from_before_commands_were_recorded_is_a_run_of_an_unrecorded_config(tmp_path):
  from miajax import train  # pylint: disable=g-import-not-at-top
  (tmp_path / "config.json").write_text(json.dumps(_default_config_json(**{"seed": 7})))
  with pytest.raises(UserError) as e:
    train._check_same_run(tmp_path, _default_config_json())
  assert str(e.value) == (
      f"--workdir={tmp_path} holds a run of an unrecorded config with seed=7, not 0; allowed: "
      "pass --workdir=DIR for a new run, or the same config to resume")


class _FakeTrain:
  """Stands in for miajax.train: writes DIR/config.json as a run does, or refuses the run
  the way a changed config is refused."""

  def __init__(self, refuse: bool = False):
    self.refuse = refuse

  def check_workdir(self, workdir):
    del workdir   # the real check is tested in test_main (an unwritable workdir)

  def train_and_evaluate(self, config, workdir):
    del config
    if self.refuse:
      raise UserError(f"--workdir={workdir} holds a run of another config")
    Path(workdir).mkdir(exist_ok=True)
    if not (Path(workdir) / "config.json").exists():
      (Path(workdir) / "config.json").write_text("{}")


def _argv(monkeypatch, *args):
  monkeypatch.setattr(sys, "argv", ["miajax/main.py", *args])


def test_the_run_that_creates_a_workdir_records_the_config_it_was_started_with(
    tmp_path, monkeypatch):
  from miajax import main  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  _argv(monkeypatch, "--config", "configs/mnist_lenet5.py:smoke", f"--workdir={workdir}")
  main._train_recording_command(_FakeTrain(), None, str(workdir))
  assert json.loads((workdir / "command.json").read_text()) == {
      "config": "configs/mnist_lenet5.py:smoke",
      "argv": ["--config", "configs/mnist_lenet5.py:smoke", f"--workdir={workdir}"]}
  # A resume with another spelling of the same config keeps the first record.
  _argv(monkeypatch, "--config=./configs/mnist_lenet5.py:smoke")
  main._train_recording_command(_FakeTrain(), None, str(workdir))
  assert json.loads((workdir / "command.json").read_text())["config"] == (
      "configs/mnist_lenet5.py:smoke")


def test_a_refused_run_records_nothing_and_a_resumed_unrecorded_run_records_its_config(
    tmp_path, monkeypatch):
  from miajax import main  # pylint: disable=g-import-not-at-top
  (tmp_path / "config.json").write_text("{}")     # a run from before command.json existed
  _argv(monkeypatch)
  with pytest.raises(UserError):
    main._train_recording_command(_FakeTrain(refuse=True), None, str(tmp_path))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
  main._train_recording_command(_FakeTrain(), None, str(tmp_path))   # resumed: same config
  assert json.loads((tmp_path / "command.json").read_text())["config"] == "configs/default.py"


# ---------------------------------------------------------------- what the package installs


def test_tensorboard_is_a_declared_dependency_installed_without_tensorflow():
  names = {r.split(";")[0].split(">")[0].split("=")[0].strip()
           for r in importlib.metadata.requires("miajax")
           if "extra ==" not in r}
  assert "tensorboard" in names
  assert importlib.util.find_spec("tensorboard") is not None
  tensorboard_needs = importlib.metadata.requires("tensorboard") or []
  assert not [r for r in tensorboard_needs if r.startswith("tensorflow") and "extra" not in r]


def test_the_configs_ship_inside_the_package_and_configs_at_the_root_links_to_them():
  assert (ROOT / "configs").resolve() == shipped_configs.DIR
  assert "default.py" in shipped_configs.names()
  assert str(shipped_configs.DEFAULT).startswith(str(ROOT / "miajax"))
  package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
      "package-data"]
  assert "configs/*.py" in package_data["miajax"]


@pytest.mark.slow
def test_a_built_wheel_holds_every_shipped_config(tmp_path):
  # Built from a copy, so the build leaves nothing in the checkout (pip builds in the tree).
  source = tmp_path / "source"
  source.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(ROOT / name, source / name)
  shutil.copytree(ROOT / "miajax", source / "miajax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                         str(tmp_path / "wheel"), str(source)],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  import zipfile  # pylint: disable=g-import-not-at-top
  [wheel] = (tmp_path / "wheel").glob("miajax-*.whl")
  shipped = {n.removeprefix("miajax/configs/") for n in zipfile.ZipFile(wheel).namelist()
             if n.startswith("miajax/configs/")}
  assert shipped == set(shipped_configs.names())


def test_a_missing_configs_path_is_taken_from_the_shipped_configs_and_a_local_file_wins(
    tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  shipped = shipped_configs.DIR
  assert shipped_configs.resolve("configs/default.py:smoke") == f"{shipped}/default.py:smoke"
  assert shipped_configs.resolve("./configs/mnist_lenet5.py") == f"{shipped}/mnist_lenet5.py"
  for unchanged in ("configs/nonexistent.py", "mine/default.py", "/abs/configs/default.py"):
    assert shipped_configs.resolve(unchanged) == unchanged
  assert shipped_configs.resolve_argv(
      ["main", "--config", "configs/default.py", "--config.seed=1", "--",
       "--config=configs/default.py"]) == [
           "main", "--config", f"{shipped}/default.py", "--config.seed=1", "--",
           "--config=configs/default.py"]
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "default.py").write_text("# a config of one's own")
  assert shipped_configs.resolve("configs/default.py:smoke") == "configs/default.py:smoke"


def test_a_shipped_config_loads_from_a_directory_outside_the_checkout(tmp_path):
  # The config loads (the error is its validation's, after loading), not "cannot read it".
  proc = run_main("--config=configs/mnist_lenet5.py:smoke", "--config.train.epochs=0",
                  cwd=tmp_path, timeout=120)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines() == [
      "error: train.epochs=0.0 is not allowed; allowed: a number > 0 (0 trains nothing)"]
  assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the command line


def test_a_positional_config_path_is_one_line_pointing_at_the_config_flag():
  proc = run_main("configs/default.py", timeout=120)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines() == [
      "error: unexpected argument 'configs/default.py'; allowed: --config=configs/default.py, "
      "--workdir=DIR and --config.KEY=VALUE (python -m miajax.main --help)"]


def test_help_is_a_short_usage_naming_the_main_flags_and_the_docs_with_exit_status_0():
  proc = run_main("--help", timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stderr == ""
  lines = proc.stdout.splitlines()
  assert lines[0].startswith("usage: python -m miajax.main [--config=configs/NAME.py[:ARG]]")
  assert len(lines) < 30
  for says in ("--config=configs/NAME.py[:ARG]", "--workdir=DIR", "--config.KEY=VALUE",
               "docs/README.md", "mnist_lenet5", "--helpfull"):
    assert says in proc.stdout, says


def test_a_mistyped_config_name_suggests_the_nearest_shipped_configs_in_one_line():
  proc = run_main("--config=configs/lenet.py:smoke", timeout=120)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines() == [
      "error: --config=configs/lenet.py:smoke: cannot read it (no such file); allowed: a "
      "config file, e.g. the nearest shipped names configs/mnist_lenet5.py:smoke, "
      "configs/fashion_mnist_lenet5.py:smoke or configs/lira_fashion_mnist_lenet5.py:smoke"]


@pytest.mark.parametrize("typed, nearest", [
    ("configs/defualt.py", ["configs/default.py"]),
    ("configs/cifar10_vgg.py", ["configs/cifar10_vgg16.py", "configs/cifar100_vgg16.py",
                                "configs/cifar10_cnn.py"]),
    ("configs/resnet18.py", ["configs/imagenet_resnet18.py", "configs/cifar100_resnet18.py"]),
    ("configs/nonexistent.py", []),
])
def test_the_nearest_config_names_compare_whole_names_and_their_words(typed, nearest):
  assert shipped_configs.nearest(typed) == nearest


# ---------------------------------------------------------------- printed lines


def test_export_says_why_lenet5_has_no_norm_where_its_config_asked_for_batch_norm(tmp_path):
  import optax  # pylint: disable=g-import-not-at-top
  from miajax import export, models  # pylint: disable=g-import-not-at-top
  from test_export import _random_variables, _state, _write_trial  # pylint: disable=g-import-not-at-top
  model = models.create("lenet5", 10)
  params = _random_variables(model, (28, 28, 1), seed=0)["params"]
  trial = _write_trial(tmp_path / "w", "baseline-seed0", "lenet5", "digits",
                       {5: _state(optax.sgd(0.1), params, {}, {})}, norm="batch")
  report = export.export(trial, tmp_path / "m.npz", measure=False)
  assert report["norm"] == "none" and report["config_norm"] == "batch"
  first = export.format_text(report).splitlines()[0]
  assert ("10 classes, norm none (lenet5 has no norm layers; model.norm=batch is ignored); "
          in first), first


def test_inspect_counts_one_trial_and_one_record_in_the_singular():
  from miajax import inspect  # pylint: disable=g-import-not-at-top
  trial = {"name": "baseline-seed0", "method": "baseline", "seed": 0, "has_results": True,
           "results_step": 30, "error": None, "steps": []}
  report = {"kind": "workdir", "path": "DIR", "results_json": True, "results_records": 1,
            "trials": [trial]}
  assert inspect.format_text(report).splitlines()[0] == (
      "workdir DIR: 1 trial, results.json: 1 record")
  report |= {"results_records": 2, "trials": [trial, trial]}
  assert inspect.format_text(report).splitlines()[0] == (
      "workdir DIR: 2 trials, results.json: 2 records")


# ---------------------------------------------------------------- the compilation cache

class _Config:
  def __init__(self):
    self.values = {}

  def update(self, key, value):
    self.values[key] = value


def test_runs_keep_compiled_programs_in_the_users_cache_directory(monkeypatch, tmp_path):
  from miajax import main   # pylint: disable=g-import-not-at-top
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  jax = type("Jax", (), {"config": _Config()})()
  main._compilation_cache(jax)
  assert jax.config.values["jax_compilation_cache_dir"] == str(tmp_path / "miajax" / "jax")
  assert jax.config.values["jax_compilation_cache_max_size"] > 0     # locked for processes


@pytest.mark.parametrize("value", ["", "/somewhere/else"])
def test_jax_compilation_cache_dir_moves_the_cache_or_set_empty_turns_it_off(monkeypatch,
                                                                             value):
  from miajax import main   # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", value)
  jax = type("Jax", (), {"config": _Config()})()
  main._compilation_cache(jax)
  assert jax.config.values == {}          # JAX reads the variable itself
