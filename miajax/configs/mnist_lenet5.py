"""The paper's MNIST-LeNet-5 row (Tables 1, 2, 4, 5). MNIST's IDX files must be local:
--config.data.manual_dir=DIR holding train-images-idx3-ubyte.gz and the other three; `:smoke`
runs without them, on SYNTHETIC images."""

from miajax import config as config_lib


def get_config(arg=None):
  c = config_lib.base()
  c.methods = ("baseline", "pruning", "minmax", "pruning_minmax", "dp")
  c.data.name = "mnist"
  c.model.name = "lenet5"
  c.admm.update_every = 900
  c.dp.epsilon = 6.28               # Table 2
  if "smoke" in config_lib.parse_arg(arg):
    config_lib.smoke(c)
    c.data.train_size = 2000
  return c
