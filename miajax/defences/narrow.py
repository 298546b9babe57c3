"""The narrow-model control: the baseline's training of a dense model with about as many
weights as the pruned one (`narrow.model`, default `lenet5_narrow`: 4,005 weights against
LeNet-5's 4,012 kept at App. E's rates). If pruning defends only by leaving few weights, a
model that never had more should leak as little."""

from miajax import models
from miajax.defences import baseline
from miajax.defences.defence import Defence


def _validate(c, need, used):
  del used
  need(c.narrow.model in models.NAMES, "narrow.model", ", ".join(models.NAMES))


DEFENCE = Defence(
    name="narrow", build=baseline.DEFENCE.build,
    sections={"narrow": {"model": "lenet5_narrow"}},
    validate=_validate, model_field="narrow.model")
