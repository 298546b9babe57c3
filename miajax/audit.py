"""Audit a model you bring: every attack that needs no shadow models, on its per-example outputs.

  python -m miajax.audit SCORES --out OUT [--seed S] [--name NAME]
  python -m miajax.audit --members=M --nonmembers=N --out OUT [--seed S] [--name NAME]

SCORES is a run's `scores.npz` (or the trial directory holding it): its examples are already
cut into split 0 (where attacks are fit) and split 1 (where they are measured), and the
trial's `config.json` beside it, where present, gives the seed and attack settings, so the
audit repeats the run's own. M and N are one model's outputs on its members and on examples
it never trained on, each an `.npz` holding `logits` (N, C) and `labels` (N,), or `losses`
(N,) and optionally `labels`, or an `.npy` of losses (N,). They are cut as a run cuts its
examples (`halves`): a seeded half of the smaller side per split, as many of the other, so
every set is balanced.

With logits, every attack of a run's audit runs (`evaluate.audit`): the NN attack, the
global loss, confidence, entropy and logit thresholds, the class-dependent loss and entropy
thresholds; with losses only, the loss threshold (and with labels its class-dependent form).
Thresholds and the NN attack are fit on split 0, the headline is the attack with the best
out-of-sample AUC on split 0, and everything is measured on split 1 with 95% bootstrap
intervals over its examples, exactly as a run does.

OUT gets what a run's workdir holds for one trial, readable by `python -m miajax.report OUT`:
  results.json, results.csv  one record (the results schema; what did not run is null)
  NAME/scores.npz            the audited examples and every attack's per-example scores
  audit.json                 inputs, seed, attack settings, counts, attacks run and not run
  roc.png                    log-log ROC of every attack on split 1
  fig4_gap_vs_attack.png     per-class attack accuracy against the accuracy gap (logits only)
Bad input (a missing file, mismatched shapes, NaN or inf, too few examples) is one line and
exit status 2.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import types
from pathlib import Path

import numpy as np
from absl import flags

from miajax import cli
from miajax import tables
from miajax import workdir as workdir_lib
from miajax import report as report_lib   # also defines --out, which this command uses
from miajax import results
from miajax.errors import UserError

# The fewest examples in each of the four sets (fit and audit members and non-members): fewer
# leave the NN attack's held-out share (20%) one or two examples to choose its epochs on.
MIN_PER_SET = 10
# What each attack needs beyond losses; the rest run on losses alone.
NEEDS = {"nn": "logits", "confidence": "logits", "entropy": "logits", "logit": "logits",
         "entropy_class": "logits", "loss_class": "labels"}
_SIDES_ALLOWED = ("allowed: an .npz holding logits (N, C) and labels (N,), or losses (N,) and "
                  "optionally labels (N,); or an .npy of losses (N,)")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclasses.dataclass(frozen=True)
class Side:
  """One model's outputs on the examples of one side (members or non-members).

  logits (N, C) with labels (N,); or losses (N,) (cross-entropy, lower = more likely a member),
  with labels (N,) or without. With logits, losses are not read.
  """
  logits: np.ndarray | None = None
  labels: np.ndarray | None = None
  losses: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Examples:
  """Every audited example, in a run's order (split 0 members, non-members, split 1 ...)."""
  logits: np.ndarray | None   # (N, C) float32, or None with losses only
  losses: np.ndarray | None   # (N,) float64, only without logits
  labels: np.ndarray | None   # (N,) int32, or None
  is_member: np.ndarray       # (N,) bool
  split: np.ndarray           # (N,) int8: 0 = fit, 1 = audit
  index: np.ndarray           # (N,) int64: row in the file the example comes from

  def count(self, member: bool, split: int) -> int:
    return int(((self.is_member == member) & (self.split == split)).sum())


@dataclasses.dataclass(frozen=True)
class Audit:
  """An audit's record (the results schema), per-example scores, and what ran."""
  record: dict
  scores: dict[str, np.ndarray]
  examples: Examples
  attacks_run: tuple[str, ...]
  not_run: dict[str, str]       # attack -> why it did not run
  settings: dict                # seed, attack settings and where they came from, inputs


# ---------------------------------------------------------------- checking inputs


def _array(where: str, key: str, value, ndim: int) -> np.ndarray:
  a = np.asarray(value)
  if a.ndim != ndim or a.shape[0] == 0:
    want = "(N, C)" if ndim == 2 else "(N,)"
    raise UserError(f"{where}: {key} has shape {a.shape}; allowed: {want} with N >= 1")
  if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
    raise UserError(f"{where}: {key} has dtype {a.dtype}; allowed: numbers")
  if np.issubdtype(a.dtype, np.inexact) and not np.isfinite(a).all():
    raise UserError(f"{where}: {key} holds {int((~np.isfinite(a)).sum())} non-finite values "
                    "(NaN or inf); allowed: finite numbers")
  return a


def _check_side(where: str, side: Side) -> Side:
  """`side` with float32 logits or float64 losses and int32 labels, or a UserError."""
  if side.logits is None and side.losses is None:
    raise UserError(f"{where}: neither logits nor losses; {_SIDES_ALLOWED}")
  logits = losses = labels = None
  if side.logits is not None:
    logits = _array(where, "logits", side.logits, 2).astype(np.float32)
    if logits.shape[1] < 2:
      raise UserError(f"{where}: logits have shape {logits.shape}; allowed: (N, C), C >= 2")
    if side.labels is None:
      raise UserError(f"{where}: logits without labels; allowed: labels (N,) beside them (the "
                      "loss and every attack but confidence need the true class)")
  else:
    losses = _array(where, "losses", side.losses, 1).astype(np.float64)
  n = (logits if logits is not None else losses).shape[0]
  if side.labels is not None:
    labels = _array(where, "labels", side.labels, 1)
    if labels.shape[0] != n:
      what = f"logits {logits.shape}" if logits is not None else f"losses ({n},)"
      raise UserError(f"{where}: labels have shape {labels.shape}, {what}; allowed: one "
                      "label per example")
    y = labels.astype(np.float64)
    bad = (y != np.round(y)) | (y < 0)
    if bad.any():
      raise UserError(f"{where}: labels hold {labels[bad][0]!r}; allowed: class indices "
                      "0, 1, ...")
    labels = labels.astype(np.int32)
    if logits is not None and labels.max() >= logits.shape[1]:
      raise UserError(f"{where}: labels reach {labels.max()}, logits have {logits.shape[1]} "
                      f"classes; allowed: labels in 0..{logits.shape[1] - 1}")
  return Side(logits=logits, labels=labels, losses=losses)


def _check_pair(members: Side, nonmembers: Side) -> None:
  """Both sides must be outputs of one kind from one model."""
  kind = {"members": _kind(members), "non-members": _kind(nonmembers)}
  if kind["members"] != kind["non-members"]:
    raise UserError(f"members give {kind['members']}, non-members {kind['non-members']}; "
                    "allowed: the same kind of output for both")
  if members.logits is not None and members.logits.shape[1] != nonmembers.logits.shape[1]:
    raise UserError(f"members' logits have {members.logits.shape[1]} classes, non-members' "
                    f"{nonmembers.logits.shape[1]}; allowed: one model's logits, one width")


def _kind(side: Side) -> str:
  if side.logits is not None:
    return "logits and labels"
  return "losses and labels" if side.labels is not None else "losses"


# ---------------------------------------------------------------- splitting


def halves(num_members: int, num_nonmembers: int, seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
  """Each example's split, as a run cuts its examples: (members', non-members') (N,) int8.

  A run halves its non-members into split 0 (attacks fit there) and split 1 (measured
  there) and draws, for each, as many members (`splits.make`), so every set is balanced and
  every number means what a run's does. Here the smaller side is halved and the other gives as
  many per split, all seeded; an example left over is -1 (unused).
  """
  half = min(num_members, num_nonmembers) // 2
  rng = np.random.default_rng([seed, 0xA0D1])
  out = []
  for n in (num_members, num_nonmembers):
    split = np.full(n, -1, np.int8)
    order = rng.permutation(n)
    split[order[:half]], split[order[half:2 * half]] = 0, 1
    out.append(split)
  return out[0], out[1]


def examples(members: Side, nonmembers: Side, seed: int = 0) -> Examples:
  """Checked, concatenated and cut into splits (`halves`); a UserError names what is wrong."""
  members = _check_side("members", members)
  nonmembers = _check_side("non-members", nonmembers)
  _check_pair(members, nonmembers)
  sides = (members, nonmembers)
  sizes = [len(s.logits if s.logits is not None else s.losses) for s in sides]
  for name, n in zip(("members", "non-members"), sizes):
    if n < 2 * MIN_PER_SET:
      raise UserError(f"{name}: {n} examples; allowed: at least {2 * MIN_PER_SET} on each side "
                      f"({MIN_PER_SET} to fit the attacks on, {MIN_PER_SET} to measure them)")
  splits = halves(*sizes, seed)
  # A run's order: split 0 members, non-members, then split 1's (`evaluate.outputs`).
  rows = [(side, np.flatnonzero(s == k), member)
          for k in (0, 1) for side, s, member in zip(sides, splits, (True, False))]

  def stack(field, dtype=None):
    if getattr(members, field) is None:
      return None
    return np.concatenate([getattr(side, field)[idx] for side, idx, _ in rows]).astype(
        dtype or getattr(members, field).dtype)

  return Examples(
      logits=stack("logits"), losses=stack("losses"), labels=stack("labels"),
      is_member=np.concatenate([np.full(len(idx), m) for _, idx, m in rows]),
      split=np.repeat(np.array([0, 0, 1, 1], np.int8), [len(idx) for _, idx, _ in rows]),
      index=np.concatenate([idx for _, idx, _ in rows]).astype(np.int64))


def _check_sets(where: str, ex: Examples) -> None:
  for split in (0, 1):
    for member, name in ((True, "members"), (False, "non-members")):
      if ex.count(member, split) < MIN_PER_SET:
        raise UserError(f"{where}: split {split} holds {ex.count(member, split)} {name}; "
                        f"allowed: at least {MIN_PER_SET} members and {MIN_PER_SET} "
                        "non-members in each split")


# ---------------------------------------------------------------- reading files


def _npz(path: Path, where: str) -> dict[str, np.ndarray]:
  """The arrays of an .npz, or an .npy's as `losses`; a UserError says what is wrong."""
  if not path.is_file():
    raise UserError(f"{where}: no such file; " + (
        _SIDES_ALLOWED if where.startswith("--") else
        "allowed: a run's scores.npz, or the trial directory holding it"))
  try:
    loaded = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise UserError(f"{where}: not a readable .npz or .npy ({str(e).splitlines()[0]}); "
                    f"{_SIDES_ALLOWED}") from None
  if isinstance(loaded, np.ndarray):
    if loaded.ndim != 1:
      raise UserError(f"{where}: an .npy of shape {loaded.shape}; allowed: an .npy of losses "
                      "(N,); logits go in an .npz beside their labels")
    return {"losses": loaded}
  with loaded:
    return dict(loaded.items())


def load_side(path: str | Path, flag: str) -> Side:
  """A `Side` from an .npz (logits and labels, or losses [and labels]) or an .npy of losses."""
  where = f"{flag}={path}"
  arrays = _npz(Path(path), where)
  if not {"logits", "losses"} & set(arrays):
    raise UserError(f"{where} holds {', '.join(sorted(arrays)) or 'no arrays'}; "
                    f"{_SIDES_ALLOWED}")
  try:
    return _check_side(where, Side(arrays.get("logits"), arrays.get("labels"),
                                   arrays.get("losses")))
  except UserError as e:
    raise UserError(str(e)) from None


def load_scores(path: str | Path) -> tuple[Examples, dict, Path | None]:
  """A run's scores.npz (or its trial directory) as Examples, and the trial's config.json
  beside it ({} and None when absent), whose attack settings and seed an audit repeats."""
  path = Path(path)
  if path.is_dir():
    path = path / "scores.npz"
  where = str(path)
  arrays = _npz(path, where)
  missing = [k for k in ("logits", "labels", "is_member", "split") if k not in arrays]
  if missing:
    raise UserError(f"{where} lacks {', '.join(missing)}; allowed: a scores.npz as "
                    "python -m miajax.main writes it (logits, labels, is_member, split)")
  side = _check_side(where, Side(arrays["logits"], arrays["labels"]))
  n = len(side.logits)
  for key in ("is_member", "split"):
    if np.shape(arrays[key]) != (n,):
      raise UserError(f"{where}: {key} has shape {np.shape(arrays[key])}, logits "
                      f"{side.logits.shape}; allowed: one value per example")
  if not np.isin(arrays["split"], (0, 1)).all():
    raise UserError(f"{where}: split holds values other than 0 and 1; allowed: 0 (fit) or 1 "
                    "(audit) per example")
  ex = Examples(logits=side.logits, losses=None, labels=side.labels,
                is_member=arrays["is_member"].astype(bool),
                split=arrays["split"].astype(np.int8),
                index=np.asarray(arrays.get("index", np.arange(n)), np.int64))
  _check_sets(where, ex)
  config_path = path.parent / "config.json"
  if not config_path.is_file():
    return ex, {}, None
  try:
    return ex, json.loads(config_path.read_text()), config_path
  except json.JSONDecodeError as e:
    raise UserError(f"{config_path} is not readable JSON ({e}); allowed: the trial's "
                    "config.json as python -m miajax.main writes it, or none") from None


# ---------------------------------------------------------------- the audit


def default_attack():
  """The attack settings of a run's default config (`config.base().attack`)."""
  from miajax import config as config_lib  # pylint: disable=g-import-not-at-top
  return types.SimpleNamespace(**config_lib.base().attack.to_dict())


def audit(members: Side, nonmembers: Side, *, seed: int = 0, attack=None,
          name: str = "audit") -> Audit:
  """Audits a model from its outputs on members and non-members, as a run audits its own.

  Args:
    members: the model's logits and labels (or losses) on examples it trained on.
    nonmembers: the same on examples it never trained on.
    seed: seeds the split into fit and audit halves (`halves`), the NN attack and the
      bootstrap.
    attack: the NN attack's settings (kind, features, epochs, learning_rate, batch_size,
      bootstrap_replicates), as `config.attack`; None takes a run's defaults.
    name: the record's name.

  Returns:
    An `Audit`: `record` has the fields of a run's results.json record (a run's audit fields,
    train_accuracy on the members, test_accuracy on split 1's non-members; null where nothing
    was computed); `scores` the per-example scores of every attack that ran.

  Raises:
    UserError: the outputs do not fit together (shapes, classes, NaN or inf), or a side has
      fewer than 2 * MIN_PER_SET examples.
  """
  ex = examples(members, nonmembers, seed)
  return audit_examples(ex, seed=seed, attack=attack, name=name,
                        fields={"split_seed": seed})


def audit_examples(ex: Examples, *, seed: int = 0, attack=None, name: str = "audit",
                   fields: dict | None = None) -> Audit:
  """`audit` of examples already cut into splits (a run's scores.npz, `load_scores`).

  `fields` are record fields to keep (method, dataset, model, seed, split_seed of the trial
  audited); method defaults to "external" (a model miajax did not train).
  """
  from miajax import evaluate  # pylint: disable=g-import-not-at-top
  attack = attack or default_attack()
  _check_sets("examples", ex)
  if ex.logits is not None:
    _check_class_overlap(ex)
    num_classes = ex.logits.shape[1]
    out = evaluate.Outputs(logits=ex.logits[None], labels=ex.labels, is_member=ex.is_member,
                           split=ex.split, index=ex.index)
    audit_fields, scores = evaluate.audit(out, 0, num_classes, attack, seed)
    train, test = (float(a[0]) for a in evaluate.accuracies(out))
  else:
    num_classes = None if ex.labels is None else int(ex.labels.max()) + 1
    scores = {"score_loss": -ex.losses}   # a run's loss score: log p_y = -cross-entropy
    audit_fields, _ = evaluate.score_audit(
        scores, evaluate.Roles(ex.labels, ex.is_member, ex.split), num_classes, seed,
        rng=np.random.default_rng(seed), replicates=evaluate.bootstrap_replicates(attack))
    audit_fields = _without_nn(audit_fields)
    train = test = None
  ran = tuple(k.removeprefix("score_") for k in scores)
  not_run = {k: f"needs {need}" for k, need in NEEDS.items() if k not in ran}
  record = results.record(**({"method": "external"} | (fields or {})), name=name,
                          group=name, train_accuracy=train, test_accuracy=test,
                          versions=results.versions(), **audit_fields)
  settings = {"seed": seed, "attack": dict(vars(attack)), "num_classes": num_classes}
  return Audit(record, scores, ex, ran, not_run, settings)


def _without_nn(fields: dict) -> dict:
  """A losses-only audit's NN fields: null, with a note saying why (the contract's rule)."""
  keys = ("attack_accuracy", "attack_accuracy_at_half", "attack_auc", "attack_tpr_at_fpr",
          "gain", "js_divergence", "attack_epochs", "attack_threshold")
  note = f"{', '.join(keys)}: null, the NN attack needs logits and only losses were given"
  return dict.fromkeys(keys) | fields | {"notes": [note, *fields["notes"]], "per_class": None}


def _check_class_overlap(ex: Examples) -> None:
  """The NN attack trains on equal member and non-member counts per class of split 0."""
  fit = ex.split == 0
  num_classes = ex.logits.shape[1]
  counts = [np.bincount(ex.labels[fit & (ex.is_member == m)], minlength=num_classes)
            for m in (True, False)]
  matched = int(np.minimum(*counts).sum())
  if matched < MIN_PER_SET:
    raise UserError(f"split 0: {matched} members and non-members share a class (the NN "
                    f"attack fits on equal counts per class); allowed: at least {MIN_PER_SET}, "
                    "members and non-members drawn from the same classes")


# ---------------------------------------------------------------- writing


def check_out(out: str | Path) -> Path:
  """OUT, if it may be written: new, empty, or an earlier audit's (never a run's workdir)."""
  out = Path(out)
  if out.exists() and not out.is_dir():
    raise UserError(f"--out={out} is a file; allowed: a new or empty directory, or an earlier "
                    "audit's")
  if out.is_dir() and any(out.iterdir()) and not (out / "audit.json").is_file():
    raise UserError(f"--out={out} holds files python -m miajax.audit did not write (a run's "
                    "workdir?); allowed: a new or empty directory, or an earlier audit's")
  return out


def write(result: Audit, out: str | Path, inputs: dict | None = None) -> list[str]:
  """Writes the audit to OUT as a one-trial workdir (module docstring); returns the files."""
  out = check_out(out)
  try:
    out.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"--out={out} cannot be created ({e.strerror}); allowed: a directory you "
                    "can write") from None
  name = result.record["name"]
  (out / name).mkdir(exist_ok=True)
  ex = result.examples
  arrays = {"logits": ex.logits, "losses": ex.losses, "labels": ex.labels}
  np.savez(out / name / "scores.npz", **{k: v for k, v in arrays.items() if v is not None},
           is_member=ex.is_member, split=ex.split, index=ex.index, **result.scores)
  results.write(out, [result.record])
  counts = {f"split{k}": {"members": ex.count(True, k), "non_members": ex.count(False, k)}
            for k in (0, 1)}
  meta = {"inputs": inputs or {}, **result.settings, "examples": counts,
          "attacks_run": list(result.attacks_run), "attacks_not_run": result.not_run}
  (out / "audit.json").write_text(json.dumps(meta, indent=1))
  files = ["results.json", "results.csv", "audit.json", f"{name}/scores.npz"]
  return files + _figures(out, result.record)


def _figures(out: Path, record: dict) -> list[str]:
  """The run's report figures that an audit has the inputs of (`miajax.report`)."""
  written, notes = [], []
  rocs = report_lib.roc_curves(out, [record], notes)
  if rocs:
    report_lib.plot_roc(rocs, out / "roc.png")
    written.append("roc.png")
  points = report_lib.class_points([record])
  if points:
    report_lib.plot_gap_vs_attack(points, out / "fig4_gap_vs_attack.png")
    written.append("fig4_gap_vs_attack.png")
  return written


def table(result: Audit) -> str:
  """Each attack's split-0 AUC (what the headline is chosen on) and its split-1 numbers."""
  r = result.record
  iv = r["intervals"]
  rows = [["attack", "split-0 AUC", "audit AUC", "95% interval", "audit acc"]]
  for attack in ("nn", "loss", "confidence", "entropy", "logit", "loss_class",
                 "entropy_class"):
    if attack == "nn":
      auc, acc, bounds = r["attack_auc"], r["attack_accuracy"], iv["attack_auc"]
    else:
      t = r["threshold_attacks"][attack] or {}
      auc, acc = t.get("auc"), t.get("accuracy")
      bounds = (iv["threshold_attacks"][attack] or {}).get("auc")
    if auc is None:
      rows.append([attack, "-", "-", f"not run: {result.not_run[attack]}", "-"])
      continue
    mark = " *" if attack == r["headline_attack"] else ""
    rows.append([attack + mark, f"{r['headline_selection'][attack]:.3f}", f"{auc:.3f}",
                 f"[{bounds[0]:.3f}, {bounds[1]:.3f}]", f"{100 * acc:.2f}"])
  lines = tables.text(rows, left=(0, 3))
  lines.append("* headline: the best split-0 AUC, chosen without the audit split; its audit "
               f"AUC {r['headline_auc']:.3f} [{iv['headline_auc'][0]:.3f}, "
               f"{iv['headline_auc'][1]:.3f}]")
  return "\n".join(lines)


def summary(result: Audit) -> str:
  """The line above the table: what was audited, how it was split, the seed."""
  ex, r = result.examples, result.record
  kind = ("logits" if ex.logits is not None else "losses") + (
      " and labels" if ex.labels is not None else "")
  text = (f"audited {r['name']}: {kind}; split 0 (fit) {ex.count(True, 0)} members + "
          f"{ex.count(False, 0)} non-members, split 1 (audit) {ex.count(True, 1)} + "
          f"{ex.count(False, 1)}; seed {result.settings['seed']}")
  if r["train_accuracy"] is not None:
    text += (f"\naccuracy {100 * r['train_accuracy']:.2f}% on members, "
             f"{100 * r['test_accuracy']:.2f}% on split 1's non-members")
  return text


# ---------------------------------------------------------------- command line


_USAGE = ("usage: python -m miajax.audit SCORES.npz --out OUT, or python -m miajax.audit "
          "--members=M --nonmembers=N --out OUT")


def _define_flags() -> None:
  flags.DEFINE_string("members", None, "The model's outputs on its members (.npz or .npy).")
  flags.DEFINE_string("nonmembers", None, "Its outputs on examples it never trained on.")
  flags.DEFINE_integer("seed", None, "Seed of the split, the NN attack and the bootstrap "
                       "(default: the trial's seed from SCORES' config.json, else 0).")
  flags.DEFINE_string("name", None, "The record's name (default: the trial's, else 'audit').")


def _audit_scores(path: str, f) -> tuple[Audit, dict]:
  """The audit of a run's scores.npz, with the trial's seed and attack settings if known."""
  ex, config, config_path = load_scores(path)
  trial = config.get("trial", {})
  seed = f.seed if f.seed is not None else int(trial.get("seed", 0))
  fields = {"method": trial.get("method", "external"), "seed": trial.get("seed"),
            "dataset": config.get("data", {}).get("name"),
            "model": config.get("model", {}).get("name"),
            "split_seed": config.get("seed")}
  attack = types.SimpleNamespace(**config["attack"]) if "attack" in config else None
  result = audit_examples(ex, seed=seed, attack=attack, fields=fields,
                          name=f.name or trial.get("name") or "audit")
  return result, {"scores": str(Path(path).absolute()), "attack_settings_from": (
      str(config_path.absolute()) if attack else "a run's defaults (miajax/config.py)")}


def _audit_sides(f) -> tuple[Audit, dict]:
  """The audit of --members and --nonmembers with a run's default attack settings."""
  for flag in ("members", "nonmembers"):
    if getattr(f, flag) is None:
      raise UserError(f"--{flag} is missing; {_USAGE}")
  members = load_side(f.members, "--members")
  nonmembers = load_side(f.nonmembers, "--nonmembers")
  result = audit(members, nonmembers, seed=f.seed or 0, name=f.name or "audit")
  return result, {"members": str(Path(f.members).absolute()),
                  "nonmembers": str(Path(f.nonmembers).absolute()),
                  "attack_settings_from": "a run's defaults (miajax/config.py)"}


def main(argv):
  f = flags.FLAGS
  if len(argv) > 2:
    raise UserError(f"unexpected arguments: {' '.join(argv[2:])}; {_USAGE}")
  if len(argv) == 2 and (f.members or f.nonmembers):
    raise UserError(f"both SCORES ({argv[1]}) and --members/--nonmembers; {_USAGE}")
  if f.out is None:
    raise UserError(f"--out is missing; allowed: a new or empty directory; {_USAGE}")
  if f.name is not None and not _NAME.fullmatch(f.name):
    raise UserError(f"--name={f.name!r}; allowed: letters, digits, '.', '_' and '-'")
  workdir_lib.quiet_orbax()
  check_out(f.out)   # refused before the work, not after
  start = time.time()
  result, inputs = _audit_scores(argv[1], f) if len(argv) == 2 else _audit_sides(f)
  files = write(result, f.out, inputs)
  print(summary(result))
  print(table(result))
  print(f"wrote {f.out}: {', '.join(files)} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
  _define_flags()
  flags.FLAGS["out"].help = "Output directory (required): new, empty, or an earlier audit's."
  cli.run(main)
