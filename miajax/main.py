"""python -m miajax.main [--config=configs/NAME.py[:smoke]] --workdir=DIR [--config.KEY=VALUE]"""

import functools
import json
import logging as std_logging
import os
import re
import sys
import textwrap
from pathlib import Path

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from miajax import cores
from miajax import paths
from miajax import shipped_configs
from miajax.errors import Interrupted, UserError, check_package

_DEFAULT_CONFIG = str(shipped_configs.DEFAULT)
# What the run in DIR was started with; a later run refused for a changed config names it.
COMMAND_JSON = "command.json"

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
  del argv  # positional arguments are refused by _parse_flags
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  import jax  # pylint: disable=g-import-not-at-top
  _compilation_cache(jax)
  if not _COORDINATOR.value and _strategy() == "devices":
    cores.claim(jax)        # one CPU device per core; multi-process launches set their own
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
  workdir = _WORKDIR.value
  try:
    _train_recording_command(train, config, workdir)
  except UserError as e:
    if _WORKDIR.present or not str(e).startswith(f"--workdir={workdir}"):
      raise
    # Forgetting --workdir meets whatever an earlier run left in the default: say so.
    raise UserError(str(e).replace(
        f"--workdir={workdir}", f"--workdir={workdir} (the default, as --workdir was not "
        "given)", 1)) from None


def _strategy() -> str | None:
  """train.strategy as configured, read before JAX starts its backend (None if unreadable:
  the config's own error comes later, in order)."""
  try:
    return _CONFIG.value.train.strategy
  except (OSError, AttributeError, KeyError):
    return None


# Programs that compile faster than this are not worth a cache file.
_CACHE_MIN_COMPILE_S = 0.2
_CACHE_MAX_BYTES = 4 << 30   # a size limit also turns on the cache's lock for many processes


def _compilation_cache(jax) -> None:
  """A persistent XLA compilation cache in the user's cache directory, so that a rerun, a
  resume or the next run of the same models loads its programs instead of compiling them again
  (a cache hit is bitwise what XLA compiled). JAX_COMPILATION_CACHE_DIR=DIR puts it elsewhere;
  set empty, it turns the cache off."""
  if "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return   # JAX reads it itself
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  jax.config.update("jax_compilation_cache_dir", os.path.join(base, "miajax", "jax"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", _CACHE_MIN_COMPILE_S)
  jax.config.update("jax_compilation_cache_max_size", _CACHE_MAX_BYTES)


def _train_recording_command(train, config, workdir: str) -> None:
  """train_and_evaluate, then DIR/command.json naming the config file the run was started
  with: written by the run that created DIR/config.json, or by the first resume that was not
  refused (runs started before this record existed), and never over an existing one."""
  import jax  # pylint: disable=g-import-not-at-top
  train.check_workdir(workdir)    # a bucket that cannot be written: one line, first
  config_json, record = paths.of(workdir) / "config.json", paths.of(workdir) / COMMAND_JSON
  new = not config_json.exists()
  refused = False
  try:
    train.train_and_evaluate(config, workdir)
  except UserError:
    refused = True
    raise
  finally:
    try:
      if ((new or not refused) and jax.process_index() == 0 and config_json.exists()
          and not record.exists()):
        record.write_text(json.dumps({"config": _config_arg(), "argv": sys.argv[1:]},
                                     indent=1))
    except Exception:  # pylint: disable=broad-except
      pass   # a record for messages only (OSError, or a bucket's own errors): never fatal


def _config_arg() -> str:
  """--config's value as given on the command line (the last one wins), or the default's."""
  value = "configs/default.py"
  args = sys.argv[1:]
  for i, a in enumerate(args):
    if a == "--":
      break
    flag, eq, rest = a.partition("=")
    if flag in ("--config", "-config"):
      value = rest if eq else (args[i + 1] if i + 1 < len(args) else value)
  return value


def _unreadable_config(e: OSError) -> str:
  path = _config_arg()
  file = shipped_configs.resolve(path).split(":")[0]
  if Path(file).is_file():
    return (f"--config={path}: cannot read it ({str(e).splitlines()[0]}); allowed: a "
            "config file such as configs/default.py or configs/default.py:smoke")
  arg = path.partition(":")[1] + path.partition(":")[2]
  near = [n + arg for n in shipped_configs.nearest(file)]
  if near:
    names = ", ".join(near[:-1]) + (" or " if len(near) > 1 else "") + near[-1]
    return (f"--config={path}: cannot read it (no such file); allowed: a config file, e.g. "
            f"the nearest shipped names {names}")
  return (f"--config={path}: cannot read it (no such file); allowed: a config file such as "
          "configs/default.py or configs/default.py:smoke")


_HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort")


def usage() -> str:
  """What --help prints: the command line, its main flags, the shipped configs, the docs."""
  names = textwrap.fill(", ".join(n.removesuffix(".py") for n in shipped_configs.names()),
                        width=94, initial_indent=" " * 34, subsequent_indent=" " * 34)
  return f"""\
usage: python -m miajax.main [--config=configs/NAME.py[:ARG]] [--workdir=DIR] [--config.KEY=VALUE ...]

Trains and audits every trial of a config; the same command again resumes from DIR.

  --config=configs/NAME.py[:ARG]  the config file (default configs/default.py); ARG shrinks or
                                  varies it, e.g. :smoke for a quick local check. Shipped:
{names}
  --workdir=DIR                   checkpoints, logs and results (default /tmp/miajax), or
                                  gs://BUCKET/PATH; a new DIR for each new run
  --config.KEY=VALUE              changes one config key, e.g. --config.train.epochs=2
  --coordinator_address=HOST:PORT|auto --num_processes=N --process_id=I
                                  one run over several processes (launch/README.md)

Docs: docs/README.md in the miajax repository (docs/config.md: every key and config file).
Then: python -m miajax.inspect DIR, python -m miajax.report DIR, tensorboard --logdir DIR.
--helpfull lists every flag, the libraries' included."""


def _unexpected(args: list[str]) -> str:
  """The one line for positional arguments: a config path belongs after --config=."""
  quoted = ", ".join(repr(a) for a in args)
  what = f"unexpected argument{'s' if len(args) > 1 else ''} {quoted}"
  config = next((a for a in args if a.partition(":")[0].endswith(".py")), None)
  if config:
    return (f"{what}; allowed: --config={config}, --workdir=DIR and --config.KEY=VALUE "
            "(python -m miajax.main --help)")
  return (f"{what}; allowed: flags only, --config=configs/NAME.py[:ARG], --workdir=DIR and "
          "--config.KEY=VALUE (python -m miajax.main --help)")


def _parse_flags(argv):
  try:
    rest = flags.FLAGS(shipped_configs.resolve_argv(argv))
  except (flags.Error, UserError, KeyError, AttributeError) as e:
    print(f"error: {_one_line(e)}", file=sys.stderr)
    sys.exit(2)
  except OSError as e:   # an override met a config file that could not be read
    print(f"error: {_unreadable_config(e)}", file=sys.stderr)
    sys.exit(2)
  if len(rest) > 1:
    print(f"error: {_unexpected(rest[1:])}", file=sys.stderr)
    sys.exit(2)
  return rest


def run():
  """Runs main; bad input is one line on stderr and exit status 2, never a traceback."""
  args = sys.argv[1:sys.argv.index("--")] if "--" in sys.argv else sys.argv[1:]
  if any(a in _HELP_FLAGS for a in args):
    print(usage())
    sys.exit(0)
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
