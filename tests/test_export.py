"""miajax.export writes a trial's inference weights, dense or sparse, and load gives them back.

The trials are written the way a run writes them (miajax.checkpoint.TrialCheckpoints, a full
TrainState with optimizer and method state, a trial config.json), built in-process with tiny
settings: a LeNet-5 pruned to the paper's App. E rates, and a MobileNetV2 with BatchNorm
statistics moved away from their initial values.
"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import ROOT, cpu_env
from miajax import export
from miajax import models
from miajax import pruning
from miajax import steps
from miajax.checkpoint import TrialCheckpoints
from miajax.errors import UserError

TRIAL = "pruning-seed0"


def _write_trial(workdir: Path, name: str, model_name: str, data_name: str, states: dict,
                 norm: str = "batch") -> Path:
  """A trial directory holding `states` ({step: TrainState}) and its config.json."""
  (workdir / name).mkdir(parents=True)
  (workdir / name / "config.json").write_text(json.dumps({
      "data": {"name": data_name}, "model": {"name": model_name, "norm": norm},
      "trial": {"name": name, "method": "pruning", "seed": 0, "sweep": {}}}))
  checkpoints = TrialCheckpoints(workdir, [name], max_to_keep=None)
  for step, state in states.items():
    checkpoints.save(step, jax.tree.map(lambda x: x[None], state), [{"phase": "retrain"}])
  checkpoints.wait()
  checkpoints.close()
  return workdir / name


def _state(tx, params, batch_stats, extra) -> steps.TrainState:
  return steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                          opt_state=tx.init(params), key=jax.random.PRNGKey(1), extra=extra)


def _random_variables(model, input_shape, seed: int) -> dict:
  """Variables shaped like `model.init`'s, drawn with NumPy (no compile: this CPU is shared).

  BatchNorm variances are drawn in [0.5, 1.5) and means around 0, away from init's (0, 1), so
  dropping the statistics would change the logits.
  """
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, *input_shape)), train=False))
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = str(getattr(path[-1], "key", path[-1]))
    if name == "var":
      return (rng.random(s.shape) + 0.5).astype(np.float32)
    scale = 1 / np.sqrt(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 0.1
    return (rng.normal(size=s.shape) * scale).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def _prune(params, counts):
  """The n_i largest-magnitude entries of each kernel (ties to the lower flat index), as
  `pruning.project` keeps them; (pruned params, masks)."""
  def one(path, w):
    name = "/".join(str(getattr(p, "key", p)) for p in path)
    if name not in counts:
      return w, np.ones(w.shape, bool)
    keep = np.zeros(w.size, bool)
    keep[np.argsort(-np.abs(w), axis=None, kind="stable")[:counts[name]]] = True
    keep = keep.reshape(w.shape)
    return np.where(keep, w, np.float32(0)), keep
  both = jax.tree_util.tree_map_with_path(one, params)
  is_pair = lambda x: isinstance(x, tuple)
  return (jax.tree.map(lambda x: x[0], both, is_leaf=is_pair),
          jax.tree.map(lambda x: x[1], both, is_leaf=is_pair))


def _snapshot(root: Path) -> dict[str, str | None]:
  return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
          if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
  """A LeNet-5 trial: step 10 dense (as drawn), step 20 pruned to the paper's rates."""
  model = models.create("lenet5", 10)
  params = _random_variables(model, (28, 28, 1), seed=0)["params"]
  counts = pruning.keep_counts(params, pruning.keep_fractions(params, "paper"))
  pruned, mask = _prune(params, counts)
  tx = optax.adam(1e-3)
  workdir = tmp_path_factory.mktemp("lenet")
  trial_dir = _write_trial(workdir, TRIAL, "lenet5", "digits", {
      10: _state(tx, params, {}, {"mask": mask}),
      20: _state(tx, pruned, {}, {"mask": mask})})
  return {"dir": trial_dir, "model": model, "params": params, "pruned": pruned}


@pytest.fixture(scope="module")
def digits_images() -> np.ndarray:
  """64 real images: scikit-learn's digits in MNIST geometry, scaled to [0, 1]."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  from miajax.data import digits  # pylint: disable=g-import-not-at-top
  images = digits.to_mnist_geometry(load_digits().images[:64])
  return images.astype(np.float32) / 255.0


# ---------------------------------------------------------------- encodings


@pytest.mark.parametrize("size,dtype", [(1, np.uint8), (256, np.uint8), (257, np.uint16),
                                        (65536, np.uint16), (65537, np.uint32)])
def test_indices_take_the_smallest_unsigned_type_that_holds_every_flat_index(size, dtype):
  assert export.index_dtype(size) == np.dtype(dtype)


@pytest.mark.parametrize("encoding", export.ENCODINGS)
@pytest.mark.parametrize("shape", [(5, 5, 1, 6), (400, 120), (3, 7)])
def test_every_encoding_gives_back_the_array_bit_for_bit(encoding, shape):
  rng = np.random.default_rng(sum(shape))
  array = rng.normal(size=shape).astype(np.float32)
  array[rng.random(shape) < 0.9] = 0.0
  array.flat[-1] = 3.5                                  # the last flat index is reachable
  parts = export.encode(array, encoding)
  back = export.decode(parts, encoding, shape, np.dtype(np.float32))
  assert back.dtype == np.float32 and back.shape == shape
  np.testing.assert_array_equal(back, array)
  if encoding == "indices":
    assert parts["@indices"].dtype == export.index_dtype(array.size)
  if encoding == "bitmask":
    assert parts["@bitmask"].nbytes == -(-array.size // 8)


def test_paper_rate_lenet5_kernels_take_the_smaller_sparse_encoding(lenet, tmp_path):
  report = export.export(lenet["dir"], tmp_path / "w.npz", compress=False)
  layers = report["layers"]
  assert list(layers) == ["conv1/kernel", "conv2/kernel", "fc1/kernel", "fc2/kernel",
                          "fc3/kernel"]
  # conv1 keeps 90 of 150 (60%): values 360 B + 150 bits (19 B) beat 90 uint8 indices (450 B).
  assert layers["conv1/kernel"]["sizes"]["stored"] == {"dense": 600, "indices": 450,
                                                       "bitmask": 379}
  assert layers["conv1/kernel"]["chosen"]["stored"] == "bitmask"
  # fc1 keeps 3,000 of 48,000 (6.25%): 2 B of uint16 index per value = 1 bit per entry: a tie,
  # which goes to indices.
  assert layers["fc1/kernel"]["sizes"]["stored"] == {"dense": 192000, "indices": 18000,
                                                     "bitmask": 18000}
  assert layers["fc1/kernel"]["chosen"]["stored"] == "indices"
  for name, layer in layers.items():
    for kind in ("stored", "deflate"):
      sizes = layer["sizes"][kind]
      assert sizes[layer["chosen"][kind]] == min(sizes.values()), (name, kind)
  # The file written records the same choices in its header.
  with np.load(tmp_path / "w.npz") as npz:
    header = json.loads(npz["header"].tobytes())
  chosen = {leaf["path"]: leaf["encoding"] for leaf in header["leaves"]}
  assert chosen["params/conv1/kernel"] == "bitmask"
  assert chosen["params/fc1/kernel"] == "indices"
  assert chosen["params/fc1/bias"] == "dense"


# ---------------------------------------------------------------- export and load


def _logits(model, variables, images) -> np.ndarray:
  """`model.apply(variables, images, train=False)`, jitted as inference would run it."""
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images))


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_loaded_export_gives_the_checkpoints_logits_exactly(lenet, digits_images, tmp_path, fmt):
  out = tmp_path / "lenet.npz"
  report = export.export(lenet["dir"], out, fmt=fmt, measure=False)
  assert report["step"] == 20 and report["out_bytes"] == out.stat().st_size
  model, variables = export.load(out)
  assert list(variables) == ["params"]                 # no optimizer, mask or key
  expected = _logits(lenet["model"], {"params": lenet["pruned"]}, digits_images)
  got = _logits(model, variables, digits_images)
  assert got.dtype == np.float32 and got.shape == (64, 10)
  np.testing.assert_array_equal(got, expected)


def test_step_picks_an_older_checkpoint(lenet, digits_images, tmp_path):
  export.export(lenet["dir"], tmp_path / "ten.npz", step=10, measure=False)
  model, variables = export.load(tmp_path / "ten.npz")
  np.testing.assert_array_equal(
      _logits(model, variables, digits_images),
      _logits(lenet["model"], {"params": lenet["params"]}, digits_images))


def test_sparse_file_is_smaller_than_dense_for_a_pruned_trial(lenet, tmp_path):
  before = _snapshot(lenet["dir"])
  report = export.export(lenet["dir"], tmp_path / "lenet.npz")
  for kind in ("stored", "deflate"):
    assert report["bytes"]["sparse"][kind] < report["bytes"]["dense"][kind], kind
    assert report["file_ratio"][kind] == pytest.approx(
        report["bytes"]["dense"][kind] / report["bytes"]["sparse"][kind])
  assert report["out_bytes"] == report["bytes"]["sparse"]["deflate"]
  assert (report["weights_total"], report["weights_nonzero"]) == (61470, 4012)
  assert report["nonzero_ratio"] == pytest.approx(61470 / 4012)
  # Only --out is left behind: no temporary files beside it, nothing changed in the trial.
  assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.npz"]
  assert _snapshot(lenet["dir"]) == before


def test_sparse_stores_an_unpruned_checkpoint_as_dense(lenet, tmp_path):
  report = export.export(lenet["dir"], tmp_path / "s.npz", step=10, compress=False)
  assert {layer["chosen"]["stored"] for layer in report["layers"].values()} == {"dense"}
  export.export(lenet["dir"], tmp_path / "d.npz", step=10, fmt="dense", measure=False)
  with np.load(tmp_path / "s.npz") as s, np.load(tmp_path / "d.npz") as d:
    assert sorted(s.files) == sorted(d.files)
    for name in s.files:
      if name != "header":
        np.testing.assert_array_equal(s[name], d[name])


def test_batch_stats_travel_with_the_params(tmp_path):
  model = models.create("mobilenetv2", 10)
  variables = _random_variables(model, (32, 32, 3), seed=1)
  trial_dir = _write_trial(tmp_path / "w", "baseline-seed0", "mobilenetv2", "cifar10",
                           {5: _state(optax.sgd(0.1), variables["params"],
                                      variables["batch_stats"], {})})
  out = tmp_path / "m.npz"
  export.export(trial_dir, out, measure=False)
  loaded_model, loaded = export.load(out)
  assert loaded_model == model
  assert sorted(loaded) == ["batch_stats", "params"]
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)
  images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  without_stats = {"params": loaded["params"],
                   "batch_stats": jax.tree.map(np.zeros_like, loaded["batch_stats"])}
  # The statistics matter to these logits, and they came back exactly.
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  assert not np.allclose(apply(without_stats, images), apply(variables, images))
  np.testing.assert_array_equal(np.asarray(apply(loaded, images)),
                                np.asarray(apply(variables, images)))


# ---------------------------------------------------------------- bad input


def _workdir_without_checkpoints(t: Path) -> Path:
  (t / "w" / "a-seed0").mkdir(parents=True)
  (t / "w" / "a-seed0" / "config.json").write_text("{}")
  return t / "w"


@pytest.mark.parametrize("make,kwargs,says", [
    (lambda t, trial: t / "missing", {}, "does not exist"),
    (lambda t, trial: trial.parent, {}, "is a workdir, not a trial directory"),
    (lambda t, trial: _workdir_without_checkpoints(t) / "a-seed0", {}, "has no checkpoints/"),
    (lambda t, trial: trial, {"step": 7}, "--step=7 is not a checkpoint of pruning-seed0"),
    (lambda t, trial: trial, {"fmt": "zip"}, "--format='zip' is not a format"),
    (lambda t, trial: trial, {"out_dir": "nowhere"}, "does not exist"),
])
def test_bad_input_is_one_line_naming_what_is_allowed(lenet, tmp_path, make, kwargs, says):
  out = tmp_path / kwargs.pop("out_dir", ".") / "x.npz"
  with pytest.raises(UserError) as e:
    export.export(make(tmp_path, lenet["dir"]), out, **kwargs)
  message = str(e.value)
  assert says in message and "allowed" in message and "\n" not in message, message
  assert not out.exists()


def test_load_refuses_a_file_that_is_not_an_export(tmp_path):
  np.savez(tmp_path / "other.npz", a=np.zeros(3))
  (tmp_path / "text.npz").write_text("not a zip")
  for name, says in [("other.npz", "not a readable export"), ("text.npz", "not an .npz"),
                     ("missing.npz", "not a file")]:
    with pytest.raises(UserError, match=says):
      export.load(tmp_path / name)


def test_command_line_missing_step_is_one_line_and_exit_2(lenet, tmp_path):
  env = cpu_env()
  proc = subprocess.run(
      [sys.executable, "-m", "miajax.export", str(lenet["dir"]), "--out",
       str(tmp_path / "x.npz"), "--step", "7"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: --step=7 "), proc.stderr
  assert "allowed: one of 10, 20" in lines[0] and "Traceback" not in proc.stderr
  assert not (tmp_path / "x.npz").exists()
