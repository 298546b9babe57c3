"""python -m miajax.main [--config=configs/NAME.py[:smoke]] --workdir=DIR [--config.KEY=VALUE]"""

import logging as std_logging
import sys
from pathlib import Path

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from miajax.errors import UserError

_DEFAULT_CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "default.py")

_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "Config file (configs/NAME.py[:smoke]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/miajax", "Directory for checkpoints and results.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0 for a multi-process run; 'auto' lets JAX detect a TPU pod or a "
    "SLURM/Open MPI allocation. Unset: one process.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


class _QuietLibraries(std_logging.Filter):
  """Keeps the run's own progress lines; libraries' INFO chatter (Orbax logs every save)."""

  def filter(self, record):
    if "rdp_privacy_accountant" in record.pathname:
      return False  # "excluding this order": the accountant's normal course, not a problem
    return record.levelno >= std_logging.WARNING or "/miajax/" in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  import jax  # pylint: disable=g-import-not-at-top
  if _COORDINATOR.value == "auto":
    jax.distributed.initialize()
  elif _COORDINATOR.value:
    # CPU processes need gloo for collectives; accelerators ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from miajax import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except (flags.Error, UserError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def run():
  """Runs main; bad input is one line on stderr and exit status 2, never a traceback."""
  try:
    app.run(main, flags_parser=_parse_flags)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except FloatingPointError as e:
    print(f"error: training diverged: {e}", file=sys.stderr)
    sys.exit(1)
  except Exception as e:  # pylint: disable=broad-except
    if type(e).__name__ != "Preempted":
      raise
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(143)


if __name__ == "__main__":
  run()
