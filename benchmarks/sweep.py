"""A sparsity sweep as one stack: the LeNet-5 ADMM step of K trials with K keep levels.

  python benchmarks/sweep.py [--json PATH] [--repeats N] [--devices 1,8] [--trials 1,4,8]

For each forced CPU device count (its own process: JAX fixes the count when it starts), each K
and each trial strategy (vmap, map, loop), times one step of the whole stack, the trials
differing in their traced keep counts as in a real sweep, with the trial axis sharded over
"trial" as train.py lays it out. Prints a table and JSON: milliseconds per stack step,
examples/s per trial, peak RSS of the process, and the ratio of K single-trial steps (the
same step jitted alone, measured in the same process) to the stack's step: above 1, the
stack beats running the K configurations one after another.
"""

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

KEEPS = (0.5, 0.3, 0.2, 0.1, 0.05, 0.4, 0.25, 0.15)
BATCH = 64


def _child(devices, trial_counts, repeats):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
  from miajax import config as config_lib, methods, models, steps  # pylint: disable=g-import-not-at-top,multiple-imports
  from timing import run_step  # pylint: disable=g-import-not-at-top
  timed = lambda fn, state, batch, hp, n: run_step(fn, state, batch, hp, n, repeats)

  model = models.create("lenet5", 10)
  tx = optax.adam(1e-3)

  def recipe(keep):
    c = config_lib.base()
    c.pruning.keep = str(keep)
    return methods.recipe("pruning", c, model, tx, steps_per_epoch=100, num_classes=10,
                          num_members=60000)

  def stack(k):
    recipes = [recipe(keep) for keep in KEEPS[:k]]
    admm = next(p for p in recipes[0].phases if p.name == "admm")
    init = functools.partial(steps.init, model=model, tx=tx, input_shape=(28, 28, 1),
                             extra_fn=recipes[0].extra)
    state = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(0), k))
    params0 = jax.tree.map(lambda x: x[0], state.params)
    hp = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]),
                      *[r.hp(params0) for r in recipes])
    state = jax.jit(jax.vmap(admm.enter))(state, hp)
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(k, BATCH, 28, 28, 1)).astype(np.float32),
             "label": rng.integers(0, 10, (k, BATCH)).astype(np.int32)}
    return admm.step, state, batch, hp

  step, state, batch, hp = stack(1)
  take = lambda tree: jax.tree.map(lambda x: x[0], tree)
  single = timed(jax.jit(step, donate_argnums=0), take(state), take(batch), take(hp), 50)
  rows = []
  for k in trial_counts:
    for strategy in ("vmap", "map", "loop"):
      n = jax.device_count()
      trial_axis = max(d for d in range(1, n + 1) if n % d == 0 and k % d == 0)
      if strategy != "vmap":
        trial_axis = 1
      mesh = jax.make_mesh((trial_axis, n // trial_axis), ("trial", "data"),
                           axis_types=(jax.sharding.AxisType.Auto,) * 2)
      step, state, batch, hp = stack(k)
      state = jax.device_put(state, NamedSharding(mesh, P("trial")))
      hp = jax.device_put(hp, NamedSharding(mesh, P("trial")))
      batch = jax.device_put(batch, NamedSharding(mesh, P("trial", "data")))
      sec = timed(steps.lift(step, strategy), state, batch, hp, max(5, 40 // k))
      rows.append({"devices": n, "trials": k, "strategy": strategy,
                   "mesh": f"{trial_axis}x{n // trial_axis}", "stack_step_ms": 1e3 * sec,
                   "examples_per_s_per_trial": BATCH / sec,
                   "ratio_to_k_single_steps": k * single / sec,
                   "single_step_ms": 1e3 * single,
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
  return rows


def run(devices=(1, 8), trial_counts=(1, 4, 8), repeats=3) -> list[dict]:
  rows = []
  for d in devices:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={d}")
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(d), "--trials",
         ",".join(map(str, trial_counts)), "--repeats", str(repeats)],
        env=env, check=True, capture_output=True, text=True).stdout
    rows += json.loads(out.strip().splitlines()[-1])
  return rows


def table(rows) -> str:
  lines = [f"{'devices':>7} {'trials':>6} {'strategy':8} {'mesh':>5} {'stack ms':>9} "
           f"{'ex/s/trial':>10} {'vs K single':>11} {'peak MB':>8}"]
  for r in rows:
    lines.append(f"{r['devices']:7d} {r['trials']:6d} {r['strategy']:8} {r['mesh']:>5} "
                 f"{r['stack_step_ms']:9.1f} {r['examples_per_s_per_trial']:10.0f} "
                 f"{r['ratio_to_k_single_steps']:10.2f}x {r['peak_rss_mb']:8.0f}")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--devices", default="1,8")
  parser.add_argument("--trials", default="1,4,8")
  parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  trial_counts = tuple(int(k) for k in args.trials.split(","))
  if args.child:
    print(json.dumps(_child(args.child, trial_counts, args.repeats)))
    return
  rows = run(tuple(int(d) for d in args.devices.split(",")), trial_counts, args.repeats)
  print(table(rows))
  print(json.dumps(rows))
  if args.json:
    Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
  main()
