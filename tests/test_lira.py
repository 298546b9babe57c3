"""Tests for miajax.lira: shadow masks, logit-scaled confidence and LiRA scores; a LiRA run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.special
from scipy.stats import norm

from miajax import config as config_lib
from miajax import lira
from miajax import metrics
from miajax import splits as splits_lib
from miajax import train
from miajax.errors import UserError


def _tpr_at_fpr(scores, is_member, fpr):
  """TPR at the threshold that flags a fraction `fpr` of the non-members."""
  threshold = np.quantile(scores[~is_member], 1 - fpr)
  return np.mean(scores[is_member] > threshold)


# --- keep_masks ---------------------------------------------------------------------------


@pytest.mark.parametrize("num_models", [1, 2, 3, 16, 17, 18])
@pytest.mark.parametrize("pool_size", [1, 999, 1000])
def test_keep_masks_every_model_trains_on_exactly_half_the_pool(num_models, pool_size):
  masks = np.asarray(lira.keep_masks(jax.random.key(0), num_models, pool_size))
  assert masks.shape == (num_models, pool_size) and masks.dtype == np.bool_
  np.testing.assert_array_equal(masks.sum(axis=1), pool_size // 2)


@pytest.mark.parametrize("num_models", [3, 5, 17])
def test_keep_masks_even_shadow_count_every_example_in_for_half_the_shadows(num_models):
  masks = np.asarray(lira.keep_masks(jax.random.key(0), num_models, 1000))
  shadows = masks[1:]
  np.testing.assert_array_equal(shadows.sum(axis=0), (num_models - 1) // 2)
  # Pairs (1, 2), (3, 4), ... split the pool into complementary halves.
  np.testing.assert_array_equal(shadows[0::2] ^ shadows[1::2], True)


def test_keep_masks_odd_pool_leaves_one_example_out_of_each_pair():
  masks = np.asarray(lira.keep_masks(jax.random.key(0), 17, 1001))
  pairs = masks[1::2] | masks[2::2]
  np.testing.assert_array_equal(pairs.sum(axis=1), 1000)
  # Each example is IN for 8 shadows, or 7 where it was a pair's leftover (8 pairs at most).
  counts = masks[1:].sum(axis=0)
  assert set(np.unique(counts)) <= {7, 8} and (counts == 7).sum() <= 8


def test_keep_masks_odd_shadow_count_last_shadow_draws_its_own_half():
  masks = np.asarray(lira.keep_masks(jax.random.key(0), 6, 1000))   # 5 shadows
  np.testing.assert_array_equal(masks[1:5].sum(axis=0), 2)
  last = masks[5]
  assert last.sum() == 500
  # Independent of the pairs' halves: it overlaps shadow 1 on about a quarter of the pool
  # (hypergeometric, sd 11).
  assert abs((last & masks[1]).sum() - 250) < 60


def test_keep_masks_target_independent_of_shadows():
  """The shadows' IN counts do not depend on whether the target trains on an example, and each
  shadow shares a quarter of the pool with the target (hypergeometric: mean N/4, sd 25 for
  N = 10,000), as independent uniform halves do."""
  pool = 10000
  masks = np.asarray(lira.keep_masks(jax.random.key(3), 17, pool))
  target, shadows = masks[0], masks[1:]
  counts = shadows.sum(axis=0)
  assert counts[target].mean() == counts[~target].mean()
  overlap = (shadows & target).sum(axis=1)
  assert np.all(np.abs(overlap - pool / 4) < 4.5 * 25), overlap


def test_keep_masks_seeded():
  a = np.asarray(lira.keep_masks(jax.random.key(1), 8, 500))
  b = np.asarray(lira.keep_masks(jax.random.key(1), 8, 500))
  c = np.asarray(lira.keep_masks(jax.random.key(2), 8, 500))
  np.testing.assert_array_equal(a, b)
  assert (a != c).mean() > 0.3


@pytest.mark.parametrize("num_models,pool_size", [(0, 10), (4, 0), (2.5, 10), (True, 3)])
def test_keep_masks_rejects_bad_sizes(num_models, pool_size):
  with pytest.raises(UserError, match="lira"):
    lira.keep_masks(jax.random.key(0), num_models, pool_size)


# --- logit_scaled_confidence -------------------------------------------------------------


def test_logit_scaled_confidence_matches_naive_formula():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (3, 50, 10)).astype(np.float32)  # (models, N, C)
  labels = rng.integers(0, 10, 50)
  got = np.asarray(jax.jit(lira.logit_scaled_confidence)(logits, labels))
  z = logits.astype(np.float64)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  p_y = np.take_along_axis(p, np.broadcast_to(labels, (3, 50))[..., None], -1)[..., 0]
  want = np.log(p_y) - np.log(1 - p_y)
  assert got.shape == (3, 50)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_logit_scaled_confidence_extreme_logits_finite():
  logits = jnp.array([[1e3, 0.0, -1e3]] * 3)
  got = np.asarray(lira.logit_scaled_confidence(logits, jnp.array([0, 1, 2])))
  assert np.all(np.isfinite(got))
  # phi = z_y - logsumexp of the other logits.
  np.testing.assert_allclose(got, [1e3, -1e3, -2e3], rtol=1e-6)


# --- scores: synthetic case with a known optimum ----------------------------------------

_M, _N = 256, 40000
_K = _M // 2  # IN (and OUT) shadows per example, exactly, by keep_masks


@pytest.fixture(scope="module")
def gaussian_world():
  """Per-example confidences: OUT ~ N(mu_n, 1), IN ~ N(mu_n + 1, 1), mu_n ~ N(0, 2^2).

  Per example the likelihood ratio is monotone in c - mu_n, so the Neyman-Pearson test has
  TPR(alpha) = 1 - Phi(Phi^-1(1 - alpha) - 1). The spread of mu_n makes a global threshold
  on the raw confidence far worse: only per-example calibration reaches that optimum.

  The target's noise is stratified (exact normal quantiles in random order, for members and
  non-members alike), so the empirical TPR at FPR carries no binomial or threshold-quantile
  error (4 sd of those would be 0.02 at 1% FPR with 20k non-members); what randomness is
  left comes from the shadows, the part under test.
  """
  rng = np.random.default_rng(0)
  shadow_in = np.asarray(lira.keep_masks(jax.random.key(0), _M + 1, _N))[1:]  # no target
  mu = rng.normal(0.0, 2.0, _N)
  shadow_conf = mu + shadow_in + rng.standard_normal((_M, _N))
  is_member = np.arange(_N) < _N // 2
  quantiles = norm.ppf((np.arange(_N // 2) + 0.5) / (_N // 2))
  noise = np.concatenate([rng.permutation(quantiles), rng.permutation(quantiles)])
  target_conf = mu + is_member + noise
  all_scores = {(online, fixed): lira.scores(target_conf, shadow_conf, shadow_in,
                                             online=online, fixed_variance=fixed)
                for online in (True, False) for fixed in (True, False)}
  return target_conf, is_member, all_scores


def _np_optimum(alpha):
  return norm.sf(norm.ppf(1 - alpha) - 1)


def _finite_shadow_tpr(alpha, slope_sd, out_mean, in_mean, var):
  """TPR at FPR alpha of the score r * y, with r ~ N(1, slope_sd^2) independent of y.

  y ~ N(out_mean, var) for non-members and N(in_mean, var) for members. This is LiRA on the
  synthetic world once its per-example estimates from K shadows per side are accounted for
  (sample means and variances of Gaussian data are independent):
  - offline, fixed variance: y = c - mean_out, r = 1, means 0 / 1, var 1 + 1/K;
  - offline, per-example variance: as above with r = 1 / sd_out, sd 1 / sqrt(2 (K - 1));
  - online, fixed variance: the ratio is (mu_in - mu_out) (c - (mu_in + mu_out) / 2), so
    r = mu_in - mu_out ~ N(1, 2/K) and y = c - midpoint, means -1/2 / 1/2, var 1 + 1/(2K).
  Integrated over r by Gauss-Hermite quadrature.
  """
  x, w = np.polynomial.hermite_e.hermegauss(40)
  r, w = 1 + slope_sd * x, w / w.sum()
  sd = np.sqrt(var)

  def rate(tau, mean):
    return np.sum(w * norm.sf((tau / r - mean) / sd))

  tau = scipy.optimize.brentq(lambda t: rate(t, out_mean) - alpha, -10, 10)
  return rate(tau, in_mean)


_FINITE = {
    (False, True): dict(slope_sd=0.0, out_mean=0.0, in_mean=1.0, var=1 + 1 / _K),
    (False, False): dict(slope_sd=1 / np.sqrt(2 * (_K - 1)), out_mean=0.0, in_mean=1.0,
                         var=1 + 1 / _K),
    (True, True): dict(slope_sd=np.sqrt(2 / _K), out_mean=-0.5, in_mean=0.5,
                       var=1 + 1 / (2 * _K)),
}
# Room for the shadows' randomness: over six seeds of this world the TPR's sd was at most
# 0.0022 at FPR 1% and 0.0014 at 10%; about 3.5 sd.
_TOL = {0.01: 0.008, 0.1: 0.005}


@pytest.mark.parametrize("alpha", [0.01, 0.1])
@pytest.mark.parametrize("variant", list(_FINITE), ids=str)
def test_scores_match_analytic_tpr(gaussian_world, variant, alpha):
  target_conf, is_member, all_scores = gaussian_world
  s = all_scores[variant]
  assert s.shape == (_N,) and np.all(np.isfinite(s))
  got = _tpr_at_fpr(s, is_member, alpha)
  want = _finite_shadow_tpr(alpha, **_FINITE[variant])
  assert abs(got - want) < _TOL[alpha], (got, want)
  # 128 shadows per side put these tests within 0.005 of the Neyman-Pearson optimum...
  assert _np_optimum(alpha) - 0.005 < want <= _np_optimum(alpha)
  assert abs(got - _np_optimum(alpha)) < _TOL[alpha] + 0.005
  # ...which a global threshold on the raw confidence is far from.
  assert _tpr_at_fpr(target_conf, is_member, alpha) < _np_optimum(alpha) * 0.6


@pytest.mark.parametrize("alpha", [0.01, 0.1])
def test_online_per_example_variance_near_optimum(gaussian_world, alpha):
  """Per-example variances (127 dof, relative sd 0.125) add a random quadratic term to
  the ratio; over ten seeds it cost 0.007-0.014 TPR at FPR 1% and up to 0.007 at 10%."""
  _, is_member, all_scores = gaussian_world
  got = _tpr_at_fpr(all_scores[(True, False)], is_member, alpha)
  optimum = _np_optimum(alpha)
  assert optimum - {0.01: 0.02, 0.1: 0.012}[alpha] < got < optimum + _TOL[alpha]


# --- scores: orientation, queries, fallbacks, input checks --------------------------------


def _small_world(m=8, n=6, seed=0):
  rng = np.random.default_rng(seed)
  shadow_in = np.asarray(lira.keep_masks(jax.random.key(seed), m, n))
  shadow_conf = shadow_in * 3.0 + rng.normal(0, 0.5, (m, n))
  return shadow_conf, shadow_in


@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("fixed_variance", [True, False])
def test_scores_higher_means_member(online, fixed_variance):
  shadow_conf, shadow_in = _small_world()
  high = lira.scores(np.full(6, 3.0), shadow_conf, shadow_in, online=online,
                     fixed_variance=fixed_variance)
  low = lira.scores(np.full(6, 0.0), shadow_conf, shadow_in, online=online,
                    fixed_variance=fixed_variance)
  assert np.all(high > low)


def test_offline_ignores_in_shadows():
  shadow_conf, shadow_in = _small_world()
  target = np.linspace(-1, 4, 6)
  a = lira.scores(target, shadow_conf, shadow_in, online=False, fixed_variance=False)
  moved = np.where(shadow_in, shadow_conf + 100.0, shadow_conf)
  b = lira.scores(target, moved, shadow_in, online=False, fixed_variance=False)
  np.testing.assert_allclose(a, b)


def test_query_axis_averages_per_query_scores():
  shadow_conf, shadow_in = _small_world()
  queries = np.stack([shadow_conf, shadow_conf + 1.0], axis=-1)  # (M, N, Q=2)
  target = np.stack([np.full(6, 2.0), np.full(6, 1.0)], axis=-1)
  both = lira.scores(target, queries, shadow_in, online=True, fixed_variance=False)
  each = [lira.scores(target[:, q], queries[..., q], shadow_in, online=True,
                      fixed_variance=False) for q in range(2)]
  np.testing.assert_allclose(both, (each[0] + each[1]) / 2)


def test_examples_without_in_or_out_shadows_use_fallbacks():
  shadow_conf, shadow_in = _small_world(m=8, n=6)
  shadow_in = shadow_in.copy()
  shadow_in[:, 0] = False  # example 0: no IN shadow
  shadow_in[:, 1] = True  # example 1: no OUT shadow
  shadow_in[1:, 2] = False  # example 2: one IN shadow, so no per-example variance
  shadow_in[0, 2] = True
  target = np.full(6, 1.5)
  for online in (True, False):
    for fixed_variance in (True, False):
      s = lira.scores(target, shadow_conf, shadow_in, online=online,
                      fixed_variance=fixed_variance)
      assert np.all(np.isfinite(s)), (online, fixed_variance, s)
  # Example 0's IN mean is its OUT mean plus the mean IN-OUT gap of the examples that have
  # both (2 to 5), so a target there scores like a clear member.
  gap = np.mean([shadow_conf[shadow_in[:, j], j].mean() - shadow_conf[~shadow_in[:, j], j].mean()
                 for j in range(2, 6)])
  at_in_mean = shadow_conf[:, 0].mean() + gap
  s = lira.scores(np.full(6, at_in_mean), shadow_conf, shadow_in, online=True,
                  fixed_variance=True)
  assert s[0] > 0


def test_online_without_any_in_shadow_is_an_error():
  shadow_conf, _ = _small_world()
  none_in = np.zeros(shadow_conf.shape, bool)
  with pytest.raises(UserError, match="shadow_in"):
    lira.scores(np.zeros(6), shadow_conf, none_in, online=True, fixed_variance=True)
  s = lira.scores(np.zeros(6), shadow_conf, none_in, online=False, fixed_variance=True)
  assert np.all(np.isfinite(s))


def test_saturated_shadows_stay_finite():
  shadow_in = np.asarray(lira.keep_masks(jax.random.key(0), 4, 3))
  shadow_conf = np.where(shadow_in, 5.0, 2.0)  # zero spread on both sides
  s = lira.scores(np.array([5.0, 2.0, 3.0]), shadow_conf, shadow_in, online=True,
                  fixed_variance=False)
  assert np.all(np.isfinite(s)) and s[0] > s[2] > s[1]


@pytest.mark.parametrize("target,conf,mask", [
    (np.zeros(5), np.zeros((4, 6)), np.zeros((4, 6), bool)),
    (np.zeros(6), np.zeros((4, 6)), np.zeros((4, 5), bool)),
    (np.zeros(6), np.zeros((4, 6)), np.zeros((4, 6), int)),
    (np.zeros((6, 2)), np.zeros((4, 6)), np.zeros((4, 6), bool)),
])
def test_scores_rejects_mismatched_shapes(target, conf, mask):
  with pytest.raises(UserError):
    lira.scores(target, conf, mask, online=False, fixed_variance=False)


# --- end to end: a LiRA stack's record and lira_scores.npz ----------------------------------


def _label_logit_margin(logits, labels):
  """phi = z_y - logsumexp_{j != y} z_j = log(p_y / (1 - p_y)), and log p_y, in float64."""
  z = np.asarray(logits, np.float64)
  is_label = np.arange(z.shape[-1]) == labels[..., None]
  z_y = np.where(is_label, z, 0.0).sum(-1)
  others = scipy.special.logsumexp(np.where(is_label, -np.inf, z), axis=-1)
  return z_y - others, z_y - scipy.special.logsumexp(z, axis=-1)


def _independent_lira(target, shadows, shadow_in):
  """LiRA from its formulas: per example, Gaussians fit to the shadows' confidences IN and
  OUT (per-example unbiased variance, or one variance per side pooled over examples)."""
  def fit(sel):
    n = sel.sum(0)
    mu = np.where(sel, shadows, 0.0).sum(0) / n
    sq = np.where(sel, (shadows - mu) ** 2, 0.0).sum(0)
    return mu, sq / (n - 1), sq.sum() / (n - 1).sum()

  (mu_in, var_in, pooled_in), (mu_out, var_out, pooled_out) = fit(shadow_in), fit(~shadow_in)
  out = {}
  for suffix, v_in, v_out in (("", var_in, var_out), ("_fixed_variance", pooled_in, pooled_out)):
    out["online" + suffix] = (norm.logpdf(target, mu_in, np.sqrt(v_in))
                              - norm.logpdf(target, mu_out, np.sqrt(v_out)))
    out["offline" + suffix] = norm.logcdf(target, mu_out, np.sqrt(v_out))
  return out


def _independent_rmia(target, refs, ref_in, pop_target, pop_refs, a):
  """RMIA from its definition, in probabilities: LR = p_target / Pr, scored by the fraction of
  population samples z with LR(x) / LR(z) > 1; Pr the references' mean (online) or ((1 + a)
  mean_OUT + 1 - a) / 2 (offline)."""
  p, p_ref, pz, pz_ref = np.exp(target), np.exp(refs), np.exp(pop_target), np.exp(pop_refs)
  mean_out = np.where(ref_in, 0.0, p_ref).sum(0) / (~ref_in).sum(0)
  priors = {"rmia_online": (p_ref.mean(0), pz_ref.mean(0)),
            "rmia_offline": (((1 + a) * mean_out + 1 - a) / 2,
                             ((1 + a) * pz_ref.mean(0) + 1 - a) / 2)}
  return {name: ((p / px)[:, None] > (pz / pz_prior)[None, :]).mean(1)
          for name, (px, pz_prior) in priors.items()}


@pytest.mark.slow
def test_lira_run_records_lira_and_rmia_and_saves_their_scores(tmp_path, data_dir):
  """Digits, a target and 4 shadows, 2 epochs: the pipeline, not the attacks' power. The
  recorded scores are recomputed here from lira_scores.npz and lira_keep.npz alone, from the
  attacks' formulas, with the target (model 0) scored against the shadows 1..4 only: a target
  among its own reference models would put its own confidence into every member's IN fit."""
  c = config_lib.base()
  c.data.dir = str(data_dir)
  c.lira.num_shadows = 4
  c.lira.rmia_offline_a = 0.6
  c.train.epochs = 2.0
  records = train.train_and_evaluate(c, tmp_path)
  assert [r["name"] for r in records] == [f"baseline-lira0{m}" for m in range(5)]
  fields = records[0]["lira"]
  assert all(r["lira"] is None for r in records[1:])
  for name in ("online", "offline", "rmia_online", "rmia_offline"):
    assert 0.0 <= fields[name]["auc"] <= 1.0
  assert fields["rmia_offline_a"] == 0.6 and fields["rmia_gamma"] == 1.0
  assert fields["rmia_offline_a_chosen_by"] == "config override"
  s = splits_lib.Splits.load(tmp_path / "baseline-lira00" / "splits.npz")
  assert fields["rmia_num_population"] == len(s.reference)
  with np.load(tmp_path / "lira_keep.npz") as f:
    keep = f["keep"]
    np.testing.assert_array_equal(f["pool"], s.train)
  with np.load(tmp_path / "baseline-lira00" / "lira_scores.npz") as f:
    saved = dict(f)
  np.testing.assert_array_equal(saved["population_index"], s.reference)
  np.testing.assert_array_equal(saved["keep"], keep)
  np.testing.assert_array_equal(keep.sum(axis=1), len(s.train) // 2)
  np.testing.assert_array_equal(saved["is_member"], keep[0])
  n, z = len(s.train), len(s.reference)
  assert saved["shadow_logits"].shape == (4, n, 10)
  assert saved["shadow_population_logits"].shape == (4, z, 10)
  for key in ("score_lira_online", "score_rmia_online", "score_rmia_offline"):
    assert saved[key].shape == (n,)
  assert np.all((saved["score_rmia_online"] >= 0) & (saved["score_rmia_online"] <= 1))

  logits = np.concatenate([saved["logits"][None], saved["shadow_logits"]])
  pop_logits = np.concatenate([saved["population_logits"][None],
                               saved["shadow_population_logits"]])
  conf, logp = _label_logit_margin(logits, saved["labels"])
  _, pop_logp = _label_logit_margin(pop_logits, saved["population_labels"])
  want = _independent_lira(conf[0], conf[1:], keep[1:])
  want |= _independent_rmia(logp[0], logp[1:], keep[1:], pop_logp[0], pop_logp[1:], a=0.6)
  is_member = keep[0]
  for name, w in want.items():
    got = saved[f"score_lira_{name}" if name in _LIRA_VARIANTS else f"score_{name}"]
    _assert_scores_match(got, w, name)
    assert fields[name]["auc"] == pytest.approx(metrics.roc_auc(w, is_member), abs=1e-3), name

  # Every model in turn as the target, scored against the other four only.
  rotated = fields["rotated"]
  assert rotated["targets"] == 5 and rotated["scores"] == 5 * n
  np.testing.assert_array_equal(saved["rotated_is_member"], keep.reshape(-1))
  for t in range(5):
    others = np.arange(5) != t
    want = _independent_lira(conf[t], conf[others], keep[others])["online"]
    # Where a side has a single shadow the formula's variance is undefined (NaN here); the
    # audit falls back to the pooled variance there (test_examples_without_in_or_out_...).
    ok = np.isfinite(want)
    assert ok.sum() > n // 4
    _assert_scores_match(saved["rotated_score"][t * n:(t + 1) * n][ok], want[ok],
                         f"target {t}")
  np.testing.assert_allclose(saved["rotated_score"][:n], saved["score_lira_online"])


def _assert_scores_match(got, want, name):
  """The audit's scores (from float32 confidences) against these float64 ones. Where the
  shadows' confidences nearly coincide the variance is tiny and the score huge (|score| in the
  millions), and float32 rounding sets its digits (seen: 1% apart): there only its side and
  its extremity are defined."""
  extreme = np.abs(want) > 1e4
  np.testing.assert_allclose(got[~extreme], want[~extreme], rtol=1e-2, atol=1e-3, err_msg=name)
  assert np.all((np.sign(got[extreme]) == np.sign(want[extreme])) &
                (np.abs(got[extreme]) > 1e3)), name


_LIRA_VARIANTS = ("online", "offline", "online_fixed_variance", "offline_fixed_variance")


def test_bad_rmia_offline_a_is_refused_before_anything_is_written(tmp_path, data_dir):
  c = config_lib.base()
  c.data.dir = str(data_dir)
  c.lira.num_shadows = 2
  c.lira.rmia_offline_a = 1.5
  with pytest.raises(UserError, match="lira.rmia_offline_a"):
    train.train_and_evaluate(c, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_clopper_pearson_is_the_exact_binomial_interval():
  from scipy import stats
  for k, n in ((0, 10), (3, 10), (10, 10), (17, 4000)):
    want = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    np.testing.assert_allclose(metrics.clopper_pearson(k, n), (want.low, want.high),
                               rtol=1e-9, atol=1e-12)


def test_rotated_lira_pools_every_target_and_bounds_its_tpr():
  from miajax import evaluate
  rng = np.random.default_rng(0)
  m, n = 9, 400
  keep = np.asarray(lira.keep_masks(jax.random.PRNGKey(0), m, n))
  labels = rng.integers(0, 3, n)
  logits = rng.normal(size=(m, n, 3))
  logits[np.arange(m)[:, None], np.arange(n)[None], labels[None]] += 2.0 + 1.5 * keep
  fields, scores, members = evaluate.lira_rotated(logits, labels, keep)
  assert fields["targets"] == m and scores.shape == members.shape == (m * n,)
  assert len(fields["auc_per_target"]) == m and fields["auc"] > 0.6
  tpr = fields["tpr_at_fpr"]["0.01"]
  lo, hi = fields["tpr_interval"]["0.01"]
  assert lo <= tpr <= hi
  # 1,800 non-members: a TPR at 0.1% FPR exists, which one target's 200 could not give.
  assert fields["tpr_at_fpr"]["0.001"] is not None
  assert metrics.tpr_at_fpr(scores[:n], members[:n], 0.001) is None
