"""Every paper config loads, and the CIFAR/ImageNet ones train one step through the real
pipeline on TFDS mock data (no dataset on disk, no network)."""

import importlib.util
import json

import pytest
import tensorflow_datasets as tfds

from conftest import ROOT
from miajax import config as config_lib
from miajax import train

CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py"))
MOCKED = ["cifar10_cnn", "cifar10_vgg16", "cifar10_mobilenetv2", "cifar100_vgg16",
          "cifar100_mobilenetv2", "cifar100_resnet18", "imagenet_mobilenetv2",
          "imagenet_resnet18"]


def load(name: str, arg: str | None = None):
  spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_and_its_smoke_variant_validate(name):
  for arg in (None, "smoke"):
    config = load(name, arg)
    config_lib.validate(config)
    assert config.data.batch_size > 0
  assert load(name, "smoke").train.epochs <= load(name).train.epochs


def test_paper_settings_are_those_of_appendices_c_to_e():
  config = load("cifar10_vgg16")
  assert config.data.batch_size == 64 and config.optimizer.name == "adam"
  assert config.train.epochs == 300 and config.pruning.pretrain_epochs == 200
  assert config.attack.epochs == 100 and config.minmax.attack_learning_rate == 1e-5
  assert load("mnist_lenet5").dp.epsilon == 6.28
  assert load("cifar10_cnn").attack.kind == "one_layer"


@pytest.mark.slow
@pytest.mark.parametrize("name", MOCKED)
def test_one_smoke_step_on_mock_data(name, tmp_path):
  config = load(name, "smoke")
  config.methods = ("baseline",)
  config.data.train_size = None
  config.data.batch_size = 4
  config.data.eval_batch_size = 8
  config.data.image_size = 32
  config.train.epochs = 1 / 8                  # one step: 32 mock members / batch 4
  config.attack.epochs = 1
  with tfds.testing.mock_data(num_examples=32):
    records = train.train_and_evaluate(config, tmp_path)
  assert records[0]["step"] == 1
  assert 0.0 <= records[0]["test_accuracy"] <= 1.0
  assert json.loads((tmp_path / "results.json").read_text())[0]["model"] == config.model.name
