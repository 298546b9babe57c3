"""Standalone reproduction of the XLA partitioning bug behind dp.per_example_grads' design.

  python benchmarks/per_example_conv_bug.py

Forces 2 CPU devices and takes per-example gradients of one convolution three ways: vmap(grad)
with the batch sharded over "data"; vmap over a 2-trial stack of single-example gradients with
the trial axis sharded; lax.map over the sharded batch. Each is compared with a Python loop of
single-example gradients. Seen with JAX 0.10.2 on XLA:CPU: the first two come back as zeros on
the second device (error ~180), the third is right. Exit status 1 while the bug is present, so
the script can be rerun on each new JAX to see whether the workarounds are still needed. No
miajax code is involved: this is the form to report upstream.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top,wrong-import-position


def f(w, xi):
  y = jax.lax.conv_general_dilated(xi, w, (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jnp.sum(jnp.tanh(y))


def main():
  w = jnp.asarray(np.random.RandomState(1).randn(5, 5, 1, 6).astype(np.float32))
  x = jnp.asarray(np.random.RandomState(2).rand(8, 1, 28, 28, 1).astype(np.float32))
  loop = np.stack([jax.grad(f)(w, x[i]) for i in range(8)])
  mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  ws = jax.device_put(w, NamedSharding(mesh, P()))
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  cases = {
      "vmap(grad), batch sharded": jax.jit(jax.vmap(jax.grad(f), in_axes=(None, 0)))(ws, xs),
      "lax.map(grad), batch sharded": jax.jit(
          lambda w, x: jax.lax.map(lambda e: jax.grad(f)(w, e), x))(ws, xs),
  }
  # A stack of 2 trials (own kernels, own 4 examples), vmapped, the trial axis sharded.
  tmesh = jax.make_mesh((2,), ("trial",), axis_types=(jax.sharding.AxisType.Auto,))
  wt = jax.device_put(jnp.stack([w, 2 * w]), NamedSharding(tmesh, P("trial")))
  xt = jax.device_put(x.reshape(2, 4, 1, 28, 28, 1), NamedSharding(tmesh, P("trial")))
  per_trial = lambda w, x: jax.lax.map(lambda e: jax.grad(f)(w, e), x)
  stack = jax.jit(jax.vmap(per_trial))(wt, xt)
  stack_loop = np.stack([[jax.grad(f)(2 * w if t else w, x[4 * t + i]) for i in range(4)]
                         for t in range(2)])
  print(f"JAX {jax.__version__}, {jax.devices()}")
  wrong = False
  for name, got in cases.items():
    err = np.abs(np.asarray(got) - loop).max(axis=(1, 2, 3, 4))
    wrong |= bool(err.max() > 1e-2)
    print(f"{name:32s} max error per example: {np.array2string(err, precision=4)}")
  err = np.abs(np.asarray(stack) - stack_loop).max(axis=(2, 3, 4, 5))
  wrong |= bool(err.max() > 1e-2)
  print(f"{'vmap over a trial stack':32s} max error per trial: {err.max(axis=1)}")
  print("bug present" if wrong else "all agree")
  raise SystemExit(1 if wrong else 0)


if __name__ == "__main__":
  main()
