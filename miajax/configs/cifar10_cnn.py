"""The CIFAR-10 4-layer CNN row of Table 2 (Rahman et al.'s model, one-layer attack).

Table 2's DP numbers for this row are quoted from Rahman et al. (2018), not trained by the
paper, and the paper states no epsilon for them (its 6.28 is the MNIST setting). The `dp`
method here trains DP-SGD at `dp.epsilon` (the base config's 6.28 unless overridden) as an
extra point of comparison, not a reproduction of that row.

Needs the prepared TFDS data: python -m miajax.data.prepare cifar10 --data_dir=DIR, then
--config.data.dir=DIR; `:smoke` runs without it, on SYNTHETIC images.
Settings: `miajax.config.cifar`.
"""

from miajax import config as config_lib


def get_config(arg=None):
  c = config_lib.cifar("cifar10", "cnn4", ("baseline", "pruning", "dp"), arg)
  c.attack.kind = "one_layer"
  c.model.norm = "none"
  # DP: the paper's row is Rahman et al.'s reported result; this trains at dp.epsilon (6.28).
  return c
