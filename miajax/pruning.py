"""Per-layer magnitude pruning: which weights are prunable, how many to keep, and the projection.

The ADMM pruning of App. B needs, per prunable layer i, a keep count n_i and the Euclidean
projection onto {Z : nnz(Z) <= n_i}: keep the n_i entries of largest magnitude, zero the rest.

Conventions:
- Params are a Flax linen param collection (nested dicts, created in forward order). A leaf is
  prunable when it is named "kernel" and has ndim > 1 (conv and dense weights); biases and
  BatchNorm/GroupNorm scales and biases are never pruned. A layer's name is the "/"-joined
  path of its kernel, e.g. "conv1/kernel" or "stage1/block0/conv2/kernel".
- Forward order is the insertion order of the dicts, as `flax.traverse_util.flatten_dict` walks
  them. Every JAX transform (`jax.tree.map`, `jit` outputs) rebuilds dicts in sorted key order,
  so the host-side functions here (`layers`, `keep_fractions`, `keep_counts`) must be given the
  params as `Module.init` returned them (or `jax.eval_shape` of it; only shapes are read), one
  trial's worth, without a leading trial axis.
- Keep counts travel as a "count tree": a pytree shaped like params with an int32 scalar per
  prunable leaf and None elsewhere. The counts are traced values, so trials with different
  sparsities stacked along a leading axis share one compiled program under `jax.vmap`.
- `project` keeps exactly k entries (ties broken towards the lower flat index) without sorting:
  `lax.top_k` needs a static k, and on CPU a sort of a 2.4M-entry kernel takes ~0.1 s (argsort
  ~1 s) where the bitwise search in `topk_mask` (31 counting passes for f32) takes ~10-20 ms.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax import lax

from miajax.errors import UserError

_FIELD = "pruning.keep"

# App. E: "on LeNet-5 model, the pruning rate for each layer is 40%, 90%, 93.75%, 93.75%,
# 93.75%", as keep fractions. Used verbatim for LeNet-5-shaped params.
LENET5_PAPER_KEEP = (0.6, 0.1, 0.0625, 0.0625, 0.0625)
_LENET5_CONV1_SHAPE = (5, 5, 1, 6)

# Table 4's weight reduction ratios (prunable weights / kept weights) by `model.name`: one per
# model for CIFAR-10 and CIFAR-100 alike, and the ImageNet rows. LeNet-5's 15.78x is listed
# for completeness: App. E's explicit rates above take precedence (they give 15.32x).
PAPER_REDUCTION = {"lenet5": 15.78, "vgg16": 13.84, "resnet18": 10.54, "mobilenetv2": 10.06,
                   "resnet18_imagenet": 3.37, "mobilenetv2_imagenet": 3.27}

# App. E's general rule: the first layer prunes 30-40% (we take the middle), the others from
# 50% rising with depth to 95%.
PAPER_FIRST_PRUNE = 0.35
PAPER_PRUNE_RANGE = (0.5, 0.95)

# Tie breaking in `topk_mask` scans the tied entries in rows of this many; only one row is
# ever cumsum'd, the rest are reduced by row sums.
_TIE_ROW = 1024


def _key_name(entry: Any) -> str:
  """A path entry as a string: flatten_dict gives str, jax key paths give DictKey/GetAttrKey."""
  for attr in ("key", "name"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def is_prunable(path: tuple[Any, ...], leaf: Any) -> bool:
  """Whether the leaf at `path` is a prunable weight: named "kernel" with ndim > 1.

  Args:
    path: the leaf's path (strings as from `flatten_dict`, or a jax key path).
    leaf: an array or anything with a `.shape` (e.g. `jax.ShapeDtypeStruct`).

  Returns:
    True for conv and dense kernels; False for biases, norm scales/biases and anything else.
  """
  shape = getattr(leaf, "shape", None)
  return bool(path) and _key_name(path[-1]) == "kernel" and shape is not None and len(shape) > 1


def _prunable_leaves(params) -> dict[str, Any]:
  """{layer name: kernel leaf} in forward (insertion) order."""
  flat = traverse_util.flatten_dict(params)
  return {"/".join(_key_name(p) for p in path): leaf
          for path, leaf in flat.items() if is_prunable(path, leaf)}


def layers(params) -> list[str]:
  """Prunable layer names ("/"-joined kernel paths) in forward order."""
  return list(_prunable_leaves(params))


def _count(size: int, fraction: float) -> int:
  """n = max(1, round(fraction * size)), at most size (Python's round: half to even)."""
  return min(size, max(1, round(fraction * size)))


def _kept(sizes: Sequence[int], fractions: Sequence[float]) -> int:
  return sum(_count(s, f) for s, f in zip(sizes, fractions))


def paper_keep_fractions(shapes: Sequence[tuple[int, ...]],
                         ratio: float | None = None) -> list[float]:
  """App. E's pruning rule as keep fractions, from the prunable kernels' shapes in forward order.

  LeNet-5-shaped models (exactly 5 prunable layers, the first a 5x5x1x6 conv) get the paper's
  stated rates verbatim: 40%, 90%, 93.75%, 93.75%, 93.75% pruned. Otherwise, with L layers,
  depth d = 0..L-1 and t = (d - 1) / max(L - 2, 1) the place among the later layers:
    d = 0:  prune 35% (keep 0.65), the middle of the paper's 30-40% for the first layer;
    d >= 1: prune 50% + 45% * t ** g, rising with depth from 50% at the second layer to 95% at
            the last.
  Without `ratio`, g = 1 (a straight line). With it (Table 4's, `PAPER_REDUCTION`), g is found
  by bisection so that prunable weights / kept weights, counted as `keep_counts` rounds, comes
  closest to `ratio`: g < 1 prunes the middle layers harder, g > 1 lighter. Every g stays within
  App. E's ranges, so a ratio beyond them gets the nearest end.

  Args:
    shapes: kernel shapes in forward order.
    ratio: the reduction ratio to reach, or None.

  Returns:
    One keep fraction per layer.
  """
  return list(_paper_profile(tuple(tuple(s) for s in shapes), ratio))


@functools.lru_cache(maxsize=64)
def _paper_profile(shapes: tuple[tuple[int, ...], ...], ratio: float | None) -> tuple:
  num = len(shapes)
  if num == len(LENET5_PAPER_KEEP) and shapes[0] == _LENET5_CONV1_SHAPE:
    return LENET5_PAPER_KEEP
  lo, hi = PAPER_PRUNE_RANGE

  def profile(g):
    keep = [1.0 - PAPER_FIRST_PRUNE]
    for depth in range(1, num):
      prune = lo + (hi - lo) * ((depth - 1) / max(num - 2, 1)) ** g
      keep.append(round(1.0 - prune, 12))  # 12 digits: drop float noise (0.05, not 0.0500..04)
    return keep

  if ratio is None or num < 3:
    return tuple(profile(1.0))
  sizes = [math.prod(s) for s in shapes]
  target = sum(sizes) / ratio
  # Kept weights rise with g (every t ** g falls); bisect log g.
  a, b = -10.0, 10.0
  for _ in range(60):
    mid = (a + b) / 2
    a, b = (mid, b) if _kept(sizes, profile(math.exp(mid))) < target else (a, mid)
  return tuple(min((profile(math.exp(x)) for x in (a, b)),
                   key=lambda f: abs(_kept(sizes, f) - target)))


def overall_keep_fractions(shapes: Sequence[tuple[int, ...]], keep: float,
                           profile: Sequence[float]) -> list[float]:
  """Per-layer keep fractions that keep `keep` of all prunable weights, shaped like `profile`.

  The first layer keeps max(profile[0], keep): never pruned harder than the profile prunes it
  (App. E's 30-40%). The later layers keep min(1, c * profile[d]) with one scale c, found by
  bisection so the kept count (as `keep_counts` rounds) comes closest to keep * total; they
  stay pruned harder with depth wherever the profile is.

  Raises:
    UserError: `keep` below what the first layer's floor and one weight per later layer allow.
  """
  sizes = [math.prod(s) for s in shapes]
  if keep >= 1.0 or not sizes:
    return [1.0] * len(sizes)
  first = max(profile[0], keep)
  total = sum(sizes)
  target = round(keep * total)

  def scaled(c):
    return [first] + [min(1.0, c * q) for q in profile[1:]]

  floor = _kept(sizes, scaled(0.0))
  if target < floor:
    raise UserError(f"{_FIELD}={keep!r} is below {floor / total:.2g}, the least this model "
                    f"keeps with its first layer keeping {first}; allowed: a larger fraction, "
                    f"or 'uniform:{keep}' for one fraction in every layer")
  a, b = 0.0, 1.0 / min(profile[1:], default=1.0)
  for _ in range(60):
    mid = (a + b) / 2
    a, b = (mid, b) if _kept(sizes, scaled(mid)) < target else (a, mid)
  return min((scaled(c) for c in (a, b)), key=lambda f: abs(_kept(sizes, f) - target))


def _check_keep(value: Any, where: str) -> float:
  """A keep fraction as float, or UserError naming `where`."""
  if isinstance(value, np.generic):
    value = value.item()  # so messages show 1.5, not np.float64(1.5)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise UserError(f"{where}={value!r} is not a number; allowed: keep fractions in (0, 1]")
  v = float(value)
  if not (math.isfinite(v) and 0.0 < v <= 1.0):
    raise UserError(f"{where}={value!r} is outside (0, 1]; allowed: keep fractions in (0, 1]")
  return v


def _match_layer(key: str, names: list[str]) -> str:
  """The one layer `key` names: exactly, or as a run of whole path components ("fc1")."""
  if key in names:
    return key
  parts = key.strip("/").split("/")
  hits = []
  for name in names:
    comps = name.split("/")
    if any(comps[i:i + len(parts)] == parts for i in range(len(comps) - len(parts) + 1)):
      hits.append(name)
  if not hits:
    raise UserError(f"{_FIELD} key {key!r} matches no prunable layer; allowed: a layer name or "
                    f"a unique part of one: {', '.join(names) or '(none)'}")
  if len(hits) > 1:
    raise UserError(f"{_FIELD} key {key!r} is ambiguous: it matches {', '.join(hits)}; "
                    "allowed: a key that names exactly one layer")
  return hits[0]


def keep_fractions(params, spec, model: str | None = None) -> dict[str, float]:
  """Per-layer keep fractions, in forward order, from a `pruning.keep` spec.

  Args:
    params: one trial's param collection (arrays or shape structs), as created.
    spec: one of
      - "paper": App. E's rule (`paper_keep_fractions`), calibrated to Table 4's reduction
        ratio for `model` (`PAPER_REDUCTION`); LeNet-5 gets App. E's explicit rates;
      - a number k in (0, 1]: the overall fraction of prunable weights kept, reached by scaling
        the "paper" profile (`overall_keep_fractions`): the first layer keeps max(k, 0.6) on
        LeNet-5 or max(k, 0.65) elsewhere, the later layers are pruned harder with depth;
      - "uniform:k": the same keep fraction k in every prunable layer;
      - a sequence of numbers: one per prunable layer, in forward order;
      - a mapping {layer: keep}: a layer is named by its full name or by a unique run of whole
        path components ("fc1", "block0/conv2", "conv2/kernel"); layers not named keep 1.0.
    model: `model.name`, which picks Table 4's ratio; None (or a model Table 4 lacks) takes
      App. E's rule with a straight rise from 50% to 95% pruned.

  Returns:
    {layer name: keep fraction}.

  Raises:
    UserError: a fraction outside (0, 1], a number below what the model can keep overall, a
      sequence of the wrong length, a key that matches no layer or several, two keys for one
      layer, or a spec of another kind.
  """
  leaves = _prunable_leaves(params)
  names = list(leaves)
  shapes = [tuple(leaf.shape) for leaf in leaves.values()]
  if isinstance(spec, str) and spec.strip().startswith("uniform:"):
    return dict.fromkeys(names, _uniform_keep(spec))
  if isinstance(spec, str):
    if spec != "paper":
      raise UserError(f"{_FIELD}={spec!r} is not allowed; allowed: 'paper', a fraction in "
                      "(0, 1], 'uniform:F', one fraction per layer, or {layer: fraction}")
    return dict(zip(names, paper_keep_fractions(shapes, PAPER_REDUCTION.get(model))))
  if hasattr(spec, "to_dict") and not isinstance(spec, Mapping):
    spec = spec.to_dict()  # ml_collections.ConfigDict
  if isinstance(spec, Mapping):
    out = dict.fromkeys(names, 1.0)
    claimed = {}
    for key, value in spec.items():
      if not isinstance(key, str):
        raise UserError(f"{_FIELD} key {key!r} is not a string; allowed: layer names")
      name = _match_layer(key, names)
      if name in claimed:
        raise UserError(f"{_FIELD} keys {claimed[name]!r} and {key!r} both name {name}; "
                        "allowed: one key per layer")
      claimed[name] = key
      out[name] = _check_keep(value, f"{_FIELD}[{key!r}]")
    return out
  if isinstance(spec, np.ndarray) and spec.ndim == 0:
    spec = spec.item()
  if isinstance(spec, (Sequence, np.ndarray)):
    values = list(spec)
    if len(values) != len(names):
      raise UserError(f"{_FIELD}={spec!r} has {len(values)} values but the model has "
                      f"{len(names)} prunable layers ({', '.join(names)}); allowed: one "
                      "fraction per layer")
    return {n: _check_keep(v, f"{_FIELD}[{i}]") for i, (n, v) in enumerate(zip(names, values))}
  v = _check_keep(spec, _FIELD)
  profile = paper_keep_fractions(shapes, PAPER_REDUCTION.get(model))
  return dict(zip(names, overall_keep_fractions(shapes, v, profile)))


def _uniform_keep(spec: str) -> float:
  """F from "uniform:F", or UserError."""
  text = spec.strip().removeprefix("uniform:")
  try:
    v = float(text)
  except ValueError:
    raise UserError(f"{_FIELD}={spec!r} is not a number after 'uniform:'; allowed: "
                    "'uniform:F' with F in (0, 1]") from None
  if not (math.isfinite(v) and 0.0 < v <= 1.0):
    raise UserError(f"{_FIELD}={spec!r} is outside (0, 1]; allowed: 'uniform:F' with F in "
                    "(0, 1]")
  return v


def keep_counts(params, fractions: Mapping[str, float]) -> dict[str, int]:
  """Per-layer keep counts n_i = max(1, round(keep_i * size_i)), in forward order.

  `round` is Python's (half to even), so 0.0625 * 840 = 52.5 keeps 52.

  Args:
    params: one trial's param collection (arrays or shape structs).
    fractions: {layer name: keep fraction} as from `keep_fractions`; every prunable layer.

  Returns:
    {layer name: n_i}, 1 <= n_i <= size_i.
  """
  leaves = _prunable_leaves(params)
  missing = [n for n in leaves if n not in fractions]
  extra = [n for n in fractions if n not in leaves]
  if missing or extra:
    raise ValueError(f"fractions do not match the prunable layers: missing {missing}, "
                     f"unknown {extra}")
  return {name: _count(math.prod(leaf.shape), fractions[name]) for name, leaf in leaves.items()}


def count_tree(params, counts: Mapping[str, int]):
  """A pytree shaped like params: int32 scalar n_i per prunable leaf, None elsewhere.

  Stack several along a leading axis (`jax.tree.map(lambda *c: jnp.stack(c), *trees)`) and
  pass it as a traced argument so trials with different sparsities share one program.
  """
  flat = traverse_util.flatten_dict(params, keep_empty_nodes=True)
  names = set()
  out = {}
  for path, leaf in flat.items():
    if is_prunable(path, leaf):
      name = "/".join(_key_name(p) for p in path)
      if name not in counts:
        raise ValueError(f"no keep count for prunable layer {name}")
      n = int(counts[name])
      if not 1 <= n <= math.prod(leaf.shape):
        raise ValueError(f"keep count {n} for {name} is outside [1, {math.prod(leaf.shape)}]")
      names.add(name)
      out[path] = jnp.asarray(n, jnp.int32)
    elif leaf is traverse_util.empty_node:
      out[path] = leaf
    else:
      out[path] = None
  extra = [n for n in counts if n not in names]
  if extra:
    raise ValueError(f"keep counts for unknown layers: {extra}")
  return traverse_util.unflatten_dict(out)


def _magnitude_key(w: jax.Array) -> tuple[jax.Array, int]:
  """Flat integer keys ordered like |w| (NaN lowest), and how many value bits they use.

  int32 keys for 8-32 bit floats, int64 for f64.

  For non-negative IEEE floats the bit pattern read as an integer is monotone in the value, so
  clearing the sign bit gives an exact integer proxy for |w| in any float width.
  """
  if not jnp.issubdtype(w.dtype, jnp.floating):
    raise TypeError(f"project needs a floating-point array, got {w.dtype}")
  nbits = jnp.dtype(w.dtype).itemsize * 8
  itype = jnp.dtype(f"int{nbits}")
  bits = lax.bitcast_convert_type(w.ravel(), itype)
  bits = bits & jnp.asarray(np.iinfo(itype).max, itype)
  # NaN ranks below every number (as in np.argsort of -|w|); wider keys only for f64.
  key = jnp.where(jnp.isnan(w.ravel()), -1, bits.astype(jnp.promote_types(itype, jnp.int32)))
  return key, nbits - 1


def topk_mask(w: jax.Array, k) -> jax.Array:
  """Boolean mask of the k entries of largest |w|; among equal |w| the lower flat index wins.

  The same as `np.argsort(-abs(w), axis=None, kind="stable")[:k]`, NaNs ranking last.
  Jittable with a traced k (an int32 scalar) and vmappable with a different k per trial. k <= 0
  keeps nothing and k >= w.size keeps everything.

  Method: find the k-th largest magnitude key T bit by bit (MSB first: keep a bit when at
  least k keys are >= the candidate), keep every key > T, then keep the first
  k - #(key > T) entries equal to T in index order.

  Args:
    w: a floating-point array (f32, bf16, f16, or f64 under x64).
    k: how many entries to keep.

  Returns:
    A bool array of w's shape.
  """
  key, nbits = _magnitude_key(w)
  n = key.size
  if n == 0:
    return jnp.zeros(w.shape, jnp.bool_)
  k = jnp.asarray(k, jnp.int32)

  def bit_step(i, t):
    cand = t | jnp.left_shift(jnp.asarray(1, t.dtype), (nbits - 1 - i).astype(t.dtype))
    enough = jnp.sum(key >= cand, dtype=jnp.int32) >= k
    return jnp.where(enough, cand, t)

  t = lax.fori_loop(0, nbits, bit_step, jnp.zeros((), key.dtype))
  # Fewer than k non-NaN entries: the threshold is the NaN level.
  t = jnp.where(jnp.sum(key >= 0, dtype=jnp.int32) >= k, t, jnp.asarray(-1, key.dtype))
  above = key > t
  tied = key == t
  need = k - jnp.sum(above, dtype=jnp.int32)  # >= 1 whenever k >= 1
  n_tied = jnp.sum(tied, dtype=jnp.int32)

  # The flat index of the need-th tied entry: row sums locate its row, one row's cumsum
  # locates it within the row (a full-length cumsum is several times slower on CPU).
  rows = -(-n // _TIE_ROW)
  tied_rows = jnp.pad(tied, (0, rows * _TIE_ROW - n)).reshape(rows, _TIE_ROW)
  row_cum = jnp.cumsum(jnp.sum(tied_rows, axis=1, dtype=jnp.int32))
  r = jnp.minimum(jnp.sum(row_cum < need, dtype=jnp.int32), rows - 1)
  before = jnp.where(r > 0, row_cum[jnp.maximum(r - 1, 0)], 0)
  in_row = jnp.cumsum(lax.dynamic_index_in_dim(tied_rows, r, keepdims=False), dtype=jnp.int32)
  col = jnp.sum(in_row < need - before, dtype=jnp.int32)
  last = jnp.where(need >= n_tied, n, r * _TIE_ROW + col)

  keep = above | (tied & (jnp.arange(n, dtype=jnp.int32) <= last))
  return (keep & (k > 0)).reshape(w.shape)


def project(w: jax.Array, k) -> jax.Array:
  """Keeps the k entries of largest |w| (ties to the lower flat index) and zeroes the rest.

  The Z-step of ADMM (App. B, Eq. 29) and the final hard prune. Dtype and shape of w are
  preserved; see `topk_mask` for the rule and for traced/vmapped k.
  """
  return jnp.where(topk_mask(w, k), w, jnp.zeros((), w.dtype))


def _is_none(x) -> bool:
  return x is None


def project_tree(tree, counts):
  """`project` on every leaf whose count is not None; other leaves pass through unchanged.

  Args:
    tree: a pytree shaped like params (W + U, or params).
    counts: a count tree from `count_tree` (or one trial's slice of a stacked one).
  """
  return jax.tree.map(lambda n, w: w if n is None else project(w, n), counts, tree,
                      is_leaf=_is_none)


def mask_tree(params, counts):
  """Boolean masks shaped like params: top-n_i of |W_i| for prunable leaves, all True elsewhere.

  All-True masks (rather than None) for biases and norm parameters keep the mask a plain pytree
  of arrays with params' structure, so it stacks along a trial axis and checkpoints like params.
  """
  return jax.tree.map(
      lambda n, w: jnp.ones(w.shape, jnp.bool_) if n is None else topk_mask(w, n),
      counts, params, is_leaf=_is_none)


def apply_mask(tree, mask):
  """Zeroes the masked-out entries of a params-shaped tree (params, grads or updates).

  `where` rather than multiply: the result keeps each leaf's dtype and pruned entries become
  exactly 0 even if they held inf or NaN.
  """
  return jax.tree.map(lambda m, x: jnp.where(m, x, jnp.zeros((), x.dtype)), mask, tree)


def compression(params) -> dict[str, Any]:
  """Counts of prunable weights and their nonzeros, with NumPy on host arrays.

  Totals count prunable kernels only (conv and dense weights); biases and normalisation
  parameters are excluded, as the paper's Table 4 counts weights.

  Args:
    params: one trial's param collection (jax or numpy arrays, e.g. a restored checkpoint).

  Returns:
    {"weights_total": int, "weights_nonzero": int, "compression_ratio": total / nonzero
    (None when there are no nonzero weights), "layer_sparsity": {layer: {"total": int,
    "nonzero": int}}} with layers in forward order.
  """
  per_layer = {}
  for name, leaf in _prunable_leaves(params).items():
    a = np.asarray(leaf)
    per_layer[name] = {"total": int(a.size), "nonzero": int(np.count_nonzero(a))}
  total = sum(v["total"] for v in per_layer.values())
  nonzero = sum(v["nonzero"] for v in per_layer.values())
  return {
      "weights_total": total,
      "weights_nonzero": nonzero,
      "compression_ratio": total / nonzero if nonzero else None,
      "layer_sparsity": per_layer,
  }


def parse_keep(spec):
  """`pruning.keep` as given on the command line -> what `pruning.keep_fractions` takes.

  "paper" | 0.1 (the overall kept fraction) | "uniform:0.1" (0.1 in every layer) |
  "0.6,0.1,0.0625" (one per layer, in forward order) | "fc1=0.1,conv1=0.6".
  """
  if isinstance(spec, (int, float)):
    value = float(spec)
  elif isinstance(spec, str) and spec == "paper":
    return spec
  elif isinstance(spec, str) and spec.strip().startswith("uniform:"):
    try:
      value = float(spec.strip().removeprefix("uniform:"))
    except ValueError:
      raise UserError(f"pruning.keep={spec!r} is not allowed; allowed: 'uniform:F' with F a "
                      "fraction in (0, 1]") from None
    return f"uniform:{_keep_value(value)}"
  elif isinstance(spec, str) and "=" in spec:
    try:
      pairs = dict(p.split("=") for p in spec.split(","))
      return {k.strip(): _keep_value(float(v)) for k, v in pairs.items()}
    except ValueError:
      raise UserError(f"pruning.keep={spec!r} is not a valid per-layer map; "
                      "allowed: e.g. 'conv1=0.6,fc1=0.1'") from None
  elif isinstance(spec, str):
    try:
      values = [float(v) for v in spec.split(",")]
    except ValueError:
      raise UserError(f"pruning.keep={spec!r} is not allowed; allowed: 'paper', a fraction "
                      "in (0, 1], a comma list of fractions, or 'layer=fraction,...'") from None
    return _keep_value(values[0]) if len(values) == 1 else [_keep_value(v) for v in values]
  elif isinstance(spec, (list, tuple)):
    return [_keep_value(float(v)) for v in spec]
  else:
    raise UserError(f"pruning.keep={spec!r} is not allowed; allowed: 'paper', a fraction in "
                    "(0, 1], a comma list of fractions, or 'layer=fraction,...'")
  return _keep_value(value)


def _keep_value(v: float) -> float:
  if not (math.isfinite(v) and 0 < v <= 1):
    raise UserError(f"pruning.keep={v!r} is outside (0, 1]; allowed: keep fractions in (0, 1]")
  return v
