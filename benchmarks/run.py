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
sys.path.insert(0, str(Path(__file__).resolve().parent))

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


def _method_entry(method, phase_name, n, repeats, model_name="lenet5", input_shape=(28, 28, 1),
                  batch_size=64, **overrides):
  """The single-trial step of one phase of a method, after its `enter`, jitted alone."""
  from miajax import config as config_lib  # pylint: disable=g-import-not-at-top
  from miajax import methods  # pylint: disable=g-import-not-at-top
  config = config_lib.base()
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  model = models.create(model_name, 10)
  tx = optax.adam(1e-3)
  recipe = methods.recipe(method, config, model, tx, steps_per_epoch=100, num_classes=10,
                          num_members=60000)
  phase = next(p for p in recipe.phases if p.name == phase_name)
  state = steps.init(jax.random.PRNGKey(0), model, tx, input_shape, recipe.extra)
  hp = recipe.hp(state.params) if recipe.hp else {}
  if phase.enter:
    state = jax.jit(phase.enter)(state, hp)
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=(batch_size, *input_shape)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32)}
  for side in ("mem", "ref") if recipe.attack_batches else ():
    batch[f"{side}/image"] = batch["image"][None].repeat(recipe.attack_batches, 0)
    batch[f"{side}/label"] = batch["label"][None].repeat(recipe.attack_batches, 0)
  fn = jax.jit(phase.step, donate_argnums=0)
  compiled = fn.lower(state, batch, hp).compile()
  sec = run_step(fn, state, batch, hp, n, repeats)
  return {"examples_per_s": batch_size / sec, "wall_s": sec * n, "step_ms": sec * 1e3,
          "flops_per_step": flops(compiled)}


@benchmark("lenet5_admm_step")
def lenet5_admm_step(repeats):
  return _method_entry("pruning", "admm", 200, repeats)


@benchmark("lenet5_masked_step")
def lenet5_masked_step(repeats):
  return _method_entry("pruning", "retrain", 200, repeats)


@benchmark("lenet5_minmax_step")
def lenet5_minmax_step(repeats):
  return _method_entry("minmax", "train", 100, repeats)


@benchmark("lenet5_dp_step")
def lenet5_dp_step(repeats):
  return _method_entry("dp", "train", 50, repeats)


def _projection_entry(model_name, input_shape, repeats):
  """One Z-projection of every prunable layer (paper keep rule), as in an ADMM update."""
  from miajax import pruning  # pylint: disable=g-import-not-at-top
  model = models.create(model_name, 10)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *input_shape)), train=False)["params"]
  counts = pruning.count_tree(params, pruning.keep_counts(
      params, pruning.keep_fractions(params, "paper")))
  fn = jax.jit(pruning.project_tree)
  sec = time_calls(fn, (params, counts), 5 if model_name == "lenet5" else 2, repeats)
  return {"projection_ms": sec * 1e3, "weights": sum(x.size for x in jax.tree.leaves(params))}


@benchmark("lenet5_z_projection")
def lenet5_z_projection(repeats):
  return _projection_entry("lenet5", (28, 28, 1), repeats)


@benchmark("resnet18_z_projection")
def resnet18_z_projection(repeats):
  return _projection_entry("resnet18", (32, 32, 3), repeats)


def _shadow_entry(num_models, together, repeats, steps_per_model=60):
  """N LeNet-5 shadow models: one stack stepped together vs one model after another.

  Compilation is excluded from both (one warm-up step each), so this compares execution;
  separate runs would in addition compile once per model.
  """
  del repeats
  model = models.create("lenet5", 10)
  tx = optax.adam(1e-3)
  init = functools.partial(steps.init, model=model, tx=tx, input_shape=(28, 28, 1))
  step = functools.partial(steps.train_step, model=model, tx=tx)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(num_models, 64, 28, 28, 1)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, (num_models, 64)), jnp.int32)
  if together:
    stack = jax.jit(jax.vmap(init))(jax.random.split(jax.random.PRNGKey(0), num_models))
    lifted = steps.lift(step, steps.default_strategy())
    batch = {"image": images, "label": labels}
    stack, m = lifted(stack, batch, {})
    jax.block_until_ready(stack)
    t0 = time.perf_counter()
    for _ in range(steps_per_model):
      stack, m = lifted(stack, batch, {})
    jax.block_until_ready(stack)
  else:
    one = jax.jit(step, donate_argnums=0)
    init = jax.jit(init)
    warm, _ = one(init(jax.random.PRNGKey(0)), {"image": images[0], "label": labels[0]}, {})
    jax.block_until_ready(warm)
    t0 = time.perf_counter()
    for k in range(num_models):
      state = init(jax.random.PRNGKey(k))
      for _ in range(steps_per_model):
        state, m = one(state, {"image": images[k], "label": labels[k]}, {})
      jax.block_until_ready(state)
  wall = time.perf_counter() - t0
  return {"examples_per_s": num_models * steps_per_model * 64 / wall, "wall_s": wall,
          "models": num_models, "steps_per_model": steps_per_model,
          "strategy": steps.default_strategy() if together else "separate"}


@benchmark("lira_16_shadows_together")
def lira_together(repeats):
  return _shadow_entry(16, True, repeats)


@benchmark("lira_16_shadows_one_by_one")
def lira_one_by_one(repeats):
  return _shadow_entry(16, False, repeats)


@benchmark("sweep_lenet5")
def sweep_lenet5(repeats):
  """K = 1, 4, 8 keep levels of the ADMM step as one stack, per strategy, on 1 and 8 forced
  devices (benchmarks/sweep.py, in processes of their own); the best K = 8 row is the entry."""
  import sweep  # pylint: disable=g-import-not-at-top
  rows = sweep.run(repeats=repeats)
  print(sweep.table(rows))
  best = max((r for r in rows if r["trials"] == 8), key=lambda r: r["ratio_to_k_single_steps"])
  return {"examples_per_s": best["examples_per_s_per_trial"] * 8,
          "step_ms": best["stack_step_ms"], "best_k8": best, "rows": rows}


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
          "projection_ms", "wall_s", "peak_rss_mb")
  width = max(len(n) for n in out)
  print(f"backend {meta['backend']}, f32 matmul peak {meta['matmul_peak_gflops']:.1f} GFLOP/s")
  short = {"examples_per_s": "examples/s", "ratio_to_reference": "ratio", "fraction_of_matmul_peak":
           "peak frac", "projection_ms": "proj ms", "peak_rss_mb": "peak RSS MB"}
  print(f"{'benchmark':<{width}}  " + "  ".join(f"{short.get(c, c):>14}" for c in cols))
  for name, entry in out.items():
    cells = []
    for c in cols:
      v = entry.get(c)
      cells.append(f"{v:>14.3f}" if isinstance(v, float) else f"{str(v):>14}")
    print(f"{name:<{width}}  " + "  ".join(cells))
  text = json.dumps({"meta": meta, **out}, indent=1)
  print(text)
  if args.json:
    Path(args.json).write_text(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
