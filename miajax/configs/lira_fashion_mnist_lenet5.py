"""LiRA (Carlini et al. 2022) on the Fashion-MNIST LeNet-5 baseline, CPU-sized.

A target and 16 shadow models of the baseline recipe train together as one stack, each on
exactly 5,000 of a 10,000-image pool of members (`lira.keep_masks`); RMIA is measured beside
LiRA with the shadows as its reference models. Any method works:
--config.methods="('pruning',)"; any other config takes --config.lira.num_shadows=16.
Where the target leaks: `lira_leaky_fashion_mnist_lenet5.py`.
"""

from miajax import config as config_lib


def get_config(arg=None):
  c = config_lib.base()
  c.methods = ("baseline",)
  c.data.name = "fashion_mnist"
  c.data.manual_dir = "/usr/share/datasets/fashion-mnist"
  c.data.train_size = 10000         # the pool; each model trains on 5,000 of it
  c.model.name = "lenet5"
  c.lira.num_shadows = 16
  c.train.epochs = 10.0             # 78 steps an epoch per model
  c.pruning.pretrain_epochs = 5.0
  c.admm.epochs = 3.0
  c.admm.update_every = 25
  c.admm.rho = 0.01
  c.admm.rho_growth = 1.3
  c.pruning.retrain_epochs = 5.0
  c.train.log_every = 100
  c.train.checkpoint_every = 400
  if "smoke" in config_lib.parse_arg(arg):
    config_lib.smoke(c)
    c.lira.num_shadows = 4
    c.data.train_size = 2000
  return c
