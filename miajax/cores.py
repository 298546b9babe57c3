"""One XLA:CPU device per core, so that the "devices" strategy (steps.lift) trains the trials of
a stack on all cores at once: XLA:CPU's LeNet-5 step hardly uses a second core by itself
(benchmarks/NOTES.md)."""

import os

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def claim(jax) -> int | None:
  """Before JAX starts its CPU backend: as many CPU devices as this process may use cores
  (its CPU affinity). A count given in XLA_FLAGS or JAX_NUM_CPU_DEVICES is kept (None)."""
  if DEVICE_COUNT_FLAG in os.environ.get("XLA_FLAGS", "") or os.environ.get(
      "JAX_NUM_CPU_DEVICES"):
    return None
  n = len(os.sched_getaffinity(0))
  jax.config.update("jax_num_cpu_devices", n)
  return n
