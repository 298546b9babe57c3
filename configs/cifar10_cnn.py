"""The CIFAR-10 4-layer CNN row of Table 2 (Rahman et al.'s model, one-layer attack).

Needs the prepared TFDS data: python -m miajax.data.prepare cifar10 --data_dir=DIR, then
--config.data.dir=DIR. Settings: `miajax.config.cifar`.
"""

from miajax import config as config_lib


def get_config(arg=None):
  c = config_lib.cifar("cifar10", "cnn4", ("baseline", "pruning", "dp"), arg)
  c.attack.kind = "one_layer"
  c.model.norm = "none"
  return c
