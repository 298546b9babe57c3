"""The config files shipped inside the package, so that `--config=configs/NAME.py` works from
any directory.

They live in `miajax/configs/` (in a wheel as package data); `configs/` at the root of a
checkout is a link to that folder. A `--config` path that exists relative to the working
directory is always taken as it is; one that does not, spelled `configs/NAME.py[:ARG]`, is
looked up among the shipped files.
"""

import difflib
from pathlib import Path

DIR = Path(__file__).resolve().parent / "configs"
DEFAULT = DIR / "default.py"


def names() -> list[str]:
  """The shipped config files' names, e.g. "default.py"."""
  return sorted(p.name for p in DIR.glob("*.py"))


def resolve(value: str) -> str:
  """`value` (PATH[:ARG], as --config takes it) with a missing configs/NAME.py replaced by the
  shipped file's path; anything else unchanged."""
  path, sep, arg = value.partition(":")
  local = Path(path)
  if local.exists() or local.is_absolute() or local.parent.name != "configs":
    return value
  shipped = DIR / local.name
  return f"{shipped}{sep}{arg}" if shipped.is_file() else value


def resolve_argv(argv: list[str]) -> list[str]:
  """argv with every --config=PATH[:ARG] (or `--config PATH`) resolved; flags after `--` and
  --config.KEY overrides are left alone."""
  out = list(argv[:1])
  take_next = False
  for i, a in enumerate(argv[1:], 1):
    if a == "--":
      return out + argv[i:]
    flag, eq, value = a.partition("=")
    if take_next:
      a = resolve(a)
    elif flag in ("--config", "-config") and eq:
      a = f"{flag}={resolve(value)}"
    take_next = a in ("--config", "-config")
    out.append(a)
  return out


def nearest(path: str, n: int = 3) -> list[str]:
  """Up to `n` shipped configs whose names are close to PATH's (as configs/NAME.py), best
  first. A name is compared whole and word by word ("lenet" is close to mnist_lenet5), so a
  short fragment finds the configs it names."""
  want = Path(path).stem

  def ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()

  stems = [Path(name).stem for name in names()]
  scored = [(max([ratio(want, s)] + [ratio(want, w) for w in s.split("_")]), ratio(want, s), s)
            for s in stems]
  return [f"configs/{s}.py" for best, _, s in sorted(scored, reverse=True)[:n] if best >= 0.7]
