"""The Likelihood Ratio Attack (LiRA) of Carlini et al. 2022, "Membership Inference Attacks
From First Principles".

Shadow models are trained elsewhere, each on a random half of a data pool (`keep_masks`).
For every pool example the attack fits one Gaussian to the logit-scaled confidence
(`logit_scaled_confidence`) of the shadows that trained on it (IN) and one to those that did
not (OUT), then scores the target model's confidence on the example (`scores`):

- online: log N(c; mu_in, var_in) - log N(c; mu_out, var_out), the Neyman-Pearson statistic;
- offline: log Pr[Z <= c] with Z ~ N(mu_out, var_out), the paper's one-sided test
  Lambda = 1 - Pr[Z > c] on a log scale (OUT shadows only).

Higher scores mean "more likely a member", as for every `score_<attack>` in scores.npz.
Confidences may carry a trailing query axis (augmentations): each query gets its own
Gaussians and the per-query scores are averaged, as in the paper.
"""

import numbers

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from miajax.errors import UserError

# Floor on fitted variances: identical shadow confidences (a saturated example) would give
# a zero variance and an infinite score.
_MIN_VAR = 1e-12


def keep_masks(key: jax.Array, num_models: int, pool_size: int) -> jax.Array:
  """Which pool examples each model of a LiRA stack trains on.

  Every model trains on exactly pool_size // 2 examples:

  - Model 0, the target, draws its own uniformly random subset of that size.
  - The shadows 1..M-1 pair up, (1, 2), (3, 4), ...: per pair a random permutation of the
    pool gives one shadow its first pool_size // 2 examples and the other the next
    pool_size // 2, so with an odd pool_size one random example is left out of both. Every
    example is therefore IN for exactly one shadow of each pair (up to that leftover).
  - With an odd number of shadows the last one is unpaired and draws its own random half.

  So with an even number of shadows every example is IN for exactly half of them (the
  paper's balance of IN and OUT sets; up to the odd-pool leftover), and the shadows' masks
  are independent of the target's, so a target member and a target non-member have the same
  number of IN shadows in distribution.

  Args:
    key: PRNG key; the same key gives the same masks.
    num_models: M >= 1, the target and M - 1 shadows.
    pool_size: N >= 1.

  Returns:
    (M, N) bool array, True where model m trains on example n.
  """
  for field, value in (("lira.num_models", num_models), ("lira.pool_size", pool_size)):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
      raise UserError(f"{field}: got {value!r}; allowed: an integer >= 1")
  half = pool_size // 2
  num_pairs, unpaired = divmod(num_models - 1, 2)
  target_key, pair_key, last_key = jax.random.split(key, 3)

  def position(k):
    # Each example's place in a random order of the pool: the first `half` places are one
    # random half, the next `half` the complementary one (less an odd pool's leftover).
    return jnp.argsort(jax.random.permutation(k, pool_size))

  rows = [position(target_key)[None] < half]
  if num_pairs:
    pos = jax.vmap(position)(jax.random.split(pair_key, num_pairs))
    first, second = pos < half, (pos >= half) & (pos < 2 * half)
    rows.append(jnp.stack([first, second], axis=1).reshape(2 * num_pairs, pool_size))
  if unpaired:
    rows.append(position(last_key)[None] < half)
  return jnp.concatenate(rows, axis=0)


def logit_scaled_confidence(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """phi(p_y) = log p_y - log(1 - p_y), computed stably from logits.

  With p = softmax(z), phi = z_y - logsumexp_{j != y} z_j: the shared log-partition cancels,
  so the result stays finite and exact for logits of any size.

  Args:
    logits: (..., N, C) with C >= 2; leading axes (e.g. models) are kept.
    labels: integer labels broadcastable to logits.shape[:-1], e.g. (N,).

  Returns:
    float array of shape logits.shape[:-1].
  """
  logits = jnp.asarray(logits)
  if logits.ndim < 1 or logits.shape[-1] < 2:
    raise UserError(
        f"logits: got shape {logits.shape}; allowed: (..., N, C) with C >= 2 classes")
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  labels = jnp.broadcast_to(jnp.asarray(labels), logits.shape[:-1])
  is_label = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.bool_)
  label_logit = jnp.sum(jnp.where(is_label, logits, 0.0), axis=-1)
  others = jax.nn.logsumexp(jnp.where(is_label, -jnp.inf, logits), axis=-1)
  return label_logit - others


def _fit(conf: np.ndarray, sel: np.ndarray):
  """Per-example mean, variance and count of the selected shadow observations.

  Args:
    conf: (M, N, Q) confidences.
    sel: (M, N, 1) bool selection.

  Returns:
    mean (N, Q) (NaN where empty), var (N, Q) unbiased (NaN under 2 observations), pooled
    variance (Q,) of deviations from each example's own mean, count (N, 1).
  """
  count = sel.sum(axis=0)
  total = np.where(sel, conf, 0.0).sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = total / count
    sq_dev = np.where(sel, (conf - mean) ** 2, 0.0).sum(axis=0)
    var = sq_dev / (count - 1)
    # Pooled within-example variance: the spread around each example's own mean, so that
    # differences between examples' means do not inflate it.
    dof = np.sum(np.maximum(count - 1, 0))
    pooled = sq_dev.sum(axis=0) / dof
  var = np.where(count >= 2, var, np.nan)
  return mean, var, pooled, count


def scores(target_conf, shadow_conf, shadow_in, *, online: bool,
           fixed_variance: bool) -> np.ndarray:
  """LiRA membership scores of a target model; higher = more likely a member.

  Args:
    target_conf: (N,) or (N, Q) logit-scaled confidences of the target model.
    shadow_conf: (M, N) or (M, N, Q) the same for M shadow models.
    shadow_in: (M, N) bool, True where shadow m trained on example n.
    online: True for the two-Gaussian likelihood ratio; False for the offline one-sided
      test, which uses only OUT shadows.
    fixed_variance: use one variance per side (IN, OUT), pooled over all examples, instead
      of one per example; better with few shadows.

  Returns:
    (N,) float64 scores, the mean over queries.

  Missing statistics fall back as follows. A per-example variance needs two observations;
  with fewer the pooled variance is used. An example with no IN (OUT) shadow takes
  mu_in = mu_out + g (mu_out = mu_in - g), where g is the mean IN-OUT gap of the examples
  that have both; with no such example, g is the gap of the global IN and OUT means. An
  example with no shadows at all takes the global means. Online scoring needs at least one
  IN and one OUT observation overall; offline needs one observation overall.
  """
  target = np.asarray(target_conf, np.float64)
  conf = np.asarray(shadow_conf, np.float64)
  sel = np.asarray(shadow_in)
  if target.ndim == 1:
    target, conf = target[:, None], conf[..., None]
  if target.ndim != 2 or conf.shape[1:] != target.shape or conf.ndim != 3:
    raise UserError(f"shadow_conf: got shape {np.shape(shadow_conf)} for target_conf "
                    f"{np.shape(target_conf)}; allowed: (M, N) for (N,), (M, N, Q) for (N, Q)")
  if sel.dtype != np.bool_ or sel.shape != conf.shape[:2]:
    raise UserError(f"shadow_in: got {sel.dtype} {sel.shape}; allowed: bool {conf.shape[:2]}")
  sel = sel[..., None]
  mu_in, var_in, pooled_in, n_in = _fit(conf, sel)
  mu_out, var_out, pooled_out, n_out = _fit(conf, ~sel)
  total_in, total_out = n_in.sum(), n_out.sum()
  if online and (total_in == 0 or total_out == 0):
    raise UserError(f"shadow_in: got {total_in} IN and {total_out} OUT observations; "
                    "allowed: at least one of each for online LiRA (or use online=False)")
  if total_in + total_out == 0:
    raise UserError("shadow_conf: got no shadow models; allowed: M >= 1")

  # Fallbacks for examples without IN or OUT shadows (see docstring).
  has_in, has_out = n_in > 0, n_out > 0
  both = (has_in & has_out)[:, 0]
  global_in = np.nansum(mu_in * n_in, axis=0) / max(total_in, 1)
  global_out = np.nansum(mu_out * n_out, axis=0) / max(total_out, 1)
  if both.any():
    gap = np.mean(mu_in[both] - mu_out[both], axis=0)
  elif total_in and total_out:
    gap = global_in - global_out
  else:
    gap = np.zeros_like(global_in)
  mu_in_filled = np.where(has_in, mu_in, np.where(has_out, mu_out + gap, global_in))
  mu_out_filled = np.where(has_out, mu_out, np.where(has_in, mu_in - gap, global_out))
  mu_in, mu_out = mu_in_filled, mu_out_filled
  # With no IN (OUT) pairs at all, borrow the other side's pooled variance.
  if not np.all(np.isfinite(pooled_in)):
    pooled_in = np.where(np.isfinite(pooled_in), pooled_in, pooled_out)
  if not np.all(np.isfinite(pooled_out)):
    pooled_out = np.where(np.isfinite(pooled_out), pooled_out, pooled_in)
  # Every example seen only once: no spread is observable; unit variance keeps a ranking.
  pooled_in = np.where(np.isfinite(pooled_in), pooled_in, 1.0)
  pooled_out = np.where(np.isfinite(pooled_out), pooled_out, 1.0)
  if fixed_variance:
    var_in = np.broadcast_to(pooled_in, mu_in.shape)
    var_out = np.broadcast_to(pooled_out, mu_out.shape)
  else:
    var_in = np.where(np.isnan(var_in), pooled_in, var_in)
    var_out = np.where(np.isnan(var_out), pooled_out, var_out)
  var_in = np.maximum(var_in, _MIN_VAR)
  var_out = np.maximum(var_out, _MIN_VAR)

  if online:
    per_query = (_log_normal_pdf(target, mu_in, var_in)
                 - _log_normal_pdf(target, mu_out, var_out))
  else:
    per_query = scipy.special.log_ndtr((target - mu_out) / np.sqrt(var_out))
  return per_query.mean(axis=1)


def _log_normal_pdf(x, mean, var):
  return -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)
