"""The model zoo: the paper's classification networks as Flax modules.

`create(name, num_classes, norm=...)` is the one entry point. Every module is called as
`module.apply(variables, x, train=...)` on NHWC float32 images and returns logits of shape
(batch, num_classes). Models with BatchNorm keep its statistics in the "batch_stats"
collection; `norm="group"` (for DP-SGD) or `norm="none"` removes that collection.

Per-layer pruning reads depth from the order of the flattened params dict. Layers are created
in forward order, and their names also sort in forward order ("conv01" ... "conv13",
"layer1_0" ... "layer4_1", "features00" ... "features18", then "logits"), because JAX rebuilds
dicts with sorted keys (jit outputs, jax.tree.map, optax updates, checkpoint restores): the
creation order of a fresh `init` and the sorted order after any transform are the same.
"""

import dataclasses
from collections.abc import Callable

import flax.linen as nn

from miajax.errors import UserError
from miajax.models.cnn import CNN4
from miajax.models.lenet import NARROW_WIDTHS, LeNet5
from miajax.models.mobilenet import MobileNetV2
from miajax.models.resnet import NORMS, ResNet18
from miajax.models.vgg import VGG16


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  build: Callable[[int, str], nn.Module]   # (num_classes, norm) -> module
  normalised: bool = True                  # takes model.norm; False: has no normalisation


REGISTRY = {
    # LeNet-5 and the 4-layer CNN have no normalisation to swap.
    "lenet5": ModelSpec(lambda n, norm: LeNet5(num_classes=n), normalised=False),
    "cnn4": ModelSpec(lambda n, norm: CNN4(num_classes=n), normalised=False),
    "vgg16": ModelSpec(lambda n, norm: VGG16(num_classes=n, norm=norm)),
    "mobilenetv2": ModelSpec(lambda n, norm: MobileNetV2(num_classes=n, norm=norm)),
    "resnet18": ModelSpec(lambda n, norm: ResNet18(num_classes=n, norm=norm)),
    "mobilenetv2_imagenet": ModelSpec(
        lambda n, norm: MobileNetV2(num_classes=n, norm=norm, imagenet=True)),
    "resnet18_imagenet": ModelSpec(
        lambda n, norm: ResNet18(num_classes=n, norm=norm, imagenet=True)),
    # Not a model of the paper: the narrow-model control (`lenet.NARROW_WIDTHS`).
    "lenet5_narrow": ModelSpec(lambda n, norm: LeNet5(num_classes=n, widths=NARROW_WIDTHS),
                               normalised=False),
}
NAMES = tuple(REGISTRY)


def normalisation(name: str, norm: str) -> str:
  """The normalisation model `name` actually has under model.norm=`norm`: "none" for the
  networks that have none whatever the config says."""
  return norm if REGISTRY[name].normalised else "none"

__all__ = ["CNN4", "LeNet5", "MobileNetV2", "ModelSpec", "NAMES", "NORMS", "REGISTRY",
           "ResNet18", "VGG16", "create", "normalisation"]


def create(name: str, num_classes: int, *, norm: str = "batch") -> nn.Module:
  """Returns the model `name` with a `num_classes`-way classifier.

  Args:
    name: one of `NAMES`; the plain names are the CIFAR (or MNIST) geometry, the
      "_imagenet" ones the standard 224x224 networks.
    num_classes: width of the logits.
    norm: "batch" (BatchNorm), "group" (GroupNorm, for DP-SGD) or "none"; ignored by
      lenet5 and cnn4, which have no normalisation.

  Raises:
    UserError: for an unknown name or norm, or a num_classes that is not an integer >= 2.
  """
  if not isinstance(name, str) or name not in REGISTRY:
    raise UserError(f"model.name={name!r} is not a known model; allowed: {', '.join(NAMES)}")
  if not isinstance(norm, str) or norm not in NORMS:
    raise UserError(
        f"model.norm={norm!r} is not a known normalisation; allowed: {', '.join(NORMS)}")
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
    raise UserError(f"num_classes={num_classes!r} is not a class count; allowed: an integer >= 2")
  return REGISTRY[name].build(num_classes, norm)
