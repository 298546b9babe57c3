"""LeNet-5 for 28x28x1 MNIST images, the paper's MNIST model (Table 4: about 60K weights)."""

import flax.linen as nn
import jax

from miajax.models.pooling import max_pool_2x2


class LeNet5(nn.Module):
  """Classic LeNet-5 with ReLU and max-pooling: exactly five weight layers.

  The paper prunes five layers of LeNet-5 (App. E: 40%, 90%, 93.75%, 93.75%, 93.75%), so the
  model has two convolutions and three dense layers and nothing else with a kernel. The first
  convolution is SAME-padded so that a 28x28 input takes the role of LeNet's original padded
  32x32 one; 61,706 parameters for 10 classes.
  """

  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train  # No layer behaves differently in training.
    x = nn.relu(nn.Conv(6, (5, 5), padding="SAME", name="conv1")(x))
    x = max_pool_2x2(x)
    x = nn.relu(nn.Conv(16, (5, 5), padding="VALID", name="conv2")(x))
    x = max_pool_2x2(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(120, name="fc1")(x))
    x = nn.relu(nn.Dense(84, name="fc2")(x))
    return nn.Dense(self.num_classes, name="fc3")(x)
