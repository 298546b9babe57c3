"""The embedded default: the paper's five methods on LeNet-5 and scikit-learn's bundled digits.

Offline, a few minutes on a laptop CPU: baseline, ADMM pruning (App. E LeNet-5 rates), Min-Max,
pruning + Min-Max and DP-SGD (epsilon 6.28, the paper's MNIST setting) as trials of one run,
then the paper's attack and the threshold attacks on each, printed as Table 1/2.

Usage: python -m miajax.main --workdir=/tmp/miajax [--config.seeds="(0,1,2)"]
"""

from miajax import config as config_lib


def get_config(arg=None):
  c = config_lib.base()
  c.methods = ("baseline", "pruning", "minmax", "pruning_minmax", "dp")
  c.data.name = "digits"            # 1,000 members; 797 non-members: 398 reference, 398 audit
  c.model.name = "lenet5"
  c.train.epochs = 40.0             # 15 steps an epoch at batch 64
  c.pruning.pretrain_epochs = 20.0
  c.admm.epochs = 10.0
  c.admm.update_every = 15          # one Z/U update an epoch, rho 0.05 growing to ~0.7
  c.admm.rho = 0.05
  c.admm.rho_growth = 1.3
  c.pruning.retrain_epochs = 10.0
  # App. D's attack rate of 1e-5 barely moves the inner attack in a run this short.
  c.minmax.attack_learning_rate = 1e-3
  c.minmax.gamma = 1.0
  c.train.log_every = 100
  c.train.checkpoint_every = 200
  c.attack.epochs = 100
  if "smoke" in config_lib.parse_arg(arg):
    config_lib.smoke(c)
  return c
