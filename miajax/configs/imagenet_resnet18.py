"""ResNet-18 on ImageNet (Table 3).

Needs the prepared TFDS data, built from ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar
(from image-net.org) in a directory TARS: python -m miajax.data.prepare imagenet2012
--data_dir=DIR --manual_dir=TARS, then --config.data.dir=DIR. `:smoke` runs without it, on
SYNTHETIC images.
Settings: `miajax.config.imagenet`.
"""

from miajax import config as config_lib


def get_config(arg=None):
  return config_lib.imagenet("resnet18_imagenet", arg)
