"""Per-example gradient speed: vmap(grad) against lax.map, the path multi-device DP takes.

  python benchmarks/per_example_grads.py [--json PATH] [--repeats N]

Each device layout is its own process (the forced CPU device count is fixed when JAX starts):
1 device times vmap(grad), lax.map and dp.per_example_grads (which takes vmap(grad) there);
2 devices (the batch sharded over "data") time lax.map and dp.per_example_grads (which takes
lax.map there, because XLA:CPU gets vmap(grad) wrong). Prints a table and JSON: milliseconds per call,
examples/s, peak RSS of the process, and the ratio to vmap(grad) on 1 device (the path before
the fix) measured in the same sitting.
"""

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

# (model, input side, channels, batch): DP's MNIST model at the paper's batch, and the CIFAR CNN.
CASES = (("lenet5", 28, 1, 64), ("cnn4", 32, 3, 32))


def _child(devices: int, repeats: int) -> list[dict]:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
  from miajax import dp, models, steps  # pylint: disable=g-import-not-at-top

  def vmapped(loss_fn, params, batch):
    return jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, batch)

  def mapped(loss_fn, params, batch):
    return jax.lax.map(lambda example: jax.grad(loss_fn)(params, example), batch)

  mesh = jax.make_mesh((devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  rows = []
  for name, side, channels, batch_size in CASES:
    model = models.create(name, 10)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, side, side, channels)),
                        train=False)["params"]
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(batch_size, side, side, channels)).astype(np.float32),
             "label": (np.arange(batch_size) % 10).astype(np.int32)}

    def loss_fn(params, example, model=model):
      logits = model.apply({"params": params}, example["image"][None], train=True)
      return steps.cross_entropy(logits, example["label"][None])

    params = jax.device_put(params, NamedSharding(mesh, P()))
    batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
    paths = {"vmap(grad)": vmapped} if devices == 1 else {}   # wrong on 2 devices
    paths |= {"lax.map": mapped, "dp.per_example_grads": dp.per_example_grads}
    for path, fn in paths.items():
      f = jax.jit(functools.partial(fn, loss_fn))
      jax.block_until_ready(f(params, batch))
      n = max(1, int(0.5 / _once(f, params, batch)))
      best = min(_timed(f, params, batch, n) for _ in range(repeats))
      rows.append({"model": name, "batch": batch_size, "devices": devices, "path": path,
                   "ms": 1e3 * best, "examples_per_s": batch_size / best,
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
  return rows


def _once(f, *args):
  import jax  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  jax.block_until_ready(f(*args))
  return max(time.perf_counter() - t0, 1e-6)


def _timed(f, params, batch, n):
  import jax  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  for _ in range(n):
    out = f(params, batch)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / n


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", help="also write the rows here")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(_child(args.child, args.repeats)))
    return
  rows = []
  for devices in (1, 2):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    out = subprocess.run([sys.executable, __file__, "--child", str(devices),
                          "--repeats", str(args.repeats)], env=env, check=True,
                         capture_output=True, text=True).stdout
    rows += json.loads(out.strip().splitlines()[-1])
  reference = {r["model"]: r["ms"] for r in rows
               if r["path"] == "vmap(grad)" and r["devices"] == 1}
  for r in rows:
    r["ratio_to_vmap_1_device"] = reference[r["model"]] / r["ms"]
  print(f"{'model':8s} {'batch':>5s} {'devices':>7s} {'path':20s} "
        f"{'ms/call':>9s} {'ex/s':>8s} {'peak MB':>8s} {'vs vmap, 1 device':>18s}")
  for r in rows:
    print(f"{r['model']:8s} {r['batch']:5d} {r['devices']:7d} {r['path']:20s} {r['ms']:9.1f} "
          f"{r['examples_per_s']:8.0f} {r['peak_rss_mb']:8.0f} "
          f"{r['ratio_to_vmap_1_device']:17.2f}x")
  print(json.dumps(rows))
  if args.json:
    Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
  main()
