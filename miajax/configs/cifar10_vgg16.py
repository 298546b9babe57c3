"""VGG16 on CIFAR-10 (Tables 1, 4, 5).

Needs the prepared TFDS data: python -m miajax.data.prepare cifar10 --data_dir=DIR, then
--config.data.dir=DIR; `:smoke` runs without it, on SYNTHETIC images.
Settings: `miajax.config.cifar`.
"""

from miajax import config as config_lib


def get_config(arg=None):
  return config_lib.cifar("cifar10", "vgg16", ("baseline", "pruning", "minmax", "pruning_minmax"), arg)
