"""python -m miajax.main [--config=configs/NAME.py[:smoke]] --workdir=DIR [--config.KEY=VALUE]"""

import functools
import logging as std_logging
import os
import re
import sys
from pathlib import Path

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from miajax.errors import Interrupted, UserError, check_package

_DEFAULT_CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "default.py")

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/miajax", "Directory for checkpoints and results.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0 for a multi-process run; 'auto' lets JAX detect a TPU pod or a "
    "SLURM/Open MPI allocation. Unset: one process.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CONFIG = None   # defined by run(): defining it already reads the config file and overrides


def _define_config_flag() -> None:
  global _CONFIG
  if _CONFIG is None:
    _CONFIG = config_flags.DEFINE_config_file(
        "config", _DEFAULT_CONFIG, "Config file (configs/NAME.py[:smoke]).", lock_config=True)


def _one_line(e: BaseException) -> str:
  """The message a user can act on, from the ways ml_collections and absl report bad flags."""
  text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
  if "Error whilst parsing config file" in text:
    # get_config's own error, re-raised with its traceback folded into the message.
    last = [l for l in text.splitlines() if l.strip()][-1]
    return last.split(": ", 1)[-1] if last.startswith(("miajax.", "ValueError")) else last
  missing = re.search(r'Did you mean "(\w+)" instead of "(\w+)"', text)
  if missing:
    right, wrong = missing.groups()
    flag = next((a.split("=")[0] for a in sys.argv[1:] if a.startswith("--config.") and
                 re.search(rf"\.{wrong}(\.|=|$)", a.split("=")[0])), f"--config.{wrong}")
    fixed = re.sub(rf"\.{wrong}(\.|$)", rf".{right}\1", flag, count=1)
    return f"{flag}: no such config key; allowed: the config's keys, e.g. {fixed}"
  if isinstance(e, (KeyError, AttributeError)):
    key = text.strip("'\"\\")
    flag = next((a.split("=")[0] for a in sys.argv[1:] if a.startswith("--config.") and
                 re.search(rf"\.{re.escape(key)}(\.|=|$)", a.split("=")[0])), f"--config.{key}")
    return f"{flag}: no such config key; allowed: the keys of miajax/config.py's base()"
  return text.splitlines()[0] if text else type(e).__name__


# This package's own directory: a clone or a venv under a folder named "miajax" must not
# make every library's file look like ours.
_PACKAGE_DIR = os.path.join(os.path.realpath(os.path.dirname(__file__)), "")


@functools.lru_cache(maxsize=None)
def _ours(pathname: str) -> bool:
  return os.path.realpath(pathname).startswith(_PACKAGE_DIR)


class _QuietLibraries(std_logging.Filter):
  """Keeps the run's own progress lines and every library's warnings; drops libraries' INFO
  chatter (Orbax logs every save, JAX every backend it does not find)."""

  def filter(self, record):
    if "rdp_privacy_accountant" in record.pathname:
      return False  # "excluding this order": the accountant's normal course, not a problem
    if record.getMessage().endswith("has no dataset_info.json"):
      return False  # TFDS, about the folder it is about to build: normal on a first run
    return record.levelno >= std_logging.WARNING or _ours(record.pathname)


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
  try:
    config = _CONFIG.value
    config.get("seed")        # a config file that could not be read raises on first access
  except OSError as e:
    raise UserError(_unreadable_config(e)) from None
  train.train_and_evaluate(config, _WORKDIR.value)


def _unreadable_config(e: OSError) -> str:
  path = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--config=")),
              _DEFAULT_CONFIG)
  why = "no such file" if not Path(path.split(":")[0]).is_file() else str(e).splitlines()[0]
  return (f"--config={path}: cannot read it ({why}); allowed: a config file such as "
          "configs/default.py or configs/default.py:smoke")


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except (flags.Error, UserError, KeyError, AttributeError) as e:
    print(f"error: {_one_line(e)}", file=sys.stderr)
    sys.exit(2)
  except OSError as e:   # an override met a config file that could not be read
    print(f"error: {_unreadable_config(e)}", file=sys.stderr)
    sys.exit(2)


def run():
  """Runs main; bad input is one line on stderr and exit status 2, never a traceback."""
  try:
    check_package()
    try:
      _define_config_flag()
    except (flags.Error, UserError, KeyError, AttributeError) as e:
      raise UserError(_one_line(e)) from None
    app.run(main, flags_parser=_parse_flags)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except Interrupted as e:
    print(str(e), file=sys.stderr)
    sys.exit(e.exit_code)
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
