"""A phase's duration in epochs, steps or examples: one conversion to steps (`durations`)."""

import pytest

from miajax import config as config_lib
from miajax import defences
from miajax import durations
from miajax.errors import UserError

STEPS_PER_EPOCH = 15      # e.g. 960 members at data.batch_size 64


def _config(**fields):
  c = config_lib.base()
  c.methods = ("baseline", "pruning")
  for field, value in fields.items():
    section, key = field.split(".")
    c[section][key] = value
  return c


def _phase_steps(c):
  return {m: defences.get(m).phase_steps(c, STEPS_PER_EPOCH) for m in c.methods}


def test_epochs_steps_and_examples_give_the_same_steps():
  batch = config_lib.base().data.batch_size
  by_epochs = _config(**{"train.epochs": 2.5, "pruning.pretrain_epochs": 4.0})
  by_steps = _config(**{"train.epochs": None, "train.steps": 38,
                        "pruning.pretrain_epochs": None, "pruning.pretrain_steps": 60})
  by_examples = _config(**{"train.epochs": None, "train.examples": round(2.5 * 15 * batch),
                           "pruning.pretrain_epochs": None,
                           "pruning.pretrain_examples": 4 * 15 * batch})
  for c in (by_epochs, by_steps, by_examples):
    config_lib.validate(c)
  assert _phase_steps(by_epochs)["baseline"] == (38,)          # round(2.5 x 15)
  assert _phase_steps(by_epochs)["pruning"][0] == 60
  assert _phase_steps(by_steps) == _phase_steps(by_examples) == _phase_steps(by_epochs)


def test_the_shipped_epochs_keep_their_meaning():
  c = config_lib.base()
  fields = [f for _, f in defences.get("pruning").phases]
  assert defences.get("pruning").phase_steps(c, STEPS_PER_EPOCH) == tuple(
      durations.epochs_to_steps(c[f.split(".")[0]][f.split(".")[1]], STEPS_PER_EPOCH)
      for f in fields)


def test_two_forms_of_one_duration_is_a_one_line_error():
  c = _config(**{"train.steps": 100})          # train.epochs keeps its default
  with pytest.raises(UserError) as e:
    config_lib.validate(c)
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith("train.epochs=300.0 and train.steps=100")
  assert message.endswith("allowed: exactly one of train.epochs, train.steps, train.examples "
                          "set, the others None")


def test_no_form_of_a_duration_is_a_one_line_error():
  c = _config(**{"admm.epochs": None})
  with pytest.raises(UserError, match=r"^none of them set: one duration; allowed: exactly one "
                     r"of admm\.epochs, admm\.steps, admm\.examples"):
    config_lib.validate(c)


def test_a_negative_or_fractional_step_count_is_refused():
  with pytest.raises(UserError, match=r"^pruning\.retrain_epochs=-1\.0 is not allowed; "
                     r"allowed: a number >= 0$"):
    config_lib.validate(_config(**{"pruning.retrain_epochs": -1.0}))
  c = _config(**{"train.epochs": None, "train.steps": -3})
  with pytest.raises(UserError, match=r"^train\.steps=-3 is not allowed; allowed: an integer "
                     ">= 0$"):
    config_lib.validate(c)


def test_a_method_given_zero_steps_trains_nothing_and_is_refused():
  c = _config(**{"train.epochs": None, "train.steps": 0})
  with pytest.raises(UserError, match=r"^train\.steps=0 is not allowed; allowed: a number > 0"):
    config_lib.validate(c)
