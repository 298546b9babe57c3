"""Per-example gradients under the device layout of this process, against one device's loop.

Run as a script by test_dp_devices.py (the device count is fixed when JAX starts, so every
layout is its own process):

  XLA_FLAGS=--xla_force_host_platform_device_count=N python tests/grads_probe.py
  python tests/grads_probe.py --coordinator=127.0.0.1:PORT --num_processes=2 --process_id=I

For each model that DP-SGD trains, it takes the per-example gradients of --batch examples with the
batch sharded over every device of a ("trial", "data") mesh, both with `dp.per_example_grads`
and (with --vmap_grad) with plain `vmap(grad)`, and prints one JSON line per model with the worst
relative error of each against single-example gradients on one device. (Trial stacks are
checked end to end by test_dp_devices.py.)
"""

import argparse
import functools
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from miajax import dp, models, steps  # pylint: disable=wrong-import-position

# (name, norm, input side, channels): the models DP can train, CIFAR ones at a small input
# (ResNet-18 and MobileNetV2 pool globally; VGG16's classifier needs 32x32).
MODELS = (("lenet5", "none", 28, 1), ("cnn4", "none", 32, 3), ("vgg16", "group", 32, 3),
          ("resnet18", "group", 16, 3), ("mobilenetv2", "group", 32, 3))


def vmap_grads(loss_fn, params, batch):
  """The formulation XLA partitions wrongly (kept to report whether it still is)."""
  return jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, batch)


def _example_loss(params, example, *, model):
  logits = model.apply({"params": params}, example["image"][None], train=True)
  return steps.cross_entropy(logits, example["label"][None])


def _global(x, sharding):
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])


def _gather(tree):
  return multihost_utils.process_allgather(tree, tiled=True)


def _errors(name, norm, side, channels, mesh, batch_size, with_vmap_grad):
  model = models.create(name, 10, norm=norm)
  shape = (side, side, channels)
  params = jax.device_get(model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)),
                                     train=False)["params"])
  rng = np.random.default_rng(1)
  batch = {"image": rng.normal(size=(batch_size, *shape)).astype(np.float32),
           "label": (np.arange(batch_size) % 10).astype(np.int32)}
  loss_fn = functools.partial(_example_loss, model=model)
  on_mesh = lambda tree, spec: jax.tree.map(
      lambda x: _global(x, NamedSharding(mesh, spec)), tree)
  sharded = on_mesh(batch, P("data")), on_mesh(params, P())
  out = {}
  paths = {"per_example_grads": dp.per_example_grads}
  if with_vmap_grad:
    paths["vmap_grad"] = vmap_grads
  for path, fn in paths.items():
    got = _gather(jax.jit(functools.partial(fn, loss_fn))(sharded[1], sharded[0]))
    out[path] = _worst(got, loss_fn, params, batch)
  return out


def _worst(got, loss_fn, params, batch):
  return dp.check_per_example_grads(got, loss_fn, params, batch, rtol=np.inf)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--coordinator")
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--models", default="all", help="comma-separated names, or all")
  parser.add_argument("--batch", type=int, default=8, help="examples, split over devices")
  parser.add_argument("--vmap_grad", action="store_true", help="also check plain vmap(grad)")
  args = parser.parse_args()
  if args.coordinator:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  n = jax.device_count()
  mesh = jax.make_mesh((1, n), ("trial", "data"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  for name, norm, side, channels in MODELS:
    if args.models == "all" or name in args.models.split(","):
      print(json.dumps({"model": f"{name}/{norm}", "devices": n,
                        **_errors(name, norm, side, channels, mesh, args.batch,
                                   args.vmap_grad)}),
            flush=True)


if __name__ == "__main__":
  main()
