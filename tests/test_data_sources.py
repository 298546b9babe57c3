"""Tests of the dataset sources: our offline TFDS builders and the stock-dataset entry point."""

import gzip
import importlib.util
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest
import sklearn.datasets
import tensorflow_datasets as tfds

from miajax.data import digits
from miajax.data import idx
from miajax.data import sources
from miajax.errors import UserError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _no_home_data_dir(tmp_path, monkeypatch):
  # A test that forgets data_dir must not write to ~/tensorflow_datasets.
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "default_data_dir"))


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("digits_data"))
  sources.load("digits", data_dir=data_dir)
  return data_dir


@pytest.fixture(scope="module")
def digits_sources(digits_dir):
  return sources.load("digits", data_dir=digits_dir)


def write_idx(path, array):
  """Writes `array` (uint8) as a gzipped IDX file."""
  array = np.asarray(array, np.uint8)
  header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I",
                                                                   *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.tobytes())


def write_fake_mnist(directory, num_train=7, num_test=3, seed=0):
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, n in (("train", num_train), ("test", num_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, (n,), dtype=np.uint8)
    image_file, label_file = idx.FILES[split]
    write_idx(os.path.join(directory, image_file), images)
    write_idx(os.path.join(directory, label_file), labels)
    arrays[split] = (images, labels)
  return arrays


def test_digits_builds_offline_with_1000_train_and_797_test_mnist_shaped_images(
    digits_dir, digits_sources):
  s = digits_sources
  assert (s.name, s.num_classes, s.image_shape) == ("digits", 10, (28, 28, 1))
  assert (len(s.train), len(s.test)) == (1000, 797)
  record = s.train[0]
  assert record["image"].dtype == np.uint8 and record["image"].shape == (28, 28, 1)
  assert isinstance(record["label"], int) and 0 <= record["label"] < 10
  prepared = os.listdir(os.path.join(digits_dir, "miajax_digits", "1.0.0"))
  assert any(".array_record" in f for f in prepared)


def test_digits_images_are_real_digits_centred_in_a_zero_border(digits_sources):
  arrays = sources.to_arrays(digits_sources.train)
  images = arrays["image"][..., 0].astype(np.int64)
  # MNIST's layout: the digit inside the central 20x20 box, a 4-pixel empty border.
  assert images[:, :4].max() == 0 and images[:, -4:].max() == 0
  assert images[:, :, :4].max() == 0 and images[:, :, -4:].max() == 0
  assert images[:, 4:24, 4:24].max() == 255
  assert (images[:, 10:18, 10:18].sum(axis=(1, 2)) > 0).mean() > 0.9
  assert set(arrays["label"].tolist()) == set(range(10))


def test_digits_records_follow_the_seeded_split_of_sklearn_digits(digits_sources):
  raw = sklearn.datasets.load_digits()
  split = digits.split_indices()
  assert len(np.intersect1d(split["train"], split["test"])) == 0
  for name, source in (("train", digits_sources.train), ("test", digits_sources.test)):
    for i in (0, 1, len(source) - 1):
      want = digits.to_mnist_geometry(raw.images[split[name][i]][None])[0]
      np.testing.assert_array_equal(source[i]["image"], want)
      assert source[i]["label"] == raw.target[split[name][i]]


def test_sources_survive_pickling_for_worker_processes(digits_sources):
  copy = pickle.loads(pickle.dumps(digits_sources.train))
  assert len(copy) == 1000
  np.testing.assert_array_equal(copy[7]["image"], digits_sources.train[7]["image"])


def test_digits_second_load_reuses_the_prepared_files(digits_dir, monkeypatch):
  files = os.path.join(digits_dir, "miajax_digits", "1.0.0")
  before = {f: os.stat(os.path.join(files, f)).st_mtime_ns for f in os.listdir(files)}

  def fail(*args, **kwargs):
    raise AssertionError("prepared again")

  monkeypatch.setattr(digits.MiajaxDigits, "download_and_prepare", fail)
  s = sources.load("digits", data_dir=digits_dir)
  assert len(s.train) == 1000
  after = {f: os.stat(os.path.join(files, f)).st_mtime_ns for f in os.listdir(files)}
  assert after == before


def test_no_data_dir_means_tfds_data_dir_from_the_environment(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env_dir"))
  s = sources.load("digits")
  assert len(s.test) == 797
  assert os.path.isdir(tmp_path / "env_dir" / "miajax_digits" / "1.0.0")


def test_idx_builder_reads_synthetic_idx_files_in_file_order(tmp_path):
  manual = tmp_path / "idx"
  manual.mkdir()
  arrays = write_fake_mnist(manual)
  s = sources.load("mnist", data_dir=str(tmp_path / "data"), manual_dir=str(manual))
  assert (s.name, s.num_classes, s.image_shape) == ("mnist", 10, (28, 28, 1))
  assert (len(s.train), len(s.test)) == (7, 3)
  for split, source in (("train", s.train), ("test", s.test)):
    got = sources.to_arrays(source)
    np.testing.assert_array_equal(got["image"][..., 0], arrays[split][0])
    np.testing.assert_array_equal(got["label"], arrays[split][1])


def test_idx_builder_with_malformed_file_raises_user_error_naming_it(tmp_path):
  manual = tmp_path / "idx"
  manual.mkdir()
  write_fake_mnist(manual)
  bad = manual / "train-labels-idx1-ubyte.gz"
  with gzip.open(bad, "wb") as f:
    f.write(b"\x00\x00\x08\x03garbage")  # says 3 dimensions, labels have 1
  with pytest.raises(UserError, match="train-labels-idx1-ubyte.gz.*magic"):
    sources.load("mnist", data_dir=str(tmp_path / "data"), manual_dir=str(manual))
  assert not (tmp_path / "data" / "miajax_mnist" / "1.0.0").exists()


def test_idx_reader_rejects_a_truncated_file(tmp_path):
  path = tmp_path / "t10k-images-idx3-ubyte.gz"
  write_idx(path, np.zeros((2, 28, 28), np.uint8))
  with gzip.open(path, "rb") as f:
    data = f.read()
  with gzip.open(path, "wb") as f:
    f.write(data[:-5])
  with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz.*malformed"):
    idx.read_idx(path, ndim=3)


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_loads_from_the_debian_files_by_default(tmp_path):
  s = sources.load("fashion_mnist", data_dir=str(tmp_path))
  assert (len(s.train), len(s.test)) == (60_000, 10_000)
  assert s.image_shape == (28, 28, 1) and s.num_classes == 10
  images, labels = idx.read_split(FASHION_MNIST_DIR, "test")
  for i in (0, 9_999):
    np.testing.assert_array_equal(s.test[i]["image"], images[i])
    assert s.test[i]["label"] == labels[i]


def test_mnist_without_manual_dir_raises_user_error(tmp_path):
  with pytest.raises(UserError, match=r"data\.manual_dir=None .*mnist"):
    sources.load("mnist", data_dir=str(tmp_path))


def test_missing_manual_dir_raises_user_error_naming_it_and_the_debian_package(tmp_path):
  missing = str(tmp_path / "nowhere")
  with pytest.raises(UserError) as e:
    sources.load("fashion_mnist", data_dir=str(tmp_path), manual_dir=missing)
  message = str(e.value)
  assert "data.manual_dir" in message and missing in message
  assert "dataset-fashion-mnist" in message and FASHION_MNIST_DIR in message
  assert "\n" not in message


def test_manual_dir_missing_some_files_raises_user_error_listing_them(tmp_path):
  write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((1, 28, 28)))
  with pytest.raises(UserError, match="lacks train-labels-idx1-ubyte.gz"):
    sources.load("mnist", data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path))


def test_unprepared_cifar10_raises_user_error_naming_the_prepare_command(tmp_path):
  empty = tmp_path / "empty"
  with pytest.raises(UserError) as e:
    sources.load("cifar10", data_dir=str(empty))
  message = str(e.value)
  assert "cifar10" in message and str(empty) in message
  assert f"python -m miajax.data.prepare cifar10 --data_dir={empty}" in message
  assert "\n" not in message
  assert not empty.exists()  # nothing downloaded, nothing written


@pytest.mark.parametrize("name, num_classes, image_shape", [
    ("cifar10", 10, (32, 32, 3)),
    ("cifar100", 100, (32, 32, 3)),
    ("imagenet2012", 1000, (None, None, 3)),
])
def test_stock_datasets_load_through_mock_data_as_uint8_images_and_int_labels(
    tmp_path, name, num_classes, image_shape):
  with tfds.testing.mock_data(num_examples=6):
    s = sources.load(name, data_dir=str(tmp_path))
    assert (s.name, s.num_classes, s.image_shape) == (name, num_classes, image_shape)
    assert (len(s.train), len(s.test)) == (6, 6)
    for record in [s.train[0], s.test[5], *s.test.__getitems__([1, 2])]:
      assert set(record) == {"image", "label"}
      assert record["image"].dtype == np.uint8 and record["image"].ndim == 3
      assert record["image"].shape[2] == 3
      assert isinstance(record["label"], int) and 0 <= record["label"] < num_classes
    if image_shape[0] is not None:
      arrays = sources.to_arrays(s.train)
      assert arrays["image"].shape == (6, *image_shape)


def test_unknown_dataset_name_raises_user_error_listing_the_known_ones():
  with pytest.raises(UserError, match=r"data\.name='foo' is not a known dataset; allowed: "
                     r"digits, mnist, fashion_mnist, cifar10, cifar100, imagenet2012"):
    sources.load("foo")


def test_to_arrays_returns_stacked_uint8_images_and_int32_labels(digits_sources):
  arrays = sources.to_arrays(digits_sources.test)
  assert arrays["image"].shape == (797, 28, 28, 1) and arrays["image"].dtype == np.uint8
  assert arrays["label"].shape == (797,) and arrays["label"].dtype == np.int32


def test_to_arrays_reads_the_given_indices_in_order_across_chunks(digits_sources):
  indices = np.array([5, 3, 999, 0, 5])
  arrays = sources.to_arrays(digits_sources.train, indices, chunk_size=2)
  assert arrays["image"].shape == (5, 28, 28, 1)
  for j, i in enumerate(indices):
    np.testing.assert_array_equal(arrays["image"][j], digits_sources.train[i]["image"])
    assert arrays["label"][j] == digits_sources.train[i]["label"]
  empty = sources.to_arrays(digits_sources.train, [])
  assert empty["image"].shape == (0, 28, 28, 1) and empty["label"].shape == (0,)


def test_to_arrays_rejects_images_of_different_sizes():
  source = [{"image": np.zeros((4, 4, 3), np.uint8), "label": 0},
            {"image": np.zeros((5, 4, 3), np.uint8), "label": 1}]
  with pytest.raises(ValueError, match="one fixed shape"):
    sources.to_arrays(source)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                    reason="TensorFlow is installed")
def test_prepare_command_without_tensorflow_says_how_to_install_it(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "miajax.data.prepare", "cifar10", f"--data_dir={tmp_path}"],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env={**os.environ, "TFDS_DATA_DIR": str(tmp_path)})
  assert result.returncode == 2
  assert "pip install -e '.[prepare]'" in result.stderr


def _config(name: str, arg: str | None = None):
  import importlib.util as util  # pylint: disable=g-import-not-at-top
  spec = util.spec_from_file_location(name, os.path.join(REPO, "configs", f"{name}.py"))
  module = util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_a_bucket_data_dir_is_refused_for_imagenet_in_one_line_naming_gcsfuse():
  from miajax import config as config_lib  # pylint: disable=g-import-not-at-top
  c = _config("imagenet_resnet18", "smoke")
  c.data.dir = "gs://bucket/tfds"
  with pytest.raises(UserError) as e:
    config_lib.validate(c)
  message = str(e.value)
  assert "\n" not in message and "data.dir='gs://bucket/tfds'" in message
  assert "'imagenet2012'" in message and "gcsfuse" in message
  with pytest.raises(UserError, match="gcsfuse"):      # the loader says the same, unvalidated
    sources.load("imagenet2012", data_dir="gs://bucket/tfds")


def test_a_bucket_data_dir_validates_for_datasets_held_in_memory_and_other_urls_do_not():
  from miajax import config as config_lib  # pylint: disable=g-import-not-at-top
  for name in ("default", "cifar10_cnn"):
    c = _config(name, "smoke")
    c.data.dir = "gs://bucket/tfds"
    config_lib.validate(c)
  c.data.dir = "s3://bucket/tfds"
  with pytest.raises(UserError, match="data.dir='s3://bucket/tfds' is not allowed; allowed: "
                     "None, a local or shared-disk directory, or gs://BUCKET/PATH"):
    config_lib.validate(c)


def test_preparing_into_a_bucket_is_refused_saying_to_prepare_locally_and_copy():
  from miajax.data import prepare  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError) as e:
    prepare.prepare("digits", "gs://bucket/tfds")
  assert "\n" not in str(e.value)
  assert "gsutil -m cp -r DIR/* gs://bucket/tfds" in str(e.value)


def test_the_staging_cache_follows_the_environment_like_the_compilation_cache(monkeypatch):
  from miajax.data import staging  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv(staging.CACHE_ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", "/x/cache")
  assert staging.local_dir("gs://bkt/a/tfds/") == "/x/cache/miajax/data/bkt/a/tfds"
  monkeypatch.setenv(staging.CACHE_ENV, "/y")
  assert staging.local_dir("gs://bkt/tfds") == "/y/bkt/tfds"
  with pytest.raises(UserError, match="without empty, . or .. parts"):
    staging.local_dir("gs://bkt/../../etc")


@pytest.fixture
def fake_bucket(tmp_path, monkeypatch):
  """gs://bkt/... read from tmp_path/bucket/... in place of Cloud Storage, every download
  counted; `fail_after` > 0 makes that many succeed and the next one raise."""
  from miajax import paths  # pylint: disable=g-import-not-at-top
  root = tmp_path / "bucket"
  local = lambda url: root / url[len("gs://bkt/"):]
  state = {"downloads": 0, "fail_after": 0}

  def sizes(url):
    base = local(url)
    return {p.relative_to(base).as_posix(): p.stat().st_size for p in base.rglob("*")
            if p.is_file()}

  def download(url, to):
    if state["fail_after"] and state["downloads"] == state["fail_after"]:
      raise OSError("connection reset")
    state["downloads"] += 1
    with open(to, "wb") as f:
      f.write(local(url).read_bytes())

  monkeypatch.setattr(paths, "sizes", sizes)
  monkeypatch.setattr(paths, "download", download)
  monkeypatch.setenv("MIAJAX_DATA_CACHE", str(tmp_path / "cache"))
  return root, state


def test_a_staged_copy_is_reused_while_whole_and_an_interrupted_one_is_never_trusted(
    fake_bucket, digits_dir, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  from miajax.data import staging  # pylint: disable=g-import-not-at-top
  root, state = fake_bucket
  shutil.copytree(os.path.join(digits_dir, "miajax_digits"), root / "tfds" / "miajax_digits")
  files = sorted(p.name for p in (root / "tfds" / "miajax_digits" / "1.0.0").iterdir())
  version = tmp_path / "cache" / "bkt" / "tfds" / "miajax_digits" / "1.0.0"

  state["fail_after"] = 2                     # the copy breaks off after two files
  with pytest.raises(UserError, match=r"copying gs://bkt/tfds/miajax_digits/1.0.0 to .* broke "
                     r"off \(connection reset\); nothing of it is kept, run again"):
    sources.load("digits", data_dir="gs://bkt/tfds")
  assert sorted(p.name for p in version.parent.iterdir()) == [".1.0.0.lock"]   # nothing kept

  state.update(downloads=0, fail_after=0)
  staged = sources.load("digits", data_dir="gs://bkt/tfds")
  assert state["downloads"] == len(files) and sorted(os.listdir(version)) == files
  original = sources.load("digits", digits_dir)
  np.testing.assert_array_equal(sources.to_arrays(staged.train)["image"],
                                sources.to_arrays(original.train)["image"])
  sources.load("digits", data_dir="gs://bkt/tfds")
  assert state["downloads"] == len(files)      # whole: reused, nothing downloaded

  info = root / "tfds" / "miajax_digits" / "1.0.0" / "dataset_info.json"
  info.write_text(info.read_text() + " ")      # the bucket's copy changed: copied again
  assert staging.stage("digits", "miajax_digits", "1.0.0", "gs://bkt/tfds") == \
      str(tmp_path / "cache" / "bkt" / "tfds")
  assert state["downloads"] == 2 * len(files)
  assert (version / "dataset_info.json").read_text() == info.read_text()
  assert sorted(p.name for p in version.parent.iterdir()) == [".1.0.0.lock", "1.0.0"]


def test_a_bucket_without_the_prepared_dataset_is_one_line_naming_what_to_run(fake_bucket,
                                                                            tmp_path):
  root, _ = fake_bucket
  (root / "tfds").mkdir(parents=True)
  with pytest.raises(UserError) as e:
    sources.load("cifar10", data_dir="gs://bkt/tfds")
  assert str(e.value) == (
      "data.name='cifar10' is not prepared in data.dir='gs://bkt/tfds' (no dataset_info.json "
      "under gs://bkt/tfds/cifar10/3.0.2); prepare it on a local disk and copy it there: "
      "python -m miajax.data.prepare cifar10 --data_dir=DIR && gsutil -m cp -r DIR/cifar10 "
      "gs://bkt/tfds/")
  assert not (tmp_path / "cache").exists()


def test_a_cache_that_cannot_be_written_is_one_line_naming_the_setting(fake_bucket, digits_dir,
                                                                       tmp_path, monkeypatch):
  import shutil  # pylint: disable=g-import-not-at-top
  root, _ = fake_bucket
  shutil.copytree(os.path.join(digits_dir, "miajax_digits"), root / "tfds" / "miajax_digits")
  (tmp_path / "file").write_text("not a directory")
  monkeypatch.setenv("MIAJAX_DATA_CACHE", str(tmp_path / "file" / "cache"))
  with pytest.raises(UserError, match=r"cannot be copied to .*file/cache/bkt/tfds/miajax_digits"
                     r"/1.0.0 \(Not a directory\); allowed: a cache directory you can write, "
                     "set with MIAJAX_DATA_CACHE=DIR"):
    sources.load("digits", data_dir="gs://bkt/tfds")
