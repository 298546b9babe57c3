"""The one exception a user can act on.

Raised for bad input (a config value, a missing dataset, an unwritable workdir). The command
line prints its message as one line and exits with status 2; anything else is a bug and keeps
its traceback.
"""


class UserError(ValueError):
  """Bad input: the message names the field, the value given and what is allowed."""
