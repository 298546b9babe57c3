"""Per-example exposure: the baseline's most exposed members followed into each defence."""

import numpy as np
import pytest

from miajax import exposure


def _write(workdir, name, scores, is_member, rotated=None):
  """A target's lira_scores.npz; `rotated`: (scores, is_member), (models, pool) each, of
  every model of the stack as the target (model 0 the target itself)."""
  (workdir / name).mkdir(parents=True)
  extra = {} if rotated is None else {"rotated_score": rotated[0].reshape(-1),
                                      "rotated_is_member": rotated[1].reshape(-1)}
  np.savez(workdir / name / "lira_scores.npz", score_lira_online=scores, is_member=is_member,
           **extra)
  return {"name": name, "method": name.split("-")[0], "group": None, "lira": {"online": {}}}


def test_the_threshold_lets_fewer_than_the_rate_of_non_members_above_it():
  scores = np.arange(3000, dtype=float)
  member = np.zeros(3000, bool)
  t = exposure.threshold_at_fpr(scores, member, 0.001)
  assert np.mean(scores > t) < 0.001 and np.sum(scores > t) == 2


def test_the_top_members_are_the_baselines_and_a_defence_that_hides_them_says_so(tmp_path):
  rng = np.random.default_rng(0)
  n = 4000
  member = np.zeros(n, bool)
  member[: n // 2] = True
  base = rng.normal(size=n)
  base[:20] += 10.0                                  # 20 members stand far out
  hides_top = base.copy()
  hides_top[:20] = rng.normal(size=20)               # a defence that hides exactly them
  records = [_write(tmp_path, "baseline-lira00", base, member),
             _write(tmp_path, "pruning-lira00", hides_top, member),
             {"name": "baseline-lira01", "method": "baseline", "group": None, "lira": None}]
  notes = []
  e = exposure.compare(tmp_path, records, notes)
  assert e["top"] == 20 and e["members"] == 2000 and not notes
  assert e["methods"]["baseline"]["still_called_members"] == 1.0
  assert e["methods"]["pruning"]["still_called_members"] < 0.2
  assert e["methods"]["pruning"]["median_score"] < e["methods"]["baseline"]["median_score"]
  assert "pruning" in exposure.table(e) and "most exposed" in exposure.table(e)


def test_a_target_on_other_members_is_left_out_with_a_note(tmp_path):
  member = np.arange(100) < 50
  records = [_write(tmp_path, "baseline-lira00", np.arange(100.0), member),
             _write(tmp_path, "dp-lira00", np.arange(100.0), ~member)]
  notes = []
  e = exposure.compare(tmp_path, records, notes)
  assert list(e["methods"]) == ["baseline"] and "dp" in notes[0]
  assert exposure.compare(tmp_path, records[1:], []) == {}     # no baseline target


def test_with_every_model_as_the_target_each_models_own_top_members_are_followed(tmp_path):
  # 3 models on complementary halves; each model's 20 most exposed members are its own.
  rng = np.random.default_rng(1)
  models, n = 3, 4000
  member = np.stack([(np.arange(n) // 50 + m) % 2 == 0 for m in range(models)])
  base = rng.normal(size=(models, n))
  tops = [np.flatnonzero(member[m])[20 * m:20 * (m + 1)] for m in range(models)]
  for m, top in enumerate(tops):
    base[m, top] += 10.0
  hides = base.copy()
  for m, top in enumerate(tops[1:], 1):          # hides the top members of models 1 and 2
    hides[m, top] = rng.normal(size=20)
  records = [_write(tmp_path, "baseline-lira00", base[0], member[0], (base, member)),
             _write(tmp_path, "pruning-lira00", hides[0], member[0], (hides, member))]
  notes = []
  e = exposure.compare(tmp_path, records, notes)
  assert not notes and e["rotated"]["targets"] == 3 and e["rotated"]["top"] == 60
  # Model 0 alone says nothing is hidden; over all three, two thirds are.
  assert e["methods"]["pruning"]["still_called_members"] == 1.0
  assert e["rotated"]["methods"]["baseline"]["still_called_members"] == 1.0
  assert e["rotated"]["methods"]["pruning"]["still_called_members"] == pytest.approx(
      1 / 3, abs=0.05)
  assert "3 targets" in exposure.table(e)
  # Without the rotated scores (an older run), the target's table alone.
  plain = [_write(tmp_path / "old", r["name"], s, member[0])
           for r, s in zip(records, (base[0], hides[0]))]
  assert "rotated" not in exposure.compare(tmp_path / "old", plain, [])
