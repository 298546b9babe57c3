"""ResNet-18 on ImageNet (Table 3).

Batch 64 and Adam as App. C states; ImageNet epochs are not given for Table 3, so this uses 90
(pruning: 60 pretraining, 15 ADMM, 15 retraining). Inception crop at 224 for training, centre
crop for evaluation. Needs the prepared TFDS data (imagenet2012 needs its tar files in the manual
dir): python -m miajax.data.prepare imagenet2012 --data_dir=DIR --manual_dir=TARS.
"""

from miajax import config as config_lib


def get_config(arg=None):
  c = config_lib.base()
  c.methods = ("baseline", "pruning")
  c.data.name = "imagenet2012"
  c.data.augment = True
  c.data.workers = 16
  c.model.name = "resnet18_imagenet"
  c.train.epochs = 90.0
  c.pruning.pretrain_epochs = 60.0
  c.admm.epochs = 15.0
  c.pruning.retrain_epochs = 15.0
  c.admm.update_every = 20000       # one Z/U update an epoch of 1.28M at batch 64
  c.attack.epochs = 20
  c.train.log_every = 500
  c.train.checkpoint_every = 5000
  if "smoke" in config_lib.parse_arg(arg):
    config_lib.smoke(c)
    c.data.train_size = 32
    c.data.batch_size = 4
    c.data.eval_batch_size = 8
    c.data.image_size = 64
    c.data.workers = 0
  return c
