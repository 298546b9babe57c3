"""The per-trial record of `results.json` / `results.csv`, and the printed comparison.

Every field of the schema is present in every record; a field not computed is None (null),
never a made-up number.
"""

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats

from miajax import paths
from miajax import tables

FIELDS = (
    "name", "method", "dataset", "model", "seed", "step", "train_accuracy", "test_accuracy",
    "attack_accuracy", "attack_auc", "attack_tpr_at_fpr", "gain", "threshold_attacks",
    "weights_total", "weights_nonzero", "compression_ratio", "layer_sparsity", "dp_epsilon",
    "dp_delta", "wall_seconds", "checkpoint_dir", "versions")
# Computed as well, beyond the schema: the Eq. 10 JS estimate, per-class gaps (Fig. 4).
EXTRA_FIELDS = ("js_divergence", "per_class", "dp_noise_multiplier", "dp_sampling",
                "dp_model_norm", "dp_max_batch", "lira", "group", "sweep", "selection_gain",
                "notes",
                # Algorithm 1's, on split 0 (see selection.py): raw per-fold gains beside the
                # clipped mean, and the accuracy on the reference non-members.
                "selection_gain_folds", "selection_accuracy",
                # Accuracy on split 0's members: the gap controls are matched on.
                "selection_train_accuracy",
                "split_seed",
                # The NN attack's accuracy at p >= 0.5, its epochs and decision threshold
                # (both chosen on held-out split 0); 95% bootstrap intervals over the audit
                # examples, shaped like the fields they bound.
                "attack_accuracy_at_half", "attack_epochs", "attack_threshold", "intervals",
                # The headline: the strongest attack chosen on split 0 alone (its name and
                # every candidate's split-0 AUC), with its numbers on the audit split.
                "headline_attack", "headline_auc", "headline_accuracy", "headline_tpr_at_fpr",
                "headline_selection",
                # Opt-in audits beyond the threshold attacks: the pruning-aware attack
                # (audits/samia.py) and the differencing attack (audits/differencing.py).
                "samia", "differencing",
                # Empirical epsilon (audits/epsilon.py): the lower bound on the privacy loss
                # (from the canaries, else the ordinary audit split), its confidence, the
                # one-run bound on the canaries, the ordinary examples' bound, and the counts
                # and thresholds behind them.
                "epsilon_lower_bound", "epsilon_lower_bound_confidence",
                "epsilon_lower_bound_one_run", "epsilon_lower_bound_ordinary", "epsilon_audit",
                # True where a :smoke run trained on synthetic stand-ins (miajax.data.synthetic);
                # `dataset` then reads "NAME (synthetic)". Absent for real data.
                "synthetic")


def record(**fields: Any) -> dict[str, Any]:
  unknown = set(fields) - set(FIELDS) - set(EXTRA_FIELDS)
  if unknown:
    raise KeyError(f"not in the results schema: {sorted(unknown)}")
  return {name: fields.get(name) for name in FIELDS} | {
      k: v for k, v in fields.items() if k not in FIELDS}


def group_of(r: dict) -> str:
  """A record's row in every table: its sweep group (method and swept values), else its
  method.

  Args:
    r: a record.
  """
  return r.get("group") or r["method"]


def group_records(records: Iterable[dict]) -> dict[str, list[dict]]:
  """{group: its records}, groups and records in the order given.

  Args:
    records: the records, in the order their groups and rows are shown.
  """
  groups: dict[str, list[dict]] = {}
  for r in records:
    groups.setdefault(group_of(r), []).append(r)
  return groups


def versions() -> dict[str, str]:
  import flax, jax, miajax  # pylint: disable=g-import-not-at-top,multiple-imports
  return {"miajax": miajax.__version__, "jax": jax.__version__, "flax": flax.__version__}


def load(workdir: str | Path) -> list[dict]:
  """The records of a run's results.json.

  Args:
    workdir: the run's directory (local or gs://).

  Returns:
    Its records, or [] where it has none yet.
  """
  path = paths.of(workdir) / "results.json"
  return json.loads(path.read_text()) if path.exists() else []


def write(workdir: str | Path, records: Sequence[dict]) -> None:
  """Writes results.json and results.csv atomically (a crash never leaves half a file).

  Args:
    workdir: the run's directory.
    records: every record of the run.
  """
  workdir = paths.of(workdir)
  paths.write_text(workdir / "results.json", json.dumps(list(records), indent=1))
  rows = [flatten(r) for r in records]
  columns = list(dict.fromkeys(k for row in rows for k in row))
  text = io.StringIO(newline="")
  writer = csv.DictWriter(text, columns)
  writer.writeheader()
  writer.writerows(rows)
  paths.write_text(workdir / "results.csv", text.getvalue())


def flatten(r: dict, prefix: str = "") -> dict:
  """{"a": {"b": 1}} -> {"a.b": 1}.

  Args:
    r: a record, or a part of one.
    prefix: put before every key.
  """
  out = {}
  for k, v in r.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def mean_interval(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
  """Mean and half-width of its 95% t-interval over seeds (None with one value or none).

  Args:
    values: one number per seed; None and NaN are left out.

  Returns:
    (mean, half-width, the count of values used).
  """
  xs = np.asarray([v for v in values if v is not None and not math.isnan(v)], np.float64)
  if len(xs) == 0:
    return None, None, 0
  if len(xs) == 1:
    return float(xs[0]), None, 1
  half = stats.t.ppf(0.975, len(xs) - 1) * xs.std(ddof=1) / math.sqrt(len(xs))
  return float(xs.mean()), float(half), len(xs)


Column = tables.Column

# The printed comparison's own columns, around those the audits declare (`Audit.columns`):
# the model's accuracies first; then, after the membership-split audits' columns, the headline
# across them, the weights left and DP's accounted epsilon. Getters return None when not
# computed.
MODEL_COLUMNS = (
    Column("test acc", lambda r: r["test_accuracy"], "pct"),
    Column("train acc", lambda r: r["train_accuracy"], "pct"),
)
TRIAL_COLUMNS = (
    # The strongest attack chosen on split 0 alone (evaluate.audit), measured on the audit
    # split; the cell names it.
    Column("best attack AUC", lambda r: r.get("headline_auc"), "f3",
           interval=lambda r: (r.get("intervals") or {}).get("headline_auc"),
           named=lambda r: r.get("headline_attack")),
    Column("nonzero", lambda r: r["weights_nonzero"], "int"),
    Column("epsilon", lambda r: r["dp_epsilon"], "f2"),
)


def _measured(records: Sequence[dict]) -> list:
  """The "lira"-layout audits whose fields some record holds: their columns are shown."""
  from miajax import audits  # pylint: disable=g-import-not-at-top
  return [a for a in audits.registered() if a.layout == "lira" and a.columns and
          any(r.get(f) for r in records for f in a.fields)]


def columns(records: Sequence[dict] = ()) -> tuple[Column, ...]:
  """The printed comparison's columns for `records`.

  Args:
    records: the records shown; a LiRA audit's columns come only where one of them holds its
      fields (none without records).

  Returns:
    MODEL_COLUMNS, every membership-split audit's `columns` (registry order), TRIAL_COLUMNS,
    then the measured LiRA audits' columns.
  """
  from miajax import audits  # pylint: disable=g-import-not-at-top
  per_trial = tuple(c for a in audits.registered() if a.layout == "splits" for c in a.columns)
  return (MODEL_COLUMNS + per_trial + TRIAL_COLUMNS +
          tuple(c for a in _measured(records) for c in a.columns))


SPLITS_CAPTION = ("±: 95% t-interval over the seeds (each seed with its own membership split "
                  "and audit set: training randomness and the split's sampling)")
SEEDS_CAPTION = ("±: 95% t-interval over the seeds (training randomness only: all trials "
                 "share one membership split and one audit set)")
BOOTSTRAP_CAPTION = ("[lo,hi]: one trial; 95% stratified bootstrap interval over its audit "
                     "examples (which examples were audited, not training randomness)")
# What the short headers mean, below every table; a LiRA audit's `legend` where its columns are.
LEGEND = (
    "chance: 50% attack acc, 0.500 AUC. attack acc/AUC: the NN attack (attack.kind) on the "
    "audit split",
    "loss AUC: a global loss-threshold attack's AUC. nonzero: nonzero prunable weights (conv "
    "and dense kernels)",
    "best attack AUC: the audit-split AUC of the attack strongest on split 0 alone, named: nn "
    "(the NN attack),",
    "  loss/confidence/entropy/logit (one global threshold on that score), *_class (one per "
    "class)",
)


def names(values: Iterable[str | None]) -> str | None:
  """One name, or each with its count ("loss_class:2,nn:1"), most frequent first; None if none.

  Args:
    values: one name per trial, None where it has none.
  """
  counts: dict[str, int] = {}
  for v in values:
    if v is not None:
      counts[v] = counts.get(v, 0) + 1
  if len(counts) <= 1:
    return next(iter(counts), None)
  return ",".join(f"{k}:{n}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _fmt(mean, half, kind, bounds=None) -> str:
  if mean is None:
    return "-"
  scale, spec = tables.FORMATS[kind]
  text = format(mean * scale, spec)
  if bounds is not None:
    lo, hi = (format(b * scale, spec) for b in bounds)
    return f"{text} [{lo},{hi}]"
  return text if half is None else f"{text}±{format(half * scale, spec)}"


def synthetic_banner(records: Sequence[dict]) -> list[str]:
  """The line that heads every table of a run on synthetic stand-ins; none for real data.

  Args:
    records: the records of the table.
  """
  fake = sorted({r["dataset"] for r in records if r.get("synthetic")})
  if not fake:
    return []
  return [f"SYNTHETIC DATA ({', '.join(fake)}): a :smoke check of the code path; these "
          "numbers say nothing about the real dataset"]


def table(records: Sequence[dict]) -> str:
  """The paper's Table 1/2-style comparison: one row per method, the mean and 95% t-interval
  over its trials (seeds) of every metric; in a LiRA run the row's trials are the target and
  its shadows, and only the target carries LiRA numbers.

  A row with a single trial has no interval over seeds; its attack columns show the trial's
  bootstrap interval over audit examples (`Column.interval`) where the record has one. Lines below
  the table say what each kind of interval covers, then what the columns mean (`LEGEND`,
  chance included); a line above it says SYNTHETIC where the run trained on synthetic
  stand-ins.

  Args:
    records: the records to show, each a row's trial.

  Returns:
    The table's lines, joined.
  """
  groups = group_records(records)
  shown_columns = columns(records)
  header = ["method", "seeds"] + [c.header for c in shown_columns]
  rows = [header]
  shown = set()
  for name, rs in groups.items():
    row = [name, str(len(rs))]
    for c in shown_columns:
      mean, half, n = mean_interval(c.get(r) for r in rs)
      bounds = None
      if n == 1 and c.interval is not None:
        bounds = next((c.interval(r) for r in rs if c.get(r) is not None), None)
      cell = _fmt(mean, half, c.format, bounds)
      label = names(c.named(r) for r in rs) if c.named and mean is not None else None
      row.append(cell if label is None else f"{cell} {label}")
      shown |= {"seeds"} if half is not None else {"bootstrap"} if bounds else set()
    rows.append(row)
  lines = synthetic_banner(records) + tables.text(rows)
  own_splits = len({json.dumps(r.get("split_seed")) for r in records}) > 1
  lines += [SPLITS_CAPTION if own_splits else SEEDS_CAPTION] if "seeds" in shown else []
  lines += [BOOTSTRAP_CAPTION] if "bootstrap" in shown else []
  lines += LEGEND + tuple(line for a in _measured(records) for line in a.legend)
  return "\n".join(lines)
