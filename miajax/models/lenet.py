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
  # Channels of conv1 and conv2, units of fc1 and fc2.
  widths: tuple[int, int, int, int] = (6, 16, 120, 84)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train  # No layer behaves differently in training.
    c1, c2, f1, f2 = self.widths
    x = nn.relu(nn.Conv(c1, (5, 5), padding="SAME", name="conv1")(x))
    x = max_pool_2x2(x)
    x = nn.relu(nn.Conv(c2, (5, 5), padding="VALID", name="conv2")(x))
    x = max_pool_2x2(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(f1, name="fc1")(x))
    x = nn.relu(nn.Dense(f2, name="fc2")(x))
    return nn.Dense(self.num_classes, name="fc3")(x)


# A dense LeNet-5 with as many weights as LeNet-5 pruned at App. E's rates (4,012 kernel
# weights kept of 61,470 for 10 classes on 28x28 images): 4,005 kernel weights, 4,060
# parameters with biases. The control that asks whether a pruned model leaks less than any
# model of its size: the same layers, each narrower (conv1 75 weights, conv2 450, fc1 3,000,
# fc2 320, fc3 160; the pruned one keeps 90, 240, 3,000, 630, 52).
NARROW_WIDTHS = (3, 6, 20, 16)
