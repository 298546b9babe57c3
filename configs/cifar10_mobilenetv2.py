"""MobileNetV2 on CIFAR-10 (Tables 1, 4).

The paper's settings (App. C-E): batch 64, Adam, 300 epochs (pruning: 200 pretraining, then ADMM
and masked retraining), random crop + flip, the App. E per-layer pruning rule, the Nasr et al.
attack retrained for 100 epochs. Needs the prepared TFDS data:
python -m miajax.data.prepare cifar10 --data_dir=DIR, then --config.data.dir=DIR.
"""

from miajax import config as config_lib


def get_config(arg=None):
  c = config_lib.base()
  c.methods = ("baseline", "pruning", "minmax")
  c.data.name = "cifar10"
  c.data.augment = True
  c.model.name = "mobilenetv2"
  c.admm.update_every = 780         # about one Z/U update an epoch of 50,000
  c.train.log_every = 200
  c.train.checkpoint_every = 2000
  if "smoke" in config_lib.parse_arg(arg):
    config_lib.smoke(c)
    c.data.train_size = 256
    c.data.batch_size = 16
    c.data.eval_batch_size = 64
  return c
