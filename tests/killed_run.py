"""`python tests/killed_run.py METHOD STEP ARGS...`: `python -m miajax.main ARGS...`, killed
with SIGKILL by itself once its checkpoint of METHOD at STEP is on disk, as a lost machine
would kill it: no handler runs, nothing is flushed or closed. Resume tests stop runs here, at
a step they choose, instead of racing a checkpoint they watch from outside.
"""

import os
import signal
import sys

from miajax import checkpoint
from miajax import main


def _die_after(method: str, step: int) -> None:
  save = checkpoint.TrialCheckpoints.save

  def save_then_die(self, at, state, meta):
    save(self, at, state, meta)
    if at == step and meta[0]["method"] == method:
      self.wait()                     # the checkpoint is complete; nothing else is
      os.kill(os.getpid(), signal.SIGKILL)

  checkpoint.TrialCheckpoints.save = save_then_die


if __name__ == "__main__":
  _die_after(sys.argv[1], int(sys.argv[2]))
  sys.argv = [sys.argv[0], *sys.argv[3:]]
  main.run()
