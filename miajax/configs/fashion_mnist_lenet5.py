"""LeNet-5 on Fashion-MNIST from the local IDX files (Debian's dataset-fashion-mnist).

CPU-sized: the paper's recipe (batch 64, Adam; pruning = pretraining, ADMM, masked retraining to
the App. E LeNet-5 rates 40/90/93.75/93.75/93.75% pruned) with a few epochs per phase instead
of 300. ADMM's rho starts small and grows 1.3x per Z/U update, so the proximal pull tightens as
the weights settle. `:smoke` is a two-minute check on a 20,000-image subset.
"""

from miajax import config as config_lib


def get_config(arg=None):
  c = config_lib.base()
  c.methods = ("baseline", "pruning", "minmax", "pruning_minmax", "dp")
  c.seeds = (0, 1, 2)
  c.data.name = "fashion_mnist"
  c.data.manual_dir = "/usr/share/datasets/fashion-mnist"
  c.model.name = "lenet5"
  c.train.epochs = 6.0
  c.pruning.pretrain_epochs = 3.0
  c.admm.epochs = 3.0
  c.admm.update_every = 150         # 18 Z/U updates over the ADMM phase
  c.admm.rho = 0.01
  c.admm.rho_growth = 1.3
  c.pruning.retrain_epochs = 6.0
  c.attack.epochs = 30
  # App. D's attack rate of 1e-5 barely moves the inner attack in a run this short.
  c.minmax.attack_learning_rate = 1e-3
  c.train.log_every = 200
  c.train.checkpoint_every = 2000
  if "smoke" in config_lib.parse_arg(arg):
    config_lib.smoke(c)
    c.methods = ("baseline",)
    c.seeds = (0,)
    c.data.train_size = 20000       # 312 steps an epoch
    c.train.epochs = 4.0
    c.pruning.pretrain_epochs = 2.0
    c.admm.epochs = 3.0
    c.admm.update_every = 50
    c.pruning.retrain_epochs = 4.0
    c.attack.epochs = 20
    c.train.log_every = 100
    c.train.checkpoint_every = 500
  return c
