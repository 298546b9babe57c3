"""The commands' shared start and end: one-line errors with exit status 2, never a traceback.

`run(main)` runs an absl `main(argv)` for python -m miajax.inspect, .report, .export and
.audit: the package check first (`errors.check_package`), a bad flag or a `UserError` as
"error: ..." on stderr and exit status 2, a closed output pipe as a quiet exit.
"""

import os
import sys

from absl import app
from absl import flags

from miajax.errors import UserError, check_package


def parse_flags(argv):
  """absl's parser, with a bad flag reported as one line and exit status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def run(main_fn):
  """Runs `main_fn`; bad input is one line on stderr and exit status 2, never a traceback."""
  try:
    check_package()
    app.run(main_fn, flags_parser=parse_flags)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except BrokenPipeError:
    # Output piped into a reader that stopped (`| head`): not an error of ours. Point stdout at
    # /dev/null so the flush at exit does not raise again (as the Python docs advise).
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
