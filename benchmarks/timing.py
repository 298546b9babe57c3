"""The one timer of jitted steps that the benchmark scripts share."""

import time

import jax


def run_step(fn, state, batch, hp, n, repeats):
  """Mean seconds per step, the best of `repeats` runs of `n` steps, threading the donated
  state through; one call first, so compiling is not timed."""
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
