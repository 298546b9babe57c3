"""The results schema and the printed comparison."""

import json

import numpy as np
import pytest
from scipy import stats

from miajax import results


def test_every_schema_field_is_present_and_uncomputed_ones_are_null():
  r = results.record(name="baseline-seed0", method="baseline", test_accuracy=0.9)
  assert list(r)[:len(results.FIELDS)] == list(results.FIELDS)
  assert r["attack_accuracy"] is None and r["dp_epsilon"] is None
  with pytest.raises(KeyError):
    results.record(name="x", made_up_metric=1.0)


def test_interval_is_the_95_percent_t_interval_over_seeds():
  values = [0.5, 0.6, 0.7]
  mean, half, n = results.mean_interval(values)
  assert n == 3 and mean == pytest.approx(0.6)
  assert half == pytest.approx(stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3))
  assert results.mean_interval([0.4]) == (0.4, None, 1)
  assert results.mean_interval([None]) == (None, None, 0)


def test_table_shows_mean_and_interval_per_method_and_dashes_for_null(tmp_path):
  recs = [results.record(name=f"{m}-seed{s}", method=m, test_accuracy=a, weights_nonzero=n)
          for m, s, a, n in [("baseline", 0, 0.90, 100), ("baseline", 1, 0.92, 100),
                             ("pruning", 0, 0.88, 10)]]
  text = results.table(recs)
  lines = text.splitlines()
  assert lines[0].split()[:3] == ["method", "seeds", "test"]
  assert "91.00±" in lines[2] and lines[2].split()[1] == "2"
  assert "88.00" in lines[3] and "-" in lines[3].split()
  results.write(tmp_path, recs)
  assert json.loads((tmp_path / "results.json").read_text()) == recs
  assert (tmp_path / "results.csv").read_text().splitlines()[0].startswith("name,method")
