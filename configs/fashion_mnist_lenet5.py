"""LeNet-5 on Fashion-MNIST from the local IDX files (Debian's dataset-fashion-mnist).

The paper's MNIST-LeNet-5 recipe (App. C-E: batch 64, Adam, 300 epochs; pruning: 200 epochs of
pretraining, then ADMM and masked retraining to 40/90/93.75/93.75/93.75% pruned) on the
Fashion-MNIST files, which are installed here where MNIST's are not. `:smoke` is the CPU size.
"""

from miajax import config as config_lib


def get_config(arg=None):
  c = config_lib.base()
  c.methods = ("baseline",)
  c.data.name = "fashion_mnist"
  c.data.manual_dir = "/usr/share/datasets/fashion-mnist"
  c.model.name = "lenet5"
  c.admm.update_every = 900         # about one Z/U update an epoch of 60,000
  c.train.log_every = 200
  c.train.checkpoint_every = 2000
  if "smoke" in config_lib.parse_arg(arg):
    config_lib.smoke(c)
    c.data.train_size = 10000       # 156 steps an epoch: minutes on 2 cores
    c.train.epochs = 3.0
    c.pruning.pretrain_epochs = 2.0
    c.admm.epochs = 1.0
    c.admm.update_every = 40
    c.pruning.retrain_epochs = 1.0
    c.attack.epochs = 20
    c.train.log_every = 50
    c.train.checkpoint_every = 200
  return c
