"""The two Min-Max methods end to end: side batches through the real pipeline, the inner
attack learning, pruning + Min-Max pruned to the paper's rates, every record complete."""

import json

import numpy as np
import pytest

from miajax import config as config_lib
from miajax import results
from miajax import train


@pytest.mark.slow
def test_minmax_and_pruning_minmax_train_audit_and_record(tmp_path, data_dir):
  c = config_lib.base()
  config_lib.smoke(c)
  c.data.dir = str(data_dir)
  c.methods = ("minmax", "pruning_minmax")
  c.train.log_every = 5
  c.minmax.attack_learning_rate = 1e-2     # an inner attack that visibly learns in 30 steps
  c.attack.epochs = 1
  records = {r["method"]: r for r in train.train_and_evaluate(c, tmp_path)}
  assert set(records) == {"minmax", "pruning_minmax"}
  for r in records.values():
    assert set(results.FIELDS) <= set(r) and r["attack_auc"] is not None
    lines = [json.loads(l) for l in (tmp_path / r["name"] / "metrics.jsonl").read_text()
             .splitlines() if '"attack_gain"' in l]
    gains = [l["attack_gain"] for l in lines]
    # The inner attack's gain starts at a coin's -log 4 and moves as it learns.
    assert abs(gains[0] + np.log(4)) < 0.05 and max(abs(g - gains[0]) for g in gains) > 1e-3
    assert all(l["loss"] != l["cross_entropy"] for l in lines)   # the adversarial term
  assert records["pruning_minmax"]["weights_nonzero"] == 4012     # App. E's LeNet-5 rates
  assert records["minmax"]["weights_nonzero"] == 61470
