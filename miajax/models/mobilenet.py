"""MobileNetV2 (width 1.0) in CIFAR geometry (32x32 input) and in the standard 224x224 form."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from miajax.models.resnet import CONV_INIT, normalize

# (expansion t, output channels c, repeats n, first stride s) from Sandler et al. 2018, Table 2.
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1))
_STEM_FEATURES = 32
_HEAD_FEATURES = 1280


class ConvNormReLU6(nn.Module):
  """The stem and head layer: convolution, normalisation, ReLU6."""

  features: int
  kernel_size: int
  strides: int
  norm: str

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    # A bias before a norm layer is redundant; without normalisation the conv needs its own.
    x = nn.Conv(self.features, (self.kernel_size, self.kernel_size), strides=self.strides,
                padding=self.kernel_size // 2, use_bias=self.norm == "none",
                kernel_init=CONV_INIT, name="conv")(x)
    return nn.relu6(normalize(x, self.norm, train, "norm"))


class InvertedResidual(nn.Module):
  """conv1: 1x1 expansion (absent when t=1), conv2: 3x3 depthwise, conv3: linear 1x1 projection.

  The residual is added when input and output shapes match.
  """

  features: int
  strides: int
  expansion: int
  norm: str

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    use_bias = self.norm == "none"
    hidden = x.shape[-1] * self.expansion
    y = x
    if self.expansion != 1:
      y = nn.Conv(hidden, (1, 1), use_bias=use_bias, kernel_init=CONV_INIT, name="conv1")(y)
      y = nn.relu6(normalize(y, self.norm, train, "norm1"))
    y = nn.Conv(hidden, (3, 3), strides=self.strides, padding=1, feature_group_count=hidden,
                use_bias=use_bias, kernel_init=CONV_INIT, name="conv2")(y)
    y = nn.relu6(normalize(y, self.norm, train, "norm2"))
    y = nn.Conv(self.features, (1, 1), use_bias=use_bias, kernel_init=CONV_INIT,
                name="conv3")(y)
    y = normalize(y, self.norm, train, "norm3")
    if self.strides == 1 and x.shape[-1] == self.features:
      y = y + x
    return y


class MobileNetV2(nn.Module):
  """MobileNetV2 1.0 with torchvision's layout: features00 (stem), features01-17, features18.

  features01-17 are the inverted-residual blocks and features18 the 1x1 head convolution to
  1280 channels; then global average pooling and the linear `logits` layer. With
  `imagenet=False` the stem and the second stage use stride 1 instead of 2, as in the common
  CIFAR ports, so a 32x32 input ends on a 4x4 map: 2,236,682 parameters for 10 classes. With
  `imagenet=True` it is the 224x224 network: 3,504,872 parameters for 1000 classes. The
  classifier's dropout is left out so that outputs are a function of the parameters alone.
  """

  num_classes: int
  norm: str = "batch"
  imagenet: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = ConvNormReLU6(_STEM_FEATURES, 3, 2 if self.imagenet else 1, self.norm,
                      name="features00")(x, train)
    index = 0
    for stage, (expansion, features, repeats, strides) in enumerate(_STAGES):
      if stage == 1 and not self.imagenet:
        strides = 1
      for i in range(repeats):
        index += 1
        x = InvertedResidual(features, strides if i == 0 else 1, expansion, self.norm,
                             name=f"features{index:02d}")(x, train)
    x = ConvNormReLU6(_HEAD_FEATURES, 1, 1, self.norm, name=f"features{index + 1:02d}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01),
                    name="logits")(x)
