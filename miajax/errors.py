"""The one exception a user can act on.

Raised for bad input (a config value, a missing dataset, an unwritable workdir). The command
line prints its message as one line and exits with status 2; anything else is a bug and keeps
its traceback.
"""

import math


class UserError(ValueError):
  """Bad input: the message names the field, the value given and what is allowed."""


class NotPrepared(UserError):
  """A dataset that is not on this machine yet (unprepared, or its local files missing).

  `reason` is the short form for a log line, e.g. "is not prepared in DIR"; a `:smoke` run
  catches this one error to fall back to synthetic images (`miajax.data.synthetic`).
  """

  def __init__(self, message: str, reason: str):
    super().__init__(message)
    self.reason = reason


class Interrupted(Exception):
  """SIGINT or SIGTERM stopped the run after saving a checkpoint; rerunning resumes.

  `exit_code` is the shell's convention for the signal: 130 for SIGINT, 143 for SIGTERM.
  """

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code


def check_package() -> None:
  """Raises UserError unless `import math
import miajax` gives this package.

  A folder named `miajax` in the working directory (a workdir such as /tmp/miajax, or a
  `report/` folder inside one) is a namespace package that Python puts before an editable
  install's import hook: its modules still load through the hook, but `miajax` itself is
  the folder, so `miajax.__version__` is missing hours into a run and `miajax.report` is the
  folder. Checked before any work.
  """
  import os  # pylint: disable=g-import-not-at-top
  import miajax  # pylint: disable=g-import-not-at-top
  here = os.path.dirname(os.path.realpath(__file__))
  found = getattr(miajax, "__file__", None)
  if found is None or os.path.dirname(os.path.realpath(found)) != here:
    where = found or ", ".join(getattr(miajax, "__path__", [])) or "?"
    raise UserError(
        f"`import miajax` found {where}, not the installed package at {here} (a folder named "
        "miajax in the working directory shadows it); allowed: run from another directory, or "
        "install with pip install -e . --config-settings editable_mode=compat")


def finite_positive(x) -> bool:
  """A config number that must be finite and > 0 (learning rates, epsilons, norms)."""
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0
