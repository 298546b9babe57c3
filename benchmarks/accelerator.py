"""The accelerator timings, as one prepared script: run it once on a GPU or TPU.

python benchmarks/accelerator.py [--json PATH] [--repeats N] [--quick]

Times, after compilation and in one process: the device's matmul peak (f32 and bf16, measured
here); the ResNet-18 CIFAR train step at batch 128 in f32 and in bf16 (params and images cast
to bf16 inside the step; master weights, Adam and BatchNorm statistics stay f32); and a
16-trial LeNet-5 stack at batch 64 a trial, vmapped against the trials one after another
("loop"). Each row gives examples/s, ms per step, XLA's FLOPs per step, the fraction of the
matching measured peak and peak device memory where the backend reports it; then a table and
JSON. `--quick` shrinks everything so that the script can be checked on a CPU.
"""

import argparse
import functools
import json
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


def _best_seconds(fn, n: int, repeats: int) -> float:
  fn()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(n):
      out = fn()
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t0) / n)
  return best


def matmul_peak(dtype, size: int, repeats: int) -> float:
  a = jnp.ones((size, size), dtype)
  f = jax.jit(lambda a: a @ a)
  return 2 * size ** 3 / _best_seconds(lambda: f(a), 10, repeats)


def _flops(compiled) -> float | None:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]) if cost and cost.get("flops") else None


def _device_memory_mb() -> float | None:
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return peak / 2 ** 20 if peak else None


def _bf16_loss(params, batch_stats, model, batch):
  cast = lambda tree: jax.tree.map(lambda x: x.astype(jnp.bfloat16), tree)
  logits, batch_stats = steps.forward(model, cast(params), batch_stats,
                                      batch["image"].astype(jnp.bfloat16), train=True)
  logits = logits.astype(jnp.float32)
  return steps.cross_entropy(logits, batch["label"]), (logits, batch_stats)


def _state_and_batch(name, batch_size, input_shape, trials=None, seed=0):
  model = models.create(name, 10)
  tx = optax.adam(1e-3)
  init = functools.partial(steps.init, model=model, tx=tx, input_shape=input_shape)
  rng = np.random.default_rng(seed)
  lead = (batch_size,) if trials is None else (trials, batch_size)
  batch = {"image": jnp.asarray(rng.normal(size=(*lead, *input_shape)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, lead), jnp.int32)}
  state = (init(jax.random.PRNGKey(seed)) if trials is None
           else jax.vmap(init)(jax.random.split(jax.random.PRNGKey(seed), trials)))
  return model, tx, state, batch


def time_step(fn, state, batch, n, repeats, compiled):
  holder = [state]

  def call():
    holder[0], metrics = fn(holder[0], batch, {})
    return metrics
  sec = _best_seconds(call, n, repeats)
  return sec, (_flops(compiled) if compiled is not None else None)


def resnet18_rows(precision_peaks, batch_size, n, repeats):
  rows = []
  for dtype in ("f32", "bf16"):
    model, tx, state, batch = _state_and_batch("resnet18", batch_size, (32, 32, 3))
    loss = steps.classifier_loss if dtype == "f32" else _bf16_loss
    step = functools.partial(steps.train_step, model=model, tx=tx, loss_fn=loss)
    fn = jax.jit(step, donate_argnums=0)
    compiled = jax.jit(step).lower(state, batch, {}).compile()
    sec, flops = time_step(fn, state, batch, n, repeats, compiled)
    rows.append(_row(f"resnet18_cifar_b{batch_size}_{dtype}", batch_size, sec, flops,
                     precision_peaks[dtype]))
  return rows


def lenet5_stack_rows(peak, trials, n, repeats):
  rows = []
  for strategy in ("vmap", "loop"):
    model, tx, state, batch = _state_and_batch("lenet5", 64, (28, 28, 1), trials=trials)
    step = functools.partial(steps.train_step, model=model, tx=tx)
    fn = steps.lift(step, strategy)
    single = jax.jit(step).lower(jax.tree.map(lambda x: x[0], state),
                                 jax.tree.map(lambda x: x[0], batch), {}).compile()
    sec, flops = time_step(fn, state, batch, n, repeats, None)
    flops = _flops(single) * trials if _flops(single) else None
    rows.append(_row(f"lenet5_{trials}_trials_{strategy}", 64 * trials, sec, flops, peak))
  rows[0]["vmap_over_loop"] = rows[1]["step_ms"] / rows[0]["step_ms"]
  return rows


def _row(name, examples, sec, flops, peak):
  return {"name": name, "examples_per_s": examples / sec, "step_ms": sec * 1e3,
          "flops_per_step": flops,
          "fraction_of_peak": flops / sec / peak if flops else None,
          "peak_device_memory_mb": _device_memory_mb()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--quick", action="store_true", help="tiny sizes, to check on a CPU")
  args = parser.parse_args()
  size, batch, trials, n = (512, 8, 2, 2) if args.quick else (8192, 128, 16, 50)
  repeats = 1 if args.quick else args.repeats
  device = jax.devices()[0]
  peaks = {"f32": matmul_peak(jnp.float32, size, repeats),
           "bf16": matmul_peak(jnp.bfloat16, size, repeats)}
  rows = resnet18_rows(peaks, batch, n, repeats) + lenet5_stack_rows(peaks["f32"], trials, n,
                                                                     repeats)
  meta = {"date": time.strftime("%Y-%m-%d"), "backend": jax.default_backend(),
          "device": getattr(device, "device_kind", str(device)), "jax": jax.__version__,
          "matmul_peak_gflops": {k: v / 1e9 for k, v in peaks.items()}, "quick": args.quick}
  print(f"{meta['date']}  {meta['device']} ({meta['backend']}), JAX {meta['jax']}; matmul "
        f"peak f32 {peaks['f32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
  print(f"{'step':34} {'ex/s':>10} {'ms/step':>9} {'GFLOP/step':>11} {'of peak':>8}")
  for r in rows:
    gflop = f"{r['flops_per_step'] / 1e9:11.3f}" if r["flops_per_step"] else f"{'?':>11}"
    frac = f"{r['fraction_of_peak']:8.1%}" if r["fraction_of_peak"] else f"{'?':>8}"
    print(f"{r['name']:34} {r['examples_per_s']:10.0f} {r['step_ms']:9.2f} {gflop} {frac}")
  print(f"vmap over loop, {trials} LeNet-5 trials: {rows[-2]['vmap_over_loop']:.2f}x")
  out = {"meta": meta, "rows": rows}
  print(json.dumps(out))
  if args.json:
    Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
