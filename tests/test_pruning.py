"""Tests of miajax.pruning: the prunable filter, keep specs, the exact top-k projection."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from miajax import config as config_lib
from miajax import methods
from miajax import models
from miajax import pruning
from miajax.errors import UserError

LENET5_LAYERS = ["conv1/kernel", "conv2/kernel", "fc1/kernel", "fc2/kernel", "fc3/kernel"]


def lenet5_params(seed=0):
  """LeNet-5-shaped linen params (HWIO convs, (in, out) dense), in forward order."""
  rng = np.random.default_rng(seed)
  shapes = [("conv1", (5, 5, 1, 6)), ("conv2", (5, 5, 6, 16)), ("fc1", (400, 120)),
            ("fc2", (120, 84)), ("fc3", (84, 10))]
  return {name: {"kernel": rng.normal(size=shape).astype(np.float32),
                 "bias": rng.normal(size=shape[-1]).astype(np.float32)}
          for name, shape in shapes}


def deep_params(num_layers):
  """Conv stack with BatchNorm between layers; shapes only matter."""
  params = {}
  for i in range(num_layers):
    params[f"conv{i}"] = {"kernel": np.ones((3, 3, 8, 8), np.float32)}
    params[f"bn{i}"] = {"scale": np.ones(8, np.float32), "bias": np.zeros(8, np.float32)}
  return params


# Table 4: total prunable weights / kept weights. CIFAR-10 and CIFAR-100 share one row per
# model; the "_imagenet" models are its ImageNet rows (also stated in Sec. 5.3's text).
TABLE4 = [("vgg16", 10, 13.84), ("vgg16", 100, 13.84), ("resnet18", 10, 10.54),
          ("resnet18", 100, 10.54), ("mobilenetv2", 10, 10.06), ("mobilenetv2", 100, 10.06),
          ("resnet18_imagenet", 1000, 3.37), ("mobilenetv2_imagenet", 1000, 3.27)]


def model_params(name, classes):
  """The params' shapes of models.create(name, classes), from jax.eval_shape (no compile)."""
  side, channels = {"lenet5": (28, 1)}.get(name, (224 if "imagenet" in name else 32, 3))
  model = models.create(name, classes)
  return jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, side, side, channels)), train=False))["params"]


def kept(params, fractions):
  counts = pruning.keep_counts(params, fractions)
  return sum(counts.values()), counts


def reference_mask(w, k):
  """np.argsort(-|w|, stable): the k largest magnitudes, lower flat index first among ties."""
  a = np.abs(np.asarray(w, np.float32)).ravel()
  mask = np.zeros(a.size, bool)
  mask[np.argsort(-a, kind="stable")[:k]] = True
  return mask.reshape(np.shape(w))


_project = jax.jit(pruning.project)
_topk_mask = jax.jit(pruning.topk_mask)


def _random_shape(rng):
  """1-D to 4-D, size log-uniform in [1, 5000]."""
  ndim = int(rng.integers(1, 5))
  target = int(np.exp(rng.uniform(0, np.log(5000))))
  shape = [int(rng.integers(1, round(target ** (1 / ndim)) + 2)) for _ in range(ndim - 1)]
  shape.append(max(1, target // math.prod(shape)))
  return tuple(shape)


_rng = np.random.default_rng(20240601)
SHAPES = list(dict.fromkeys(
    [(1,), (5000,), (1, 1, 1, 1), (70, 71), (5, 5, 1, 6), (3, 3, 16, 32)]
    + [_random_shape(_rng) for _ in range(6)]))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("values", ["normal", "ties"])
def test_project_matches_stable_argsort_reference_on_random_shapes_and_k(dtype, values):
  rng = np.random.default_rng([values == "ties", dtype == jnp.bfloat16])
  for shape in SHAPES:
    size = math.prod(shape)
    if values == "ties":  # a few distinct magnitudes, with signs and zeros
      w = rng.integers(-3, 4, size=shape).astype(np.float32)
    else:
      w = rng.normal(size=shape).astype(np.float32)
    w = jnp.asarray(w, dtype)
    for k in sorted({1, size, int(rng.integers(1, size + 1)), max(1, size // 2)}):
      mask = np.asarray(_topk_mask(w, k))
      got = np.asarray(_project(w, k))
      expected_mask = reference_mask(w, k)
      assert mask.sum() == k, (shape, k)
      np.testing.assert_array_equal(mask, expected_mask, err_msg=f"{shape} k={k}")
      np.testing.assert_array_equal(got, np.where(expected_mask, np.asarray(w), 0))
      assert got.dtype == w.dtype and got.shape == shape
      if np.all(np.asarray(w)[expected_mask] != 0):
        assert np.count_nonzero(got) == k


def test_project_keeps_lowest_indices_among_equal_magnitudes():
  w = jnp.array([1.0, -1.0, 2.0, 1.0, -2.0, 1.0])
  np.testing.assert_array_equal(_project(w, 3), [1.0, 0.0, 2.0, 0.0, -2.0, 0.0])
  np.testing.assert_array_equal(_topk_mask(jnp.zeros((3000,)), 1234),
                                np.arange(3000) < 1234)


def test_long_runs_of_equal_magnitudes_keep_exactly_the_first_k():
  w = jnp.zeros((5000,), jnp.float32).at[::2].set(-0.0)
  for k in (1023, 1024, 1025, 2047, 2048, 2049, 3072, 4095, 4096, 4999, 5000):
    np.testing.assert_array_equal(_topk_mask(w, k), np.arange(5000) < k, err_msg=f"k={k}")


def test_project_with_keep_fraction_one_is_identity():
  w = jnp.asarray(np.random.default_rng(0).normal(size=(7, 9)), jnp.float32)
  np.testing.assert_array_equal(_project(w, w.size), w)


def test_topk_mask_keeps_nothing_for_k_zero_and_everything_above_size():
  w = jnp.arange(1.0, 7.0)
  assert not np.asarray(_topk_mask(w, 0)).any()
  assert np.asarray(_topk_mask(w, 10)).all()


def test_project_ranks_nan_last_like_numpy():
  w = jnp.array([np.nan, 0.5, -3.0, np.nan, 0.0])
  for k in range(1, 6):
    np.testing.assert_array_equal(_topk_mask(w, k), reference_mask(w, k), err_msg=f"k={k}")


def test_project_vmaps_over_trials_with_different_k_in_one_compiled_program():
  traces = []

  def step(w, k):
    traces.append(None)  # runs once per trace, not per call
    return pruning.project(w, k)

  batched = jax.jit(jax.vmap(step))
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.integers(-4, 5, size=(3, 20, 30)), jnp.float32)
  for ks in ([1, 250, 600], [599, 2, 77]):
    got = np.asarray(batched(w, jnp.asarray(ks, jnp.int32)))
    for trial, k in enumerate(ks):
      np.testing.assert_array_equal(got[trial] != 0, reference_mask(w[trial], k)
                                    & (np.asarray(w[trial]) != 0))
      np.testing.assert_array_equal(np.asarray(_topk_mask(w[trial], k)),
                                    reference_mask(w[trial], k))
  assert len(traces) == 1


def test_paper_rule_gives_the_papers_lenet5_rates():
  params = lenet5_params()
  fractions = pruning.keep_fractions(params, "paper")
  assert list(fractions) == LENET5_LAYERS
  pruned = [1 - f for f in fractions.values()]
  np.testing.assert_allclose(pruned, [0.40, 0.90, 0.9375, 0.9375, 0.9375])
  counts = pruning.keep_counts(params, fractions)
  assert list(counts.values()) == [90, 240, 3000, 630, 52]  # 52.5 rounds half to even


def test_paper_rule_on_ten_layers_keeps_065_first_then_prunes_050_rising_to_095():
  fractions = list(pruning.keep_fractions(deep_params(10), "paper").values())
  assert len(fractions) == 10
  assert fractions[0] == pytest.approx(0.65)
  pruned = [1 - f for f in fractions[1:]]
  assert pruned[0] == pytest.approx(0.5) and pruned[-1] == pytest.approx(0.95)
  assert all(b > a for a, b in zip(pruned, pruned[1:]))
  np.testing.assert_allclose(np.diff(pruned), 0.45 / 8)


def test_paper_rule_on_short_models():
  assert list(pruning.keep_fractions(deep_params(1), "paper").values()) == [0.65]
  assert list(pruning.keep_fractions(deep_params(2), "paper").values()) == [0.65, 0.5]


def test_uniform_spec_sets_every_layer_and_a_number_is_the_overall_fraction():
  assert pruning.keep_fractions(lenet5_params(), "uniform:0.25") == dict.fromkeys(
      LENET5_LAYERS, 0.25)
  assert pruning.keep_fractions(lenet5_params(), 1) == dict.fromkeys(LENET5_LAYERS, 1.0)
  assert pruning.parse_keep("uniform:0.1") == "uniform:0.1"
  assert pruning.parse_keep(" uniform: 0.10 ") == "uniform:0.1"
  for bad in ("uniform:1.5", "uniform:", "uniform:x"):
    with pytest.raises(UserError, match="pruning.keep"):
      pruning.parse_keep(bad)


def test_sequence_spec_is_one_fraction_per_layer_in_forward_order():
  spec = (0.5, 0.4, 0.3, 0.2, 0.1)
  assert pruning.keep_fractions(lenet5_params(), spec) == dict(zip(LENET5_LAYERS, spec))
  assert pruning.keep_fractions(lenet5_params(), np.array(spec)) == dict(zip(LENET5_LAYERS, spec))


def test_dict_spec_matches_names_prefixes_and_suffixes_and_leaves_others_dense():
  got = pruning.keep_fractions(lenet5_params(), {"fc1": 0.1, "conv2/kernel": 0.2})
  assert got == {"conv1/kernel": 1.0, "conv2/kernel": 0.2, "fc1/kernel": 0.1,
                 "fc2/kernel": 1.0, "fc3/kernel": 1.0}
  nested = {"stem": {"kernel": np.ones((3, 3, 3, 8))},
            "stage1": {"block0": {"conv2": {"kernel": np.ones((3, 3, 8, 8))}},
                       "block1": {"conv2": {"kernel": np.ones((3, 3, 8, 8))}}}}
  got = pruning.keep_fractions(nested, {"block0/conv2": 0.3, "stage1/block1/conv2/kernel": 0.4})
  assert got == {"stem/kernel": 1.0, "stage1/block0/conv2/kernel": 0.3,
                 "stage1/block1/conv2/kernel": 0.4}


@pytest.mark.parametrize("spec, message", [
    (1.5, "pruning.keep=1.5 is outside (0, 1]"),
    (0.0, "pruning.keep=0.0 is outside (0, 1]"),
    (-0.1, "pruning.keep=-0.1 is outside (0, 1]"),
    (float("nan"), "pruning.keep=nan is outside (0, 1]"),
    (True, "pruning.keep=True is not a number"),
    ("fast", "pruning.keep='fast' is not allowed"),
    ([0.5, 0.5], "has 2 values but the model has 5 prunable layers"),
    ([0.5, 0.5, 2.0, 0.5, 0.5], "pruning.keep[2]=2.0 is outside (0, 1]"),
    ({"fc9": 0.5}, "pruning.keep key 'fc9' matches no prunable layer"),
    ({"kernel": 0.5}, "pruning.keep key 'kernel' is ambiguous"),
    ({"fc1": 0.5, "fc1/kernel": 0.4}, "both name fc1/kernel"),
    ({"fc1": 0}, "pruning.keep['fc1']=0 is outside (0, 1]"),
    ({3: 0.5}, "pruning.keep key 3 is not a string"),
    (np.array([0.5, 0.5, 0.5, 0.5, 1.5]), "pruning.keep[4]=1.5 is outside (0, 1]"),
    ("uniform:1.5", "pruning.keep='uniform:1.5' is outside (0, 1]"),
    ("uniform:x", "pruning.keep='uniform:x' is not a number"),
    (0.001, "pruning.keep=0.001 is below 0.0015"),
])
def test_bad_keep_specs_raise_one_line_user_errors(spec, message):
  with pytest.raises(UserError) as info:
    pruning.keep_fractions(lenet5_params(), spec)
  assert message in str(info.value)
  assert "\n" not in str(info.value)


def test_keep_counts_round_and_keep_at_least_one():
  params = {"fc": {"kernel": np.zeros((10, 10))}, "out": {"kernel": np.zeros((2, 3))}}
  assert pruning.keep_counts(params, {"fc/kernel": 0.255, "out/kernel": 0.01}) == {
      "fc/kernel": 26, "out/kernel": 1}


def test_biases_and_norm_parameters_are_never_prunable():
  assert pruning.is_prunable(("conv1", "kernel"), np.zeros((3, 3, 1, 4)))
  assert pruning.is_prunable(("fc", "kernel"), jax.ShapeDtypeStruct((4, 2), jnp.float32))
  assert not pruning.is_prunable(("conv1", "bias"), np.zeros(4))
  assert not pruning.is_prunable(("bn", "scale"), np.zeros(4))
  assert not pruning.is_prunable(("bn", "bias"), np.zeros(4))
  assert not pruning.is_prunable(("gn", "scale"), np.zeros(4))
  assert not pruning.is_prunable(("odd", "kernel"), np.zeros(4))  # 1-D: not a weight matrix
  assert not pruning.is_prunable(("embed", "embedding"), np.zeros((10, 4)))
  path = jax.tree_util.tree_flatten_with_path({"fc": {"kernel": np.zeros((2, 2))}})[0][0][0]
  assert pruning.is_prunable(path, np.zeros((2, 2)))


def test_layers_follow_insertion_order_not_alphabetical_order():
  params = {"z_conv": {"kernel": np.zeros((3, 3, 1, 2)), "bias": np.zeros(2)},
            "norm": {"scale": np.ones(2), "bias": np.zeros(2)},
            "a_fc": {"kernel": np.zeros((8, 4))}}
  assert pruning.layers(params) == ["z_conv/kernel", "a_fc/kernel"]
  shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
  assert pruning.keep_counts(shapes, pruning.keep_fractions(shapes, "uniform:0.5")) == {
      "z_conv/kernel": 9, "a_fc/kernel": 16}


def test_count_tree_has_int32_scalars_for_kernels_and_none_elsewhere():
  params = lenet5_params()
  tree = pruning.count_tree(params, pruning.keep_counts(params, pruning.keep_fractions(
      params, "paper")))
  assert list(tree) == ["conv1", "conv2", "fc1", "fc2", "fc3"]
  assert tree["fc1"]["bias"] is None
  assert tree["fc1"]["kernel"].dtype == jnp.int32 and tree["fc1"]["kernel"].shape == ()
  assert int(tree["fc1"]["kernel"]) == 3000
  with pytest.raises(ValueError):
    pruning.count_tree(params, {"fc1/kernel": 1})


def test_project_tree_over_stacked_trials_prunes_kernels_to_their_counts_only():
  params = lenet5_params()
  specs = ["paper", 0.5, {"fc1": 0.01}]
  trees = [pruning.count_tree(params, pruning.keep_counts(params, pruning.keep_fractions(
      params, s))) for s in specs]
  counts = jax.tree.map(lambda *c: jnp.stack(c), *trees)
  stacked = jax.tree.map(lambda a: jnp.stack([a] * len(specs)), params)
  projected = jax.jit(jax.vmap(pruning.project_tree))(stacked, counts)
  for trial, spec in enumerate(specs):
    one = jax.tree.map(lambda a, t=trial: np.asarray(a[t]), projected)
    expected = pruning.keep_counts(params, pruning.keep_fractions(params, spec))
    report = pruning.compression(one)
    assert {n: v["nonzero"] for n, v in report["layer_sparsity"].items()} == expected
    for name in params:
      np.testing.assert_array_equal(one[name]["bias"], params[name]["bias"])


def test_mask_tree_and_apply_mask_zero_pruned_entries_and_keep_the_rest():
  params = lenet5_params()
  counts = pruning.count_tree(params, pruning.keep_counts(params, pruning.keep_fractions(
      params, "paper")))
  mask = jax.jit(pruning.mask_tree)(params, counts)
  assert mask["fc1"]["kernel"].dtype == jnp.bool_
  assert np.asarray(mask["fc1"]["bias"]).all()
  assert int(np.asarray(mask["fc1"]["kernel"]).sum()) == 3000
  projected = jax.jit(pruning.project_tree)(params, counts)
  masked = jax.jit(pruning.apply_mask)(params, mask)
  for name in params:
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(masked[name][leaf], projected[name][leaf])
  grads = jax.tree.map(lambda a: jnp.full(a.shape, jnp.inf, jnp.bfloat16), params)
  masked_grads = jax.jit(pruning.apply_mask)(grads, mask)
  assert masked_grads["fc1"]["kernel"].dtype == jnp.bfloat16
  assert int(np.isinf(np.asarray(masked_grads["fc1"]["kernel"], np.float32)).sum()) == 3000


def test_compression_counts_nonzero_kernel_weights_and_excludes_biases_and_norms():
  params = {
      "conv": {"kernel": np.array([[0.0, 1.0], [2.0, 0.0]], np.float32), "bias": np.ones(2)},
      "bn": {"scale": np.ones(2), "bias": np.zeros(2)},
      "fc": {"kernel": np.asarray(jnp.array([[0.0, 0.0, 3.0]], jnp.bfloat16))},
  }
  assert pruning.compression(params) == {
      "weights_total": 7, "weights_nonzero": 3, "compression_ratio": 7 / 3,
      "layer_sparsity": {"conv/kernel": {"total": 4, "nonzero": 2},
                         "fc/kernel": {"total": 3, "nonzero": 1}}}
  empty = {"fc": {"kernel": np.zeros((2, 2))}}
  assert pruning.compression(empty)["compression_ratio"] is None


@pytest.mark.parametrize("name, classes, ratio", TABLE4, ids=[f"{n}-{c}" for n, c, _ in TABLE4])
def test_paper_rule_prunes_each_paper_model_to_its_table4_reduction_ratio(name, classes, ratio):
  params = model_params(name, classes)
  total = sum(math.prod(p.shape) for p in pruning._prunable_leaves(params).values())
  n, _ = kept(params, pruning.keep_fractions(params, "paper", model=name))
  assert total / n == pytest.approx(ratio, rel=0.02)


@pytest.mark.parametrize("name, classes, ratio", TABLE4, ids=[f"{n}-{c}" for n, c, _ in TABLE4])
def test_paper_profiles_follow_app_e_first_layer_30_40pct_then_50_95pct_rising(
    name, classes, ratio):
  fractions = list(pruning.keep_fractions(model_params(name, classes), "paper",
                                          model=name).values())
  assert 0.6 <= fractions[0] <= 0.7
  pruned = [1 - f for f in fractions[1:]]
  assert all(0.5 - 1e-9 <= p <= 0.95 + 1e-9 for p in pruned)
  assert all(b >= a for a, b in zip(pruned, pruned[1:]))


def test_lenet5_keeps_app_e_explicit_rates_over_table4s_ratio():
  params = model_params("lenet5", 10)
  fractions = pruning.keep_fractions(params, "paper", model="lenet5")
  assert list(fractions.values()) == list(pruning.LENET5_PAPER_KEEP)
  assert kept(params, fractions)[0] == 4012   # of 61,470: 15.32x, Table 4 says 15.78x


@pytest.mark.parametrize("name", ["lenet5", "vgg16", "resnet18_imagenet"])
@pytest.mark.parametrize("keep", [0.5, 0.3, 0.2, 0.1, 0.05])
def test_a_number_is_the_overall_kept_fraction_with_the_first_layer_keeping_at_least_60pct(
    name, keep):
  params = model_params(name, 1000 if "imagenet" in name else 10)
  fractions = pruning.keep_fractions(params, keep, model=name)
  n, counts = kept(params, fractions)
  total = sum(math.prod(p.shape) for p in pruning._prunable_leaves(params).values())
  assert n / total == pytest.approx(keep, rel=0.01)
  first = list(fractions.values())[0]
  assert 0.6 <= first <= 0.7
  later = list(fractions.values())[1:]
  assert all(b <= a + 1e-12 for a, b in zip(later, later[1:]))   # pruned harder with depth


def test_keep_005_on_lenet5_keeps_60pct_of_conv1_and_5pct_overall_and_records_each_layer():
  shapes = model_params("lenet5", 10)
  counts = pruning.keep_counts(shapes, pruning.keep_fractions(shapes, 0.05, model="lenet5"))
  assert counts["conv1/kernel"] >= 0.6 * 150       # uniform 0.05 left 8 of conv1's 150
  assert sum(counts.values()) == pytest.approx(0.05 * 61470, rel=0.01)
  params = jax.tree.map(lambda s: np.random.default_rng(0).normal(size=s.shape).astype(
      np.float32), shapes)
  report = pruning.compression(jax.jit(pruning.project_tree)(params, pruning.count_tree(
      params, counts)))
  assert {n: v["nonzero"] for n, v in report["layer_sparsity"].items()} == counts


def test_keep_at_the_table4_fraction_gives_the_paper_profile():
  params = model_params("vgg16", 10)
  paper = pruning.keep_fractions(params, "paper", model="vgg16")
  n, _ = kept(params, paper)
  total = sum(math.prod(p.shape) for p in pruning._prunable_leaves(params).values())
  scaled = pruning.keep_fractions(params, n / total, model="vgg16")
  np.testing.assert_allclose(list(scaled.values()), list(paper.values()), rtol=1e-3)


def test_the_pruning_recipe_prunes_to_the_configured_models_table4_ratio():
  config = config_lib.base()
  config.model.name = "resnet18"
  config.pruning.keep = "paper"
  model = models.create("resnet18", 100)
  recipe = methods.recipe("pruning", config, model, None, steps_per_epoch=10, num_classes=100,
                          num_members=640)
  params = model_params("resnet18", 100)
  counts = [int(c) for c in jax.tree.leaves(recipe.hp(params)["counts"])]
  total = sum(math.prod(p.shape) for p in pruning._prunable_leaves(params).values())
  assert total / sum(counts) == pytest.approx(10.54, rel=0.02)
