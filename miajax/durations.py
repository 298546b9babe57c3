"""Training durations: a phase's length given as epochs, steps or examples, in steps.

A duration is a config field named `<section>.<stem>epochs` (the form every shipped config
uses) with two alternatives beside it, `<stem>steps` and `<stem>examples`: `train.epochs`,
`train.steps`, `train.examples`; `pruning.pretrain_epochs`, `pruning.pretrain_steps`, ....
Exactly one of the three is set (not None), checked by `config.validate` (`problem`). The
alternatives exist for every phase of a registered defence (`Defence.phases`), whose steps
are read here alone (`Defence.phase_steps`).

Epochs count passes over the members at `data.batch_size`: steps = round(epochs x steps per
epoch). Examples count examples drawn: steps = round(examples / data.batch_size), so that
epochs x steps per epoch x batch size examples give the same steps as those epochs.
"""

import math
import numbers
from typing import Any

import ml_collections

from miajax.errors import UserError

FORMS = ("epochs", "steps", "examples")


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
  """round(epochs x steps_per_epoch).

  Args:
    epochs: a number >= 0.
    steps_per_epoch: steps of one pass over the members.
  """
  return int(round(epochs * steps_per_epoch))


def forms(field: str) -> tuple[str, ...]:
  """The config fields of one duration, epochs first, from its epochs field.

  Args:
    field: "section.<stem>epochs", e.g. "pruning.pretrain_epochs".

  Returns:
    ("section.<stem>epochs", "section.<stem>steps", "section.<stem>examples").
  """
  if not field.endswith("epochs"):
    raise ValueError(f"{field}: a duration's field ends in epochs")
  stem = field[:-len("epochs")]
  return tuple(stem + form for form in FORMS)


def alternatives(key: str) -> dict[str, None]:
  """The entries a section declares beside a duration's epochs key: {"<stem>steps": None,
  "<stem>examples": None} (`config.base` makes each an int placeholder, so that the command
  line can set it).

  Args:
    key: the epochs key within its section, e.g. "pretrain_epochs".
  """
  return dict.fromkeys(k.split(".")[1] for k in forms(f"section.{key}")[1:])


def add_alternatives(config, fields) -> None:
  """Gives each duration of `fields` its steps and examples entries in `config`: train.steps,
  train.examples, pruning.pretrain_steps, ...; None unless set (with the epochs entry then set
  to None). Each is a fresh int placeholder, so the command line can set it; one shared
  between configs would carry a value set in one into every other.

  Args:
    config: a ConfigDict holding the sections of `fields`.
    fields: the durations' epochs fields, e.g. ("train.epochs", "admm.epochs").
  """
  for field in fields:
    section, key = field.split(".")
    for alternative in alternatives(key):
      config[section][alternative] = ml_collections.config_dict.placeholder(int)


def _get(config, field: str) -> Any:
  section, key = field.split(".")
  return config[section].get(key)     # an older config.json may lack the alternatives


def given(config, field: str) -> dict[str, Any]:
  """{form's field: value} of the forms of `field`'s duration that `config` sets.

  Args:
    config: the run's config.
    field: the duration's epochs field, e.g. "train.epochs".
  """
  return {f: v for f in forms(field) if (v := _get(config, f)) is not None}


def problem(config, field: str) -> str | None:
  """The one-line error of `field`'s duration in `config`, or None where it is well formed:
  exactly one form set, epochs a finite number >= 0, steps and examples integers >= 0.

  Args:
    config: the run's config.
    field: the duration's epochs field.
  """
  options = forms(field)
  allowed = f"allowed: exactly one of {', '.join(options)} set, the others None"
  set_ = given(config, field)
  if len(set_) != 1:
    shown = " and ".join(f"{f}={v!r}" for f, v in set_.items()) or "none of them set"
    return f"{shown}: one duration; {allowed}"
  (f, v), = set_.items()
  if f == options[0]:
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
    return None if ok else f"{f}={v!r} is not allowed; allowed: a number >= 0"
  ok = isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0
  return None if ok else f"{f}={v!r} is not allowed; allowed: an integer >= 0"


def amount(config, field: str) -> float:
  """The set form's value of `field`'s duration (> 0: it trains at least something).

  Args:
    config: the run's config.
    field: the duration's epochs field.
  """
  _check(config, field)
  return next(iter(given(config, field).values()))


def steps(config, field: str, steps_per_epoch: int) -> int:
  """`field`'s duration in steps, whichever form `config` gives it in.

  Args:
    config: the run's config (`data.batch_size` converts examples).
    field: the duration's epochs field, e.g. "train.epochs".
    steps_per_epoch: steps of one pass over the members.

  Returns:
    The steps: round(epochs x steps_per_epoch), the steps, or round(examples / batch size).
  """
  _check(config, field)
  (f, v), = given(config, field).items()
  if f.endswith("epochs"):
    return epochs_to_steps(v, steps_per_epoch)
  if f.endswith("examples"):
    return int(round(v / config.data.batch_size))
  return int(v)


def _check(config, field: str) -> None:
  error = problem(config, field)
  if error is not None:
    raise UserError(error)
