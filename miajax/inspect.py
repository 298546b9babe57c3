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

import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from absl import app
from absl import flags
from absl import logging

from miajax.errors import UserError, check_package

_ALLOWED = ("allowed: a --workdir of python -m miajax.main (holding results.json or trial "
            "directories) or one trial directory (holding checkpoints/)")
_TRIAL_NAME = re.compile(r"^(?P<method>.+)-seed(?P<seed>\d+)$")


# ---------------------------------------------------------------- finding trials


@dataclasses.dataclass(frozen=True)
class Target:
  """What a DIR argument names: a workdir and its trials, or a single trial."""
  path: Path
  kind: str                       # "workdir" or "trial"
  workdir: Path | None            # the workdir holding results.json (None when unknown)
  trial_dirs: dict[str, Path]     # trial name -> directory, in display order


def read_json(path: Path) -> Any:
  """A JSON file's contents; a malformed file is a UserError naming it."""
  try:
    return json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f"{path} is not readable JSON ({e}); allowed: the file as "
                    "python -m miajax.main writes it") from None


def _trial_config(path: Path) -> dict | None:
  """A trial's config.json "trial" entry, or None when there is none."""
  config = path / "config.json"
  if not config.is_file():
    return None
  try:
    trial = json.loads(config.read_text()).get("trial")
  except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
    return None
  return trial if isinstance(trial, dict) else None


def is_trial_dir(path: Path) -> bool:
  return path.is_dir() and ((path / "checkpoints").is_dir() or _trial_config(path) is not None)


def load_records(workdir: Path) -> list[dict]:
  """results.json's records ([] when absent); a malformed file is a UserError."""
  path = workdir / "results.json"
  if not path.exists():
    return []
  records = read_json(path)
  if not isinstance(records, list) or not all(
      isinstance(r, dict) and isinstance(r.get("name"), str) for r in records):
    raise UserError(f"{path} is not a list of result records with a name each; allowed: "
                    "results.json as python -m miajax.main writes it")
  return records


def resolve(path: str | Path) -> Target:
  """Classifies DIR as a workdir or a trial directory; anything else is a UserError."""
  path = Path(path)
  if not path.exists():
    raise UserError(f"{path} does not exist; {_ALLOWED}")
  if not path.is_dir():
    raise UserError(f"{path} is a file, not a directory; {_ALLOWED}")
  if is_trial_dir(path):
    parent = path.parent
    workdir = parent if (parent / "results.json").is_file() else None
    return Target(path, "trial", workdir, {path.name: path})
  children = sorted(p for p in path.iterdir() if is_trial_dir(p))
  if not children and not (path / "results.json").is_file():
    raise UserError(f"{path} is neither a workdir nor a trial directory (no results.json, "
                    f"no trial directories, no checkpoints/); {_ALLOWED}")
  # results.json's order first (the run's order), then what is on disk only.
  order = [r["name"] for r in load_records(path)]
  dirs = {p.name: p for p in children}
  names = list(dict.fromkeys([n for n in order if n in dirs] + sorted(dirs)))
  return Target(path, "workdir", path, {n: dirs[n] for n in names})


# ---------------------------------------------------------------- checkpoints


def quiet_orbax() -> None:
  """Keeps absl logging to errors: read-only managers log warnings that they are read-only."""
  logging.set_verbosity(logging.ERROR)


def open_manager(checkpoint_dir: Path):
  """A read-only Orbax CheckpointManager that knows the handlers of "state" and "meta"."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  options = ocp.CheckpointManagerOptions(read_only=True, create=False)
  return ocp.CheckpointManager(
      checkpoint_dir.absolute(), options=options,
      item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                     "meta": ocp.JsonCheckpointHandler()})


def checkpoint_steps(checkpoint_dir: Path) -> list[int]:
  if not checkpoint_dir.is_dir():
    return []
  manager = open_manager(checkpoint_dir)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def restore(checkpoint_dir: Path, step: int) -> tuple[dict, Any]:
  """(meta, params) of one checkpoint, params as a tree of NumPy arrays.

  No template is needed: the tree structure, shapes and dtypes come from the checkpoint's
  metadata, and every leaf is restored as np.ndarray (so the devices and sharding it was saved
  with do not matter). Only the params subtree is read when the state has one.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  # Before reading: a failed read's leftovers may be reported while the error still unwinds.
  _ignore_closed_loop_callbacks()
  manager = open_manager(checkpoint_dir)
  try:
    tree = manager.item_metadata(step)["state"].tree
    sub = {"params": tree["params"]} if isinstance(tree, dict) and "params" in tree else tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), sub)
    item = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), sub)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item=item, restore_args=as_numpy,
                                     partial_restore=sub is not tree),
        meta=ocp.args.JsonRestore()))
  finally:
    manager.close()
  state = restored.state
  params = state["params"] if isinstance(state, dict) and "params" in state else state
  return dict(restored.meta or {}), params


def _ignore_closed_loop_callbacks() -> None:
  """Drops the "Event loop is closed" errors a failed read leaves behind (once per process).

  When an Orbax read fails, TensorStore reads still in flight complete after Orbax's event loop
  has closed; each completion's callback then fails and is reported as an unraisable exception
  (a bare traceback, at some later garbage collection or at exit). The read's own error has
  been reported by then, so these say nothing: this hook drops exactly them, nothing else.
  """
  previous = sys.unraisablehook
  if getattr(previous, "_drops_closed_loop", False):
    return

  def hook(unraisable):
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
      return
    previous(unraisable)

  hook._drops_closed_loop = True
  sys.unraisablehook = hook


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
  sources = [_trial_config(trial_dir) or {}, meta, record or {},
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
    info["steps"] = checkpoint_steps(checkpoint_dir)
    if info["steps"]:
      step = info["latest_step"] = info["steps"][-1]
      meta, params = restore(checkpoint_dir, step)
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
  target = resolve(path)
  records = load_records(target.workdir) if target.workdir else []
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


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return [indent + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths))).rstrip()
          for r in rows]


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
    lines += _table(rows)
    if t["layer_sparsity"]:
      rows = [["prunable layer", "weights", "nonzero", "kept"]]
      for layer, c in t["layer_sparsity"].items():
        kept = 100 * c["nonzero"] / c["total"] if c["total"] else 0.0
        rows.append([layer, f"{c['total']:,}", f"{c['nonzero']:,}", f"{kept:.2f}%"])
      ratio = t["compression_ratio"]
      kept = 100 * t["weights_nonzero"] / t["weights_total"] if t["weights_total"] else 0.0
      rows.append(["total", f"{t['weights_total']:,}", f"{t['weights_nonzero']:,}",
                   f"{kept:.2f}%"])
      lines += _table(rows)
      lines.append(f"  compression ratio {ratio:.2f}x" if ratio else
                   "  compression ratio: no nonzero weights")
  return "\n".join(lines).lstrip("\n")


# ---------------------------------------------------------------- command line


def main(argv):
  if len(argv) != 2:
    what = "missing DIR" if len(argv) < 2 else f"unexpected arguments: {' '.join(argv[2:])}"
    raise UserError(f"{what}; usage: python -m miajax.inspect DIR [--json]")
  quiet_orbax()
  report = inspect(argv[1])
  if flags.FLAGS.json:
    print(json.dumps(report, indent=1))
  else:
    print(format_text(report))


def parse_flags(argv):
  """absl's parser, with a bad flag reported as one line and exit status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def run(main_fn=main):
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


if __name__ == "__main__":
  # Defined only when run as a program: `miajax.report` imports this module for its helpers
  # and must not grow a --json flag.
  flags.DEFINE_bool("json", False, "Print one JSON object instead of the text tables.")
  run()
