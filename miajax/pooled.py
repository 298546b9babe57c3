"""Runs of one config over disjoint seeds, pooled: `python -m miajax.pooled DIR DIR ...`.

A trial is a function of its config and seed (and, with `split_per_trial`, of its own
membership split, drawn from the seed), not of the other seeds in its run. So a config run
over seeds 0-2 in one workdir and over seeds 3-4 in another holds exactly the trials one run
over seeds 0-4 would: their records are pooled, and the method table and the paired table
(`paired`) are printed over all of them. Workdirs whose configs differ in anything but `seeds`,
or that share a seed, are refused in one line: their trials would not be one experiment.
"""

import json
import sys

from miajax import cli
from miajax import config as config_lib
from miajax import paired
from miajax import paths
from miajax import results
from miajax import workdir as workdir_lib
from miajax.errors import UserError

USAGE = "usage: python -m miajax.pooled DIR DIR [DIR ...]"
# Config fields a pooled run may differ in: the seeds, and where its numbers were computed.
FREE = ("seeds",)


def _config(workdir) -> dict:
  path = workdir / "config.json"
  if not path.is_file():
    raise UserError(f"{workdir} has no config.json; allowed: workdirs of python -m miajax.main")
  return workdir_lib.read_json(path)


def _differences(a: dict, b: dict, default: dict, prefix: str = "") -> list[str]:
  """The dotted keys in which config dicts `a` and `b` differ, `FREE` keys aside. A key one
  of them lacks (written before the key existed) counts as `default`'s value, the value
  that run used."""
  out = []
  for key in sorted(set(a) | set(b)):
    name = f"{prefix}{key}"
    if name in FREE:
      continue
    x, y = a.get(key, default.get(key)), b.get(key, default.get(key))
    if isinstance(x, dict) and isinstance(y, dict):
      out += _differences(x, y, default.get(key) or {}, name + ".")
    elif x != y:
      out.append(name)
  return out


def pool(dirs) -> list[dict]:
  """The records of workdirs `dirs`, one config over disjoint seeds, in the order given.

  Raises:
    UserError: fewer than two workdirs, a workdir without results, configs that differ in
      more than `seeds`, or a seed in two workdirs.
  """
  if len(dirs) < 2:
    raise UserError(f"{len(dirs)} workdir given; {USAGE}")
  workdirs = [paths.of(d) for d in dirs]
  configs = [_config(w) for w in workdirs]
  default = json.loads(config_lib.base().to_json_best_effort())
  for w, c in zip(workdirs[1:], configs[1:]):
    differ = _differences(configs[0], c, default)
    if differ:
      raise UserError(f"{w} was run with another config than {workdirs[0]} (differs in "
                      f"{', '.join(differ[:5])}{', ...' if len(differ) > 5 else ''}); allowed: "
                      "workdirs of one config that differ only in seeds")
  seen: dict[int, object] = {}
  for w, c in zip(workdirs, configs):
    for s in c["seeds"]:
      if s in seen:
        raise UserError(f"seed {s} is in both {seen[s]} and {w}; allowed: workdirs over "
                        "disjoint seeds")
      seen[s] = w
  records = []
  for w in workdirs:
    got = workdir_lib.load_records(w)
    if not got:
      raise UserError(f"{w} has no results.json records; allowed: finished runs")
    records += got
  return records


def main(argv):
  records = pool(argv[1:])
  print(results.table(records))
  pairs = paired.table(paired.compare(records), matches=paired.matched(records))
  if pairs:
    print("\npaired with the baseline of the same seed and split:")
    print(pairs)
  print(f"\npooled {len(records)} trials over seeds "
        f"{', '.join(str(s) for s in sorted({r['seed'] for r in records}))}", file=sys.stderr)


if __name__ == "__main__":
  cli.run(main)
