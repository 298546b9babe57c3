"""The four-layer CNN of the paper's CIFAR-10 comparison with DP-SGD (Table 2, "CIFAR-10-CNN").

The paper reuses the network of Rahman et al. 2018 and describes it only as a four-layer CNN.
Rahman et al. attack models trained with the DP-SGD of Abadi et al. 2016, whose CIFAR-10
network is two 5x5 convolutions with 64 channels, each followed by ReLU and 2x2 max-pooling,
then fully connected layers of 384 units. We keep those layers and stop at four weight layers:
conv 64@5x5, pool, conv 64@5x5, pool, dense 384, dense num_classes. Abadi et al. feed 24x24
crops; here the full 32x32 image goes in with SAME padding, giving an 8x8x64 feature map and
1,684,426 parameters for 10 classes. There is no normalisation, so DP-SGD can train it as is.
"""

import flax.linen as nn
import jax

from miajax.models.pooling import max_pool_2x2


class CNN4(nn.Module):
  """Two conv + max-pool stages, one hidden dense layer, a linear classifier."""

  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train  # No layer behaves differently in training.
    x = nn.relu(nn.Conv(64, (5, 5), padding="SAME", name="conv1")(x))
    x = max_pool_2x2(x)
    x = nn.relu(nn.Conv(64, (5, 5), padding="SAME", name="conv2")(x))
    x = max_pool_2x2(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(384, name="fc1")(x))
    return nn.Dense(self.num_classes, name="fc2")(x)
