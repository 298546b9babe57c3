"""ResNet-18 in CIFAR geometry (32x32 input) and in the standard ImageNet geometry.

Also home of the normalisation switch shared by the BatchNorm models (VGG16, MobileNetV2,
ResNet-18): DP-SGD needs per-example gradients, which BatchNorm's cross-example statistics
break, so every norm layer can be swapped for GroupNorm or dropped.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

NORMS = ("batch", "group", "none")

# He initialisation over fan-in. torchvision uses fan-out, which normalisation hides but which
# shrinks the signal by about 2/channels at every depthwise conv; with norm="none" the
# MobileNetV2 logits then start near 1e-9. Fan-in keeps activations at scale with any norm.
CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "normal")

# GroupNorm(32) as in Wu & He 2018, with fewer groups where the channel count is not a
# multiple of 32 (MobileNetV2 has 16-, 24- and 144-channel layers).
_MAX_GROUPS = 32


def normalize(x: jax.Array, kind: str, train: bool, name: str) -> jax.Array:
  """Applies the normalisation `kind` ("batch", "group" or "none") to NHWC `x`.

  Callers keep `name` the same for every kind so that parameter paths do not depend on it.
  BatchNorm follows PyTorch's defaults (momentum 0.1 there is 0.9 here, epsilon 1e-5), the
  settings the paper's CIFAR and ImageNet recipes were tuned with.
  """
  if kind == "batch":
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)(x)
  if kind == "group":
    groups = math.gcd(x.shape[-1], _MAX_GROUPS)
    return nn.GroupNorm(num_groups=groups, epsilon=1e-5, name=name)(x)
  if kind == "none":
    return x
  raise ValueError(f"norm={kind!r}; allowed: {', '.join(NORMS)}")


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with an identity shortcut, or a 1x1 projection when shapes change."""

  features: int
  strides: int
  norm: str

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    # A bias before a norm layer is redundant; without normalisation the conv needs its own.
    use_bias = self.norm == "none"
    y = nn.Conv(self.features, (3, 3), strides=self.strides, padding=1, use_bias=use_bias,
                kernel_init=CONV_INIT, name="conv1")(x)
    y = nn.relu(normalize(y, self.norm, train, "norm1"))
    y = nn.Conv(self.features, (3, 3), padding=1, use_bias=use_bias, kernel_init=CONV_INIT,
                name="conv2")(y)
    y = normalize(y, self.norm, train, "norm2")
    if self.strides != 1 or x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=use_bias,
                  kernel_init=CONV_INIT, name="shortcut_conv")(x)
      x = normalize(x, self.norm, train, "shortcut_norm")
    return nn.relu(y + x)


class ResNet18(nn.Module):
  """ResNet-18: BasicBlocks [2, 2, 2, 2] with 64, 128, 256, 512 channels.

  With `imagenet=False` (CIFAR geometry, as in the common CIFAR ports the paper's 11.17M
  figure matches) the stem is one 3x3 stride-1 convolution and there is no max-pool:
  11,173,962 parameters for 10 classes. With `imagenet=True` it is the original 7x7 stride-2
  stem and 3x3 stride-2 max-pool for 224x224 input: 11,689,512 parameters for 1000 classes.
  Layers are "conv1" (stem), blocks "layer1_0" ... "layer4_1", then "logits", an order that
  sorting keeps.
  """

  num_classes: int
  norm: str = "batch"
  imagenet: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    use_bias = self.norm == "none"
    if self.imagenet:
      x = nn.Conv(64, (7, 7), strides=2, padding=3, use_bias=use_bias, kernel_init=CONV_INIT,
                  name="conv1")(x)
    else:
      x = nn.Conv(64, (3, 3), padding=1, use_bias=use_bias, kernel_init=CONV_INIT,
                  name="conv1")(x)
    x = nn.relu(normalize(x, self.norm, train, "norm1"))
    if self.imagenet:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, (features, strides) in enumerate(zip((64, 128, 256, 512), (1, 2, 2, 2))):
      for block in range(2):
        x = BasicBlock(features, strides if block == 0 else 1, self.norm,
                       name=f"layer{stage + 1}_{block}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="logits")(x)
