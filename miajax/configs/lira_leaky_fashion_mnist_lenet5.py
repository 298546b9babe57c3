"""LiRA and RMIA where the target leaks: LeNet-5 memorising 2,500 Fashion-MNIST images.

The regime of `leaky_fashion_mnist_lenet5.py` audited with the strongest attacks: per method a
target and 16 shadow models (RMIA's reference models) train as one stack, each on exactly
2,500 of a 5,000-image pool (`lira.keep_masks`), so the target's audit has 2,500 members and
2,500 non-members, enough for TPR at 0.1% FPR. RMIA's population samples are the 2,500
`reference` test images, which no model trains on.

Half the leaky config's epochs, so that 2 x 17 models fit in under an hour of two shared CPU
cores (43 minutes here): the baseline trains 50 epochs (39 steps an epoch at batch 64, to
100% train accuracy); pruning pretrains as long, runs ADMM for 10 epochs with one Z/U update
an epoch (rho growing 1.69x, to the leaky config's final ~1.9) and retrains the masked model
for 15. The leaky config's lengths are --config.train.epochs=100
--config.pruning.pretrain_epochs=100 --config.admm.epochs=20 --config.pruning.retrain_epochs=30.
Min-Max and DP-SGD train with the leaky config's recipes:
--config.methods="('baseline','minmax','dp')" (78 minutes here, the cores shared).

  python -m miajax.main --config=configs/lira_leaky_fashion_mnist_lenet5.py --workdir=DIR
  python -m miajax.main --config=configs/lira_leaky_fashion_mnist_lenet5.py:smoke --workdir=DIR
      a CPU check of the whole path: 4 shadows, a 1,000-image pool, a few epochs
"""

from miajax import config as config_lib


def get_config(arg=None):
  c = config_lib.base()
  c.methods = ("baseline", "pruning")
  c.data.name = "fashion_mnist"
  c.data.manual_dir = "/usr/share/datasets/fashion-mnist"
  c.data.train_size = 5000          # the pool; each model trains on 2,500 of it
  c.model.name = "lenet5"
  c.lira.num_shadows = 16
  c.train.epochs = 50.0
  c.pruning.pretrain_epochs = 50.0
  c.admm.epochs = 10.0
  c.admm.update_every = 39          # one Z/U update an epoch
  c.admm.rho = 0.01
  c.admm.rho_growth = 1.69          # 1.3^2: rho ends near 1.9 after 10 updates, as after 20
  c.pruning.retrain_epochs = 15.0
  # Min-Max as in the leaky config: App. D's attack rate of 1e-5 barely moves the inner attack.
  c.minmax.gamma = 1.0
  c.minmax.attack_learning_rate = 1e-3
  c.train.log_every = 500
  c.train.checkpoint_every = 2000
  if "smoke" in config_lib.parse_arg(arg):
    config_lib.smoke(c)
    c.lira.num_shadows = 4
    c.data.train_size = 1000
  return c
