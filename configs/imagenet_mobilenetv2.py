"""MobileNetV2 on ImageNet (Table 3).

Needs the prepared TFDS data (imagenet2012 needs its tar files in the manual dir):
python -m miajax.data.prepare imagenet2012 --data_dir=DIR --manual_dir=TARS.
Settings: `miajax.config.imagenet`.
"""

from miajax import config as config_lib


def get_config(arg=None):
  return config_lib.imagenet("mobilenetv2_imagenet", arg)
