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
from timing import run_step  # pylint: disable=g-import-not-at-top,wrong-import-position

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


# ---------------------------------------------------------------- sparse inference

# Inference paths of a pruned model (see `_sparse_inference`): "dense" is XLA with the zeros
# in the kernels; the others replace layers by a multiplication that skips the zeros.
SPARSE_PATHS = ("dense", "bcoo_fc", "gather_fc", "bcoo_all")


def _conv_padding(padding):
  """nn.Conv's padding as lax wants it: "SAME"/"VALID" or a (low, high) pair per axis."""
  if isinstance(padding, str):
    return padding
  if isinstance(padding, int):
    return [(padding, padding)] * 2
  return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def _as_matrix(name, kernel):
  """A kernel as the (inputs, outputs) matrix its layer multiplies by: Dense kernels as they
  are; HWIO conv kernels in the (C, kh, kw) order of `lax.conv_general_dilated_patches`."""
  kernel = np.asarray(kernel)
  if kernel.ndim == 2:
    return kernel
  if kernel.ndim != 4:
    raise ValueError(f"{name}: kernel of shape {kernel.shape}")
  return kernel.transpose(2, 0, 1, 3).reshape(-1, kernel.shape[-1])


def _gather_matrix(matrix):
  """ELL layout of a sparse (inputs, outputs) matrix: per output, the rows of its nonzeros
  and their values, padded with (row 0, value 0) to the fullest output's count."""
  nonzero = matrix != 0
  width = max(int(nonzero.sum(0).max()), 1)
  rows = np.zeros((matrix.shape[1], width), np.int32)
  values = np.zeros((matrix.shape[1], width), matrix.dtype)
  for j in range(matrix.shape[1]):
    r = np.flatnonzero(nonzero[:, j])
    rows[j, :len(r)], values[j, :len(r)] = r, matrix[r, j]
  return {"rows": jnp.asarray(rows), "values": jnp.asarray(values)}


def _sparse_apply(model, path, variables, sparse_kernels, images):
  """model.apply(..., train=False) with its Dense (and for bcoo_all its Conv) layers computed
  from `sparse_kernels` ({"fc1": BCOO or ELL dict}) instead of their dense kernels."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top

  def matmul(x, kernel):
    if path == "gather_fc":    # sum over each output's nonzeros: x[:, rows] * values
      return jnp.einsum("bom,om->bo", x[:, kernel["rows"]], kernel["values"])
    return x @ kernel          # dense @ BCOO: jax.experimental.sparse's dot_general

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    name = "/".join(module.path)
    if context.method_name != "__call__" or name not in sparse_kernels:
      return next_fun(*args, **kwargs)
    (x,) = args
    own = module.variables["params"]
    if isinstance(module, nn.Dense):
      y = matmul(x, sparse_kernels[name])
    else:                      # a Conv: im2col, then the sparse matrix product
      strides = module.strides or 1
      strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
      patches = lax.conv_general_dilated_patches(
          x, tuple(module.kernel_size), strides, _conv_padding(module.padding),
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
      y = matmul(patches.reshape(-1, patches.shape[-1]), sparse_kernels[name])
      y = y.reshape(*patches.shape[:3], -1)
    return y + own["bias"] if "bias" in own else y

  with nn.intercept_methods(interceptor):
    return model.apply(variables, images, train=False)


def _sparse_inference(model_name, input_shape, paths, rounds, calls):
  """Inference of `model_name` pruned to App. E's rates (random weights, pruned with the
  `pruning` helpers) per batch size and path ({batch: paths}, "dense" first): ms per call,
  examples/s, ratio to dense, and the largest logit difference to dense."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from jax.experimental import sparse  # pylint: disable=g-import-not-at-top
  from miajax import pruning  # pylint: disable=g-import-not-at-top
  model = models.create(model_name, 10)
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, *input_shape)), train=False))(
      jax.random.PRNGKey(0))
  params = variables["params"]
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, *input_shape)), train=False))
  fractions = pruning.keep_fractions(shapes["params"], "paper")
  counts = pruning.count_tree(params, pruning.keep_counts(shapes["params"], fractions))
  variables = {**variables, "params": jax.jit(pruning.project_tree)(params, counts)}
  flat = {"/".join(path): np.asarray(leaf) for path, leaf in
          traverse_util.flatten_dict(variables["params"]).items()
          if pruning.is_prunable(path, leaf)}
  stats = pruning.compression(variables["params"])
  dense_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
  rows = []
  rng = np.random.default_rng(0)
  batches = tuple(paths)
  for batch in batches:
    images = jnp.asarray(rng.normal(size=(batch, *input_shape)), jnp.float32)
    runs = {}
    for path in paths[batch]:
      if path == "dense":
        fn, args = dense_fn, (variables, images)
      else:
        layers = {n.removesuffix("/kernel"): k for n, k in flat.items()
                  if path == "bcoo_all" or k.ndim == 2}
        kernels = {n: (_gather_matrix(_as_matrix(n, k)) if path == "gather_fc"
                       else sparse.BCOO.fromdense(_as_matrix(n, k))) for n, k in layers.items()}
        fn = jax.jit(functools.partial(_sparse_apply, model, path))
        args = (variables, kernels, images)
      runs[path] = (fn, args, np.asarray(fn(*args)))  # compiled before any timing
    # Rounds of every path back to back, best round per path: on a shared machine, load that
    # comes and goes then hits every path alike instead of whichever ran during it.
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
      for path, (fn, args, _) in runs.items():
        best[path] = min(best[path], time_calls(fn, args, calls(batch, path), 1))
    reference = runs["dense"][2]
    for path, (_, _, logits) in runs.items():
      rows.append({"model": model_name, "batch": batch, "path": path, "ms": best[path] * 1e3,
                   "examples_per_s": batch / best[path],
                   "ratio_to_dense": best["dense"] / best[path],
                   "max_abs_diff_to_dense": float(np.abs(logits - reference).max())})
  print(f"{model_name}: {stats['weights_nonzero']:,} of {stats['weights_total']:,} weights "
        f"nonzero ({stats['compression_ratio']:.2f}x fewer)")
  print("| model | batch | path | ms/call | ex/s | vs dense |")
  print("|-------|------:|------|--------:|-----:|---------:|")
  for r in rows:
    print(f"| {r['model']} | {r['batch']} | {r['path']} | {r['ms']:.3f} | "
          f"{r['examples_per_s']:.0f} | {r['ratio_to_dense']:.2f}x |")
  largest = [r for r in rows if r["batch"] == max(batches)]
  best = max((r for r in largest if r["path"] != "dense"), key=lambda r: r["examples_per_s"])
  return {"examples_per_s": best["examples_per_s"], "step_ms": best["ms"],
          "best_sparse_at_largest_batch": best, "weights_total": stats["weights_total"],
          "weights_nonzero": stats["weights_nonzero"], "rows": rows}


@benchmark("sparse_inference_lenet5")
def sparse_inference_lenet5(repeats):
  # Batch 1 takes ~0.2 ms a call, where one scheduling hiccup is a large fraction: more calls
  # and rounds.
  return _sparse_inference("lenet5", (28, 28, 1), {1: SPARSE_PATHS, 256: SPARSE_PATHS},
                           3 * repeats, calls=lambda batch, path: 500 if batch == 1 else 10)


@benchmark("sparse_inference_resnet18")
def sparse_inference_resnet18(repeats):
  # gather_fc is left out: ResNet-18's one Dense layer is 512x10. bcoo_all only at batch 1:
  # dense @ BCOO materialises (rows, nonzeros) products before summing them, which for a
  # first-stage conv at batch 64 is 65k x 18k floats (XLA's temp buffer: 4.8 GB).
  return _sparse_inference("resnet18", (32, 32, 3),
                           {1: ("dense", "bcoo_fc", "bcoo_all"), 64: ("dense", "bcoo_fc")},
                           repeats, calls=lambda batch, path: 5 if batch == 1 else 2)


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
