"""The dataset table: one entry per dataset, and what reads it agrees with the data."""

import numpy as np
import pytest

from miajax import export
from miajax.data import pipeline
from miajax.data import sources
from miajax.data import specs
from miajax.data import synthetic


def test_every_dataset_has_one_spec_and_the_sources_name_exactly_those():
  assert sources.NAMES == specs.NAMES == tuple(specs.SPECS)
  assert set(sources.STOCK_NAMES) == {"cifar10", "cifar100", "imagenet2012"}


@pytest.mark.parametrize("name", specs.NAMES)
def test_statistics_have_one_value_per_channel(name):
  spec = specs.SPECS[name]
  channels = spec.image_shape[-1]
  assert len(spec.mean) == len(spec.std) == channels
  assert all(0 < s < 1 for s in spec.std) and all(0 < m < 1 for m in spec.mean)


@pytest.mark.parametrize("name", specs.NAMES)
def test_synthetic_stand_ins_have_the_specs_shape_and_classes(name):
  src = synthetic.load(name, 16)
  spec = specs.SPECS[name]
  assert src.num_classes == spec.num_classes
  assert np.asarray(src.train[0]["image"]).shape == spec.image_shape


def test_only_cropped_datasets_take_their_input_shape_from_image_size():
  assert specs.SPECS["imagenet2012"].input_shape(160) == (160, 160, 3)
  assert specs.SPECS["cifar10"].input_shape(160) == (32, 32, 3)
  assert export._input_shape({"data": {"name": "fashion_mnist"}}) == (28, 28, 1)  # pylint: disable=protected-access
  assert export._input_shape({"data": {"name": "imagenet2012", "image_size": 64}}) == (64, 64, 3)  # pylint: disable=protected-access


def test_normalise_uses_the_specs_statistics():
  spec = specs.SPECS["cifar10"]
  images = np.full((1, 32, 32, 3), 255, np.uint8)
  out = pipeline.normalise(images, "cifar10")
  np.testing.assert_allclose(out[0, 0, 0], (1 - np.asarray(spec.mean)) / np.asarray(spec.std),
                             rtol=1e-6)
