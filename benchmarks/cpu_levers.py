"""The XLA:CPU levers of benchmarks/NOTES.md (2026-12-02) that need no change to miajax.

python benchmarks/cpu_levers.py [--json PATH]

On the LeNet-5 train step (batch 64, Adam, random inputs), ms per trial-step, best of 3 x 100:
model formulations (flax's pool, the reshaped max-pool miajax uses, convolutions as patches @
kernel), 4 trials vmapped with either convolution, 4 steps unrolled in one program, and 4
trials spread over 2 forced CPU devices, as committed per-device states dispatched alternately
and as one shard_map program. Each device count runs in a process of its own.
"""

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = {"flax_pool": (False, False, False), "reshape_pool": (True, False, False),
            "reshape_pool+patch_conv1": (True, True, False),
            "reshape_pool+patch_convs": (True, True, True)}


def _model(reshape_pool, patch_conv1, patch_conv2):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  class PatchConv(nn.Module):
    features: int
    pad: int = 0

    @nn.compact
    def __call__(self, x):
      k = self.param("kernel", nn.initializers.lecun_normal(), (5, 5, x.shape[-1], self.features))
      b = self.param("bias", nn.initializers.zeros, (self.features,))
      x = jnp.pad(x, ((0, 0), (self.pad,) * 2, (self.pad,) * 2, (0, 0)))
      ho, wo = x.shape[1] - 4, x.shape[2] - 4
      patches = jnp.concatenate([x[:, i:i + ho, j:j + wo] for i in range(5) for j in range(5)],
                                axis=-1)     # (i, j, c) order: the HWIO kernel's rows
      return patches @ k.reshape(-1, self.features) + b

  def pool(x):
    if not reshape_pool:
      return nn.max_pool(x, (2, 2), strides=(2, 2))
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

  class LeNet(nn.Module):
    @nn.compact
    def __call__(self, x):
      c1 = PatchConv(6, pad=2) if patch_conv1 else nn.Conv(6, (5, 5), padding="SAME")
      x = pool(nn.relu(c1(x)))
      c2 = PatchConv(16) if patch_conv2 else nn.Conv(16, (5, 5), padding="VALID")
      x = pool(nn.relu(c2(x))).reshape((x.shape[0], -1))
      x = nn.relu(nn.Dense(84)(nn.relu(nn.Dense(120)(x))))
      return nn.Dense(10)(x)
  return LeNet()


def _step_fns(model):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  tx = optax.adam(1e-3)

  def init(key):
    p = model.init(key, jnp.zeros((64, 28, 28, 1)))["params"]
    return p, tx.init(p)

  def step(state, x, y):
    p, o = state
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply({"params": p}, x), y).mean()
    l, g = jax.value_and_grad(loss)(p)
    u, o = tx.update(g, o, p)
    return (optax.apply_updates(p, u), o), l
  return init, step


def _best_ms(call, per_call, n=100, repeats=3):
  import jax  # pylint: disable=g-import-not-at-top
  for _ in range(5):
    call()
  jax.block_until_ready(call())
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(n):
      out = call()
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t0) / n / per_call * 1e3)
  return best


def child(devices):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  rows = {}
  x1 = jax.random.normal(jax.random.key(1), (64, 28, 28, 1))
  y1 = jnp.zeros((64,), jnp.int32)
  if devices == 1:
    for name, flags in VARIANTS.items():
      init, step = _step_fns(_model(*flags))
      f = jax.jit(step, donate_argnums=0)
      held = [init(jax.random.key(0))]

      def one(f=f, held=held):
        held[0], l = f(held[0], x1, y1)
        return l
      rows[f"{name}: 1 trial"] = _best_ms(one, 1)
      if name in ("flax_pool", "reshape_pool+patch_convs"):
        fv = jax.jit(jax.vmap(step), donate_argnums=0)
        xs, ys = jnp.stack([x1] * 4), jnp.stack([y1] * 4)
        held_v = [jax.vmap(init)(jax.random.split(jax.random.key(0), 4))]

        def four(fv=fv, held_v=held_v, xs=xs, ys=ys):
          held_v[0], l = fv(held_v[0], xs, ys)
          return l
        rows[f"{name}: 4 trials vmapped"] = _best_ms(four, 4)
    init, step = _step_fns(_model(*VARIANTS["reshape_pool"]))

    def unrolled(state, xs, ys):
      for i in range(4):
        state, l = step(state, xs[i], ys[i])
      return state, l
    fu = jax.jit(unrolled, donate_argnums=0)
    held = [init(jax.random.key(0))]
    xs, ys = jnp.stack([x1] * 4), jnp.stack([y1] * 4)

    def four_steps():
      held[0], l = fu(held[0], xs, ys)
      return l
    rows["reshape_pool: 4 steps unrolled per dispatch"] = _best_ms(four_steps, 4, n=25)
  # 4 trials over `devices` devices: committed states dispatched alternately, and shard_map.
  init, step = _step_fns(_model(*VARIANTS["reshape_pool"]))
  devs = jax.devices()
  f = jax.jit(step, donate_argnums=0)
  states = [jax.device_put(init(jax.random.key(i)), devs[i % devices]) for i in range(4)]
  data = [jax.device_put((x1, y1), devs[i % devices]) for i in range(4)]

  def round_robin():
    for i in range(4):
      states[i], l = f(states[i], *data[i])
    return l
  rows[f"reshape_pool: 4 trials, committed to {devices} device(s)"] = _best_ms(round_robin, 4)
  mesh = jax.make_mesh((devices,), ("trial",))
  sh = NamedSharding(mesh, P("trial"))
  stack = [jax.jit(jax.vmap(init), out_shardings=sh)(jax.random.split(jax.random.key(0), 4))]
  xs = jax.device_put(jnp.stack([x1] * 4), sh)
  ys = jax.device_put(jnp.stack([y1] * 4), sh)

  def local(s, x, y, k):
    take = lambda a: jax.lax.dynamic_index_in_dim(a, k, keepdims=False)
    new, l = step(jax.tree.map(take, s), take(x), take(y))
    put = lambda a, b: jax.lax.dynamic_update_index_in_dim(a, b, k, 0)
    return jax.tree.map(put, s, new), l[None]
  one = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P("trial"),) * 3 + (P(),),
                              out_specs=(P("trial"), P("trial"))), donate_argnums=0)

  def spmd():
    for k in range(4 // devices):
      stack[0], l = one(stack[0], xs, ys, k)
    return l
  rows[f"reshape_pool: 4 trials, shard_map over {devices} device(s)"] = _best_ms(spmd, 4)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json")
  parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.child)))
    return
  rows = {}
  for devices in (1, 2):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    out = subprocess.run([sys.executable, __file__, "--child", str(devices)], env=env,
                         check=True, capture_output=True, text=True).stdout
    rows |= json.loads(out.strip().splitlines()[-1])
  for name, ms in rows.items():
    print(f"{name:55} {ms:7.2f} ms/trial-step  {64e3 / ms:7.0f} ex/s")
  print(json.dumps(rows))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
