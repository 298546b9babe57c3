"""Each trial's training curves on disk: `metrics.jsonl` and TensorBoard event files.

Both sit in the trial's directory, so `tensorboard --logdir DIR` shows every trial of a run,
and, once a stack is audited, each trial's accuracies and attack numbers at its final step
(`write_audit`). The events are written with tensorboardX (no TensorFlow). A resumed run first
drops what came after its checkpoint: the lines of metrics.jsonl past that step, and, for
TensorBoard, a purge marker just past that step, so neither holds a curve twice. On a gs://
workdir, whose objects cannot be appended to, metrics.jsonl is kept in memory and uploaded
whole at most every FLUSH_SECONDS, at each checkpoint (`flush`) and at the end, as the event
files are.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import tensorboardX

from miajax import paths

# How often a gs:// workdir's curves are uploaded between checkpoints (TensorBoard's too).
FLUSH_SECONDS = 30


class TrialLogs:
  """The logs of one stack's trials, written by the first host only."""

  def __init__(self, workdir: Path, names: list[str], start: int, writer: bool = True):
    self.paths = [paths.of(workdir) / name for name in names]
    self.writers = []
    self.remote = paths.is_remote(workdir)
    self.texts: list[str] = []     # a gs:// workdir's metrics.jsonl, uploaded by flush()
    self.flushed = time.monotonic()
    if not writer:
      return
    if self.remote:
      paths.register_tensorboard()
    for path in self.paths:
      metrics = path / "metrics.jsonl"
      text = ""
      if metrics.exists():
        lines = [l for l in metrics.read_text().splitlines() if json.loads(l)["step"] <= start]
        text = "".join(l + "\n" for l in lines)
        paths.write_text(metrics, text)
      self.texts.append(text)
      # The suffix keeps a quick resume (same second, same host) from overwriting the file.
      self.writers.append(tensorboardX.SummaryWriter(
          str(path), purge_step=start + 1 if start else None, flush_secs=FLUSH_SECONDS,
          filename_suffix=f".{os.getpid()}.from{start}"))

  def append(self, step: int, phase: str, means: dict, scalars: dict | None = None) -> None:
    """One line per trial of `means` (values with a leading trial axis, or one per stack);
    `scalars` go to TensorBoard only (e.g. the stack's throughput)."""
    for k, (path, writer) in enumerate(zip(self.paths, self.writers)):
      values = {m: float(np.atleast_1d(v)[k] if np.size(v) > 1 else np.ravel(v)[0])
                for m, v in means.items()}
      line = json.dumps({"step": step, "phase": phase} | values) + "\n"
      if self.remote:
        self.texts[k] += line
      else:
        with open(path / "metrics.jsonl", "a") as f:
          f.write(line)
      for m, v in (values | (scalars or {})).items():
        writer.add_scalar(f"{phase}/{m}", v, step)
    if self.remote and time.monotonic() - self.flushed > FLUSH_SECONDS:
      self.flush()

  def flush(self) -> None:
    """Everything appended so far on disk or in the bucket (called at each checkpoint)."""
    if self.remote:
      for path, text in zip(self.paths, self.texts):
        paths.write_text(path / "metrics.jsonl", text)
      for writer in self.writers:
        writer.flush()
      self.flushed = time.monotonic()

  def close(self) -> None:
    self.flush()
    for writer in self.writers:
      writer.close()


def audit_scalars(record: dict) -> dict[str, float]:
  """A trial's end-of-run numbers from its results.json record, by TensorBoard tag: `eval/`
  its accuracies and nonzero weights, `audit/` every attack's AUC and accuracy (`nn`, the
  headline, each threshold attack, LiRA's and RMIA's), `privacy/` DP-SGD's epsilon. Numbers
  not computed (None) have no tag."""
  tags = {"eval/test_accuracy": record.get("test_accuracy"),
          "eval/train_accuracy": record.get("train_accuracy"),
          "eval/weights_nonzero": record.get("weights_nonzero"),
          "audit/nn_auc": record.get("attack_auc"),
          "audit/nn_accuracy": record.get("attack_accuracy"),
          "audit/headline_auc": record.get("headline_auc"),
          "audit/headline_accuracy": record.get("headline_accuracy"),
          "privacy/dp_epsilon": record.get("dp_epsilon")}
  attacks = dict(record.get("threshold_attacks") or {})
  attacks |= {f"lira_{k}" if not k.startswith("rmia") else k: v
              for k, v in (record.get("lira") or {}).items()}
  for name, fields in attacks.items():
    if isinstance(fields, dict):
      tags |= {f"audit/{name}_{m}": fields.get(m) for m in ("auc", "accuracy")}
  return {tag: float(v) for tag, v in tags.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}


def write_audit(workdir: Path, records: list[dict]) -> None:
  """Each trial's `audit_scalars` as TensorBoard events at its final step, in a file of their
  own: the trial's training writer is closed by then. Audits are deterministic, so an audit
  repeated by a resumed run writes the same values at the same step."""
  for r in records:
    if paths.is_remote(workdir):
      paths.register_tensorboard()
    writer = tensorboardX.SummaryWriter(str(paths.of(workdir) / r["name"]),
                                        filename_suffix=f".{os.getpid()}.audit")
    for tag, value in audit_scalars(r).items():
      writer.add_scalar(tag, value, r["step"])
    writer.close()


def read_scalars(trial_dir: Path) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} from a trial's event files, as TensorBoard would show them:
  a purge marker at step s drops what earlier files logged at or after s."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  out: dict[str, list[tuple[int, float]]] = {}
  files = sorted(paths.of(trial_dir).glob("events.out.tfevents.*"), key=paths.mtime_ns)
  for path in files:
    data, i = path.read_bytes(), 0
    while i + 12 <= len(data):
      # TFRecord framing: uint64 length, uint32 CRC, payload, uint32 CRC.
      n = int.from_bytes(data[i:i + 8], "little")
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
      i += 16 + n
      if event.session_log.status == event_pb2.SessionLog.START:
        out = {tag: [(s, v) for s, v in points if s < event.step]
               for tag, points in out.items()}
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out
