"""2x2, stride-2 max-pooling computed so that its gradient is cheap on every backend."""

import jax
import jax.numpy as jnp


def max_pool_2x2(x: jax.Array, padding: str = "VALID") -> jax.Array:
  """nn.max_pool(x, (2, 2), strides=(2, 2), padding=padding) on NHWC, as a reshaped max.

  The values are the same. The gradient is an elementwise select instead of reduce_window's
  select-and-scatter, which XLA:CPU lowers to index arrays and a scatter: about 40% of a
  LeNet-5 step, and 1.15x on the whole step once gone (benchmarks/NOTES.md). Where a window
  holds a tie the gradient is shared among the maxima rather than given to the first; after a
  ReLU the usual tie is all zeros, whose gradient is zero either way.
  """
  if padding not in ("VALID", "SAME"):
    raise ValueError(f"padding={padding!r}; allowed: 'VALID', 'SAME'")
  _, h, w, _ = x.shape
  if padding == "SAME":   # odd sizes gain a row or column that never wins
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
  else:                   # odd sizes lose their last row or column
    x = x[:, :h - h % 2, :w - w % 2]
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
