"""VGG16 in the CIFAR form: thirteen 3x3 conv layers with BatchNorm and one linear classifier."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from miajax.models.pooling import max_pool_2x2
from miajax.models.resnet import CONV_INIT, normalize

# Output channels of each conv layer; "M" is a 2x2 max-pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
          512, 512, 512, "M")


class VGG16(nn.Module):
  """VGG16 for 32x32 input, as in the common CIFAR ports (no 4096-wide dense layers).

  Pooling is SAME-padded and the last feature map is averaged over space (a no-op on the
  1x1 map a 32x32 input leaves), so 28x28 MNIST images, for which the paper also reports
  VGG16, go through unchanged and the parameter count does not depend on the input size:
  14,724,042 parameters for 10 classes. Layers are "conv01"-"conv13" (with "norm01"-"norm13")
  and "logits"; the zero padding keeps sorted order equal to depth.
  """

  num_classes: int
  norm: str = "batch"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    # A bias before a norm layer is redundant; without normalisation the conv needs its own.
    use_bias = self.norm == "none"
    layer = 0
    for spec in _VGG16:
      if spec == "M":
        x = max_pool_2x2(x, padding="SAME")
        continue
      layer += 1
      x = nn.Conv(spec, (3, 3), padding=1, use_bias=use_bias, kernel_init=CONV_INIT,
                  name=f"conv{layer:02d}")(x)
      x = nn.relu(normalize(x, self.norm, train, f"norm{layer:02d}"))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="logits")(x)
