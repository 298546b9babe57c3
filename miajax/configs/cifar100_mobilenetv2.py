"""MobileNetV2 on CIFAR-100 (Tables 1, 4).

Needs the prepared TFDS data: python -m miajax.data.prepare cifar100 --data_dir=DIR, then
--config.data.dir=DIR; `:smoke` runs without it, on SYNTHETIC images.
Settings: `miajax.config.cifar`.
"""

from miajax import config as config_lib


def get_config(arg=None):
  return config_lib.cifar("cifar100", "mobilenetv2", ("baseline", "pruning", "minmax"), arg)
