"""SYNTHETIC stand-ins: a `:smoke` config runs end to end before its data is prepared, every
output says so, and no other run ever uses them."""

import importlib.util
import json
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import ROOT, run_main
from miajax import config as config_lib
from miajax import results
from miajax.data import idx
from miajax.data import pipeline
from miajax.data import sources
from miajax.data import specs
from miajax.data import synthetic
from miajax.errors import NotPrepared, UserError


def load_config(name: str, arg: str | None = None):
  spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.fixture(autouse=True)
def _no_home_data_dir(tmp_path, monkeypatch):
  # Nothing may read or build a dataset in ~/tensorflow_datasets.
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "default_data_dir"))


def real_shape(name, tmp_path):
  """The stored image shape of the real dataset, read without its data."""
  if name in sources.STOCK_NAMES:
    with tfds.testing.mock_data(num_examples=1):
      return sources.load(name, data_dir=str(tmp_path)).image_shape
  return tuple(idx.mnist_features()["image"].shape)     # digits, mnist, fashion_mnist


@pytest.mark.parametrize("name", sources.NAMES)
def test_synthetic_sources_have_the_real_datasets_shape_and_classes(name, tmp_path):
  src = synthetic.load(name, train_size=20)
  real = real_shape(name, tmp_path)
  if name == "imagenet2012":
    # ImageNet's photos vary in size; its stand-ins are the imagenet configs' model input.
    assert real == (None, None, 3)
    size = load_config("imagenet_resnet18", "smoke").data.image_size
    assert src.image_shape == (size, size, 3) == (224, 224, 3)
  else:
    assert src.image_shape == real
  assert src.num_classes == specs.SPECS[name].num_classes and src.synthetic
  assert (len(src.train), len(src.test)) == (20, 30)     # splits.make fills every set
  arrays = sources.to_arrays(src.test)
  assert arrays["image"].shape == (30, *src.image_shape) and arrays["image"].dtype == np.uint8
  assert arrays["label"].min() >= 0 and arrays["label"].max() < src.num_classes


def test_records_are_a_seeded_function_of_split_and_index_and_survive_pickling():
  a, b = synthetic.load("cifar10", 8), synthetic.load("cifar10", 8)
  np.testing.assert_array_equal(a.train[3]["image"], b.train[3]["image"])
  assert not np.array_equal(a.train[3]["image"], a.train[4]["image"])
  assert not np.array_equal(a.train[3]["image"], a.test[3]["image"])
  copy = pickle.loads(pickle.dumps(a.train))
  np.testing.assert_array_equal(copy[5]["image"], a.train[5]["image"])


def test_classes_carry_a_signal_a_nearest_pattern_rule_reads():
  src = synthetic.load("cifar10", 200)
  arrays = sources.to_arrays(src.test)
  images = arrays["image"].astype(np.float32) - 128
  patterns = np.stack([synthetic.pattern("cifar10", c) for c in range(10)])
  guess = np.einsum("nhwc,khwc->nk", images, patterns).argmax(-1)
  assert (guess == arrays["label"]).mean() > 0.8         # chance is 0.1


def test_a_smoke_config_falls_back_only_when_its_data_is_missing(tmp_path):
  smoke = load_config("mnist_lenet5", "smoke")           # no data.manual_dir: no IDX files
  smoke.data.dir = str(tmp_path)
  data = pipeline.load(smoke)
  assert data.synthetic and data.train["image"].shape == (2000, 28, 28, 1)
  assert data.record_fields == {"dataset": "mnist (synthetic)", "synthetic": True}
  present = load_config("default", "smoke")              # digits: always buildable here
  present.data.dir = str(tmp_path)
  assert not pipeline.load(present).synthetic


def test_a_full_config_never_falls_back_and_cannot_ask_for_synthetic_data(tmp_path):
  full = load_config("mnist_lenet5")
  full.data.dir = str(tmp_path)
  with pytest.raises(NotPrepared, match="data.manual_dir=None"):
    pipeline.load(full)
  full.data.synthetic = True
  with pytest.raises(UserError, match=r"data\.synthetic=True is not allowed; allowed: False "
                     "outside a :smoke config"):
    config_lib.validate(full)


def test_unprepared_imagenet_is_one_line_naming_the_tars_and_the_prepare_command(tmp_path):
  workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
  result = run_main("--config=configs/imagenet_resnet18.py", f"--workdir={workdir}",
                    f"--config.data.dir={data_dir}")
  assert result.returncode == 2
  line = result.stderr.strip()
  assert "\n" not in line and line.startswith("error: data.name='imagenet2012'")
  assert "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar" in line
  assert (f"python -m miajax.data.prepare imagenet2012 --data_dir={data_dir} "
          "--manual_dir=TARS") in line
  assert "SYNTHETIC" in line and not workdir.exists()   # says smoke can run; runs nothing


@pytest.mark.slow
def test_cifar_smoke_runs_end_to_end_on_synthetic_data_and_says_so_everywhere(tmp_path):
  workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
  result = run_main("--config=configs/cifar10_cnn.py:smoke", f"--workdir={workdir}",
                    f"--config.data.dir={data_dir}", "--config.methods=('baseline',)")
  assert result.returncode == 0, result.stderr[-2000:]
  fallback = [l for l in result.stderr.splitlines() if "SYNTHETIC" in l]
  assert len(fallback) == 1 and f"cifar10 is not prepared in {data_dir}" in fallback[0]
  assert result.stdout.startswith("SYNTHETIC DATA (cifar10 (synthetic))")
  records = results.load(workdir)
  assert records and all(r["synthetic"] and r["dataset"] == "cifar10 (synthetic)"
                         for r in records)
  assert "synthetic" in (workdir / "results.csv").read_text().splitlines()[0].split(",")
  assert json.loads((workdir / "config.json").read_text())["data"]["synthetic"] is True
  trial = json.loads((workdir / "baseline-seed0" / "config.json").read_text())
  assert trial["data"]["synthetic"] is True and trial["smoke"] is True
