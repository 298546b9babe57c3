"""The embedded default: LeNet-5 on scikit-learn's bundled digits. Offline, minutes on a CPU.

Usage: python -m miajax.main --workdir=/tmp/run [--config.seeds=0,1,2]
"""

from miajax import config as config_lib


def get_config(arg=None):
  c = config_lib.base()
  c.methods = ("baseline",)
  c.data.name = "digits"            # 1,000 members, 797 non-members (398 reference, 398 audit)
  c.model.name = "lenet5"
  c.train.epochs = 40.0             # 15 steps an epoch at batch 64
  c.pruning.pretrain_epochs = 25.0
  c.admm.epochs = 10.0
  c.admm.update_every = 15          # one Z/U update an epoch
  c.admm.rho = 1e-2
  c.pruning.retrain_epochs = 10.0
  c.train.log_every = 100
  c.train.checkpoint_every = 200
  c.attack.epochs = 100
  if "smoke" in config_lib.parse_arg(arg):
    config_lib.smoke(c)
  return c
