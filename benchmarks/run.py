"""Speed and memory of the hot paths, measured back to back in one process.

python benchmarks/run.py [--only NAME[,NAME]] [--json PATH] [--repeats N]

Each entry times a jitted step after compilation and reports examples/s, wall time, the
process's peak RSS so far, the FLOPs per step from XLA's cost analysis, the achieved fraction
of this machine's f32 matmul peak (measured first, in the same process), and its ratio to the
plain LeNet-5 step measured in the same sitting (`lenet5_train_step`), because on a noisy
machine only ratios measured together mean anything.
"""

import argparse
import functools
import json
import resource
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from miajax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from miajax import steps  # pylint: disable=g-import-not-at-top,wrong-import-position
import optax  # pylint: disable=g-import-not-at-top,wrong-import-order,wrong-import-position

BENCHMARKS = {}


def benchmark(name):
  def register(fn):
    BENCHMARKS[name] = fn
    return fn
  return register


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def flops(compiled) -> float | None:
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops")) if cost and cost.get("flops") else None
  except Exception:  # pylint: disable=broad-except
    return None


def time_calls(fn, args, n: int, repeats: int) -> float:
  """Best of `repeats` mean seconds per call over n calls (the minimum filters noise)."""
  out = fn(*args)
  jax.block_until_ready(out)
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(n):
      out = fn(*args)
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t0) / n)
  return best


def matmul_peak(repeats: int) -> float:
  """Measured f32 matmul FLOP/s of this machine (2048^3, jitted)."""
  a = jnp.ones((2048, 2048), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  sec = time_calls(f, (a,), 5, repeats)
  return 2 * 2048 ** 3 / sec


def _classifier(name, batch_size, input_shape, num_classes=10, k=None, strategy=None):
  """(step, args, examples per call, compiled) for the plain train step of `name`."""
  model = models.create(name, num_classes)
  tx = optax.adam(1e-3)
  init = functools.partial(steps.init, model=model, tx=tx, input_shape=input_shape)
  step = functools.partial(steps.train_step, model=model, tx=tx)
  rng = np.random.default_rng(0)
  if k is None:
    state = init(jax.random.PRNGKey(0))
    batch = {"image": jnp.asarray(rng.normal(size=(batch_size, *input_shape)), jnp.float32),
             "label": jnp.asarray(rng.integers(0, num_classes, batch_size), jnp.int32)}
    fn = jax.jit(step, donate_argnums=0)
    hp = {}
  else:
    state = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(0), k))
    batch = {"image": jnp.asarray(rng.normal(size=(k, batch_size, *input_shape)), jnp.float32),
             "label": jnp.asarray(rng.integers(0, num_classes, (k, batch_size)), jnp.int32)}
    fn = steps.lift(step, strategy)
    hp = {}
  # The looped strategy is a Python loop of one compiled program; its FLOPs are K times that.
  compiled = fn.lower(state, batch, hp).compile() if hasattr(fn, "lower") else None
  return fn, state, batch, hp, compiled


def run_step(fn, state, batch, hp, n, repeats):
  """Mean seconds per step, threading the donated state through."""
  holder = [state]

  def call():
    holder[0], metrics = fn(holder[0], batch, hp)
    return metrics
  call()
  jax.block_until_ready(holder[0])
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(n):
      m = call()
    jax.block_until_ready((holder[0], m))
    best = min(best, (time.perf_counter() - t0) / n)
  return best


def classifier_entry(name, batch_size, input_shape, n, repeats, k=None, strategy=None):
  fn, state, batch, hp, compiled = _classifier(name, batch_size, input_shape, k=k,
                                               strategy=strategy)
  sec = run_step(fn, state, batch, hp, n, repeats)
  examples = batch_size * (k or 1)
  return {"examples_per_s": examples / sec, "wall_s": sec * n, "step_ms": sec * 1e3,
          "flops_per_step": flops(compiled), "trials": k or 1}


@benchmark("lenet5_train_step")
def lenet5_train_step(repeats):
  return classifier_entry("lenet5", 64, (28, 28, 1), 200, repeats)


@benchmark("resnet18_train_step")
def resnet18_train_step(repeats):
  return classifier_entry("resnet18", 128, (32, 32, 3), 3, repeats)


@benchmark("lenet5_4_trials_vmap")
def lenet5_trials_vmap(repeats):
  return classifier_entry("lenet5", 64, (28, 28, 1), 50, repeats, k=4, strategy="vmap")


@benchmark("lenet5_4_trials_map")
def lenet5_trials_map(repeats):
  return classifier_entry("lenet5", 64, (28, 28, 1), 50, repeats, k=4, strategy="map")


@benchmark("lenet5_4_trials_loop")
def lenet5_trials_loop(repeats):
  return classifier_entry("lenet5", 64, (28, 28, 1), 50, repeats, k=4, strategy="loop")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", default="", help="comma-separated benchmark names")
  parser.add_argument("--json", default=None, help="write the results here too")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
  unknown = [n for n in names if n not in BENCHMARKS]
  if unknown:
    print(f"error: unknown benchmark {unknown[0]!r}; allowed: {', '.join(BENCHMARKS)}",
          file=sys.stderr)
    return 2
  if "lenet5_train_step" not in names:
    names.insert(0, "lenet5_train_step")       # the reference every ratio is taken against
  peak = matmul_peak(args.repeats)
  out = {}
  for name in names:
    t0 = time.perf_counter()
    entry = BENCHMARKS[name](args.repeats)
    entry["bench_wall_s"] = time.perf_counter() - t0
    entry["peak_rss_mb"] = peak_rss_mb()
    if entry.get("flops_per_step") and entry.get("step_ms"):
      entry["fraction_of_matmul_peak"] = entry["flops_per_step"] / (entry["step_ms"] / 1e3) / peak
    out[name] = entry
  ref = out["lenet5_train_step"]["examples_per_s"]
  for entry in out.values():
    if "examples_per_s" in entry:
      entry["ratio_to_reference"] = entry["examples_per_s"] / ref
  meta = {"backend": jax.default_backend(), "devices": jax.device_count(),
          "matmul_peak_gflops": peak / 1e9, "jax": jax.__version__}
  cols = ("examples_per_s", "step_ms", "ratio_to_reference", "fraction_of_matmul_peak",
          "peak_rss_mb")
  width = max(len(n) for n in out)
  print(f"backend {meta['backend']}, f32 matmul peak {meta['matmul_peak_gflops']:.1f} GFLOP/s")
  print(f"{'benchmark':<{width}}  " + "  ".join(f"{c:>24}" for c in cols))
  for name, entry in out.items():
    cells = []
    for c in cols:
      v = entry.get(c)
      cells.append(f"{v:>24.3f}" if isinstance(v, float) else f"{str(v):>24}")
    print(f"{name:<{width}}  " + "  ".join(cells))
  text = json.dumps({"meta": meta, **out}, indent=1)
  print(text)
  if args.json:
    Path(args.json).write_text(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
