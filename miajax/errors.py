"""The one exception a user can act on.

Raised for bad input (a config value, a missing dataset, an unwritable workdir). The command
line prints its message as one line and exits with status 2; anything else is a bug and keeps
its traceback.
"""


class UserError(ValueError):
  """Bad input: the message names the field, the value given and what is allowed."""


class Interrupted(Exception):
  """SIGINT or SIGTERM stopped the run after saving a checkpoint; rerunning resumes.

  `exit_code` is the shell's convention for the signal: 130 for SIGINT, 143 for SIGTERM.
  """

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code
