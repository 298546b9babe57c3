"""python -m miajax.inspect DIR [--json]: what the checkpoints of a workdir or trial hold.

DIR is a workdir of `python -m miajax.main` or one of its trial directories. For every trial
it prints the method and seed, the checkpoint steps on disk, the latest step and its phase,
parameter counts per top-level layer, nonzero weights per prunable layer (counted from the
restored parameters), and whether results.json has a record for it. `--json` prints the same
as one JSON object.

Everything is read without modifying the workdir: checkpoints are opened read-only and
restored as NumPy arrays without a template (shapes and dtypes come from Orbax's metadata),
so any trial can be inspected without knowing its model or the devices it was saved from.
"""

import json
import re
from pathlib import Path
from typing import Any

from absl import flags

from miajax import cli
from miajax import tables
from miajax import workdir as workdir_lib
from miajax.errors import UserError

_TRIAL_NAME = re.compile(r"^(?P<method>.+)-seed(?P<seed>\d+)$")


def layer_params(params) -> dict[str, int]:
  """Parameter count per top-level layer (the first key of each leaf's path)."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  counts: dict[str, int] = {}
  for path, leaf in traverse_util.flatten_dict(params).items():
    counts[str(path[0])] = counts.get(str(path[0]), 0) + int(np.size(leaf))
  return counts


# ---------------------------------------------------------------- one trial


def _method_and_seed(name: str, trial_dir: Path, meta: dict, record: dict | None):
  """From the trial's config.json, else the checkpoint meta, results, or the trial's name."""
  found = _TRIAL_NAME.match(name)
  sources = [workdir_lib.trial_config(trial_dir) or {}, meta, record or {},
             found.groupdict() if found else {}]
  method = next((s["method"] for s in sources if s.get("method") is not None), None)
  seed = next((s["seed"] for s in sources if s.get("seed") is not None), None)
  return method, (int(seed) if seed is not None else None)


def inspect_trial(name: str, trial_dir: Path, record: dict | None) -> dict[str, Any]:
  """Everything `inspect` reports about one trial, as JSON-ready values."""
  from miajax import pruning  # pylint: disable=g-import-not-at-top
  info: dict[str, Any] = {
      "name": name, "dir": str(trial_dir), "method": None, "seed": None, "steps": [],
      "latest_step": None, "phase": None, "meta": None, "params": None, "params_total": None,
      "weights_total": None, "weights_nonzero": None, "compression_ratio": None,
      "layer_sparsity": None, "has_results": record is not None,
      "results_step": (record or {}).get("step"), "error": None}
  checkpoint_dir = trial_dir / "checkpoints"
  meta: dict = {}
  try:
    info["steps"] = workdir_lib.checkpoint_steps(checkpoint_dir)
    if info["steps"]:
      step = info["latest_step"] = info["steps"][-1]
      meta, variables = workdir_lib.restore(checkpoint_dir, step)
      params = variables["params"]
      counts = layer_params(params)
      info.update(phase=meta.get("phase"), meta=meta, params=counts,
                  params_total=sum(counts.values()), **pruning.compression(params))
  except Exception as e:  # pylint: disable=broad-except
    # One unreadable checkpoint should not hide the other trials: say what failed, go on.
    first = (str(e).splitlines() or [""])[0]
    first = first if len(first) <= 160 else first[:157] + "..."
    info["error"] = f"checkpoint not readable: {type(e).__name__}: {first}"
  info["method"], info["seed"] = _method_and_seed(name, trial_dir, meta, record)
  return info


def inspect(path: str | Path) -> dict[str, Any]:
  """The report on DIR as one JSON-ready object: {"path", "kind", "workdir", "trials"}."""
  target = workdir_lib.resolve(path)
  records = workdir_lib.load_records(target.workdir) if target.workdir else []
  by_name = {r["name"]: r for r in records}
  trials = [inspect_trial(n, d, by_name.get(n)) for n, d in target.trial_dirs.items()]
  return {
      "path": str(target.path), "kind": target.kind,
      "workdir": str(target.workdir) if target.workdir else None,
      "results_json": bool(target.workdir and (target.workdir / "results.json").is_file()),
      "results_records": len(records),
      "trials": trials,
  }


# ---------------------------------------------------------------- text



def _steps_text(steps: list[int]) -> str:
  if len(steps) <= 8:
    return ", ".join(map(str, steps))
  return f"{', '.join(map(str, steps[:3]))}, ..., {', '.join(map(str, steps[-3:]))}"


def format_text(report: dict[str, Any]) -> str:
  lines = []
  if report["kind"] == "workdir":
    n, records = len(report["trials"]), report["results_records"]
    results = (f"results.json: {records} record{'' if records == 1 else 's'}"
               if report["results_json"] else "no results.json yet")
    lines.append(f"workdir {report['path']}: {n} trial{'' if n == 1 else 's'}, {results}")
  for t in report["trials"]:
    seed = "?" if t["seed"] is None else t["seed"]
    done = (f"results: yes (step {t['results_step']})" if t["has_results"] else "results: no")
    lines += ["", f"{t['name']}  method {t['method'] or '?'}  seed {seed}  {done}"]
    if t["error"]:
      lines.append(f"  {t['error']}")
    if not t["steps"]:
      lines.append("  no checkpoints on disk")
      continue
    lines.append(f"  checkpoints: {_steps_text(t['steps'])}  (latest {t['latest_step']}, "
                 f"phase {t['phase'] or '?'})")
    if t["params"] is None:
      continue
    rows = [["layer", "params"]] + [[k, f"{v:,}"] for k, v in t["params"].items()]
    rows.append(["total", f"{t['params_total']:,}"])
    lines += tables.text(rows, rule=False, indent="  ")
    if t["layer_sparsity"]:
      rows = [["prunable layer", "weights", "nonzero", "kept"]]
      for layer, c in t["layer_sparsity"].items():
        kept = 100 * c["nonzero"] / c["total"] if c["total"] else 0.0
        rows.append([layer, f"{c['total']:,}", f"{c['nonzero']:,}", f"{kept:.2f}%"])
      ratio = t["compression_ratio"]
      kept = 100 * t["weights_nonzero"] / t["weights_total"] if t["weights_total"] else 0.0
      rows.append(["total", f"{t['weights_total']:,}", f"{t['weights_nonzero']:,}",
                   f"{kept:.2f}%"])
      lines += tables.text(rows, rule=False, indent="  ")
      lines.append(f"  compression ratio {ratio:.2f}x" if ratio else
                   "  compression ratio: no nonzero weights")
  return "\n".join(lines).lstrip("\n")


# ---------------------------------------------------------------- command line


def main(argv):
  if len(argv) != 2:
    what = "missing DIR" if len(argv) < 2 else f"unexpected arguments: {' '.join(argv[2:])}"
    raise UserError(f"{what}; usage: python -m miajax.inspect DIR [--json]")
  workdir_lib.quiet_orbax()
  report = inspect(argv[1])
  if flags.FLAGS.json:
    print(json.dumps(report, indent=1))
  else:
    print(format_text(report))


if __name__ == "__main__":
  # Defined only when run as a program: `miajax.report` imports this module for its helpers
  # and must not grow a --json flag.
  flags.DEFINE_bool("json", False, "Print one JSON object instead of the text tables.")
  cli.run(main)
