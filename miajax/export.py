"""A trial's weights for inference, in one .npz file: dense, or with its pruned kernels sparse.

python -m miajax.export TRIAL_DIR --out FILE [--format sparse|dense] [--step N] [--nocompress]
                        [--json]

Reads one trial directory of a `python -m miajax.main` workdir (its `config.json` and
`checkpoints/<step>/state`, the latest step unless --step names one) and writes the variables
inference needs: `params`, and `batch_stats` for models with BatchNorm. Optimizer state, the
method's state (ADMM Z/U, masks, attack model) and the PRNG key are left behind.

The file is an .npz archive (deflated unless --nocompress) holding a JSON header under
`header` (model, num_classes, norm, input shape, step, format, and each leaf's shape, dtype,
nonzero count and encoding) and one or two arrays per leaf:
- `dense`: the array as it is, under its path ("params/fc1/kernel");
- `indices`: the nonzero values in flat (C) order under "PATH@values" and their flat indices
  in the smallest unsigned integer type that holds size - 1 under "PATH@indices";
- `bitmask`: the values under "PATH@values" and `np.packbits` of the nonzero pattern (flat,
  C order, one bit per entry) under "PATH@bitmask".
With --format=sparse every prunable kernel (see `pruning.is_prunable`) takes whichever of the
three is smallest as stored (raw bytes, or deflated bytes when the file is compressed; ties go
to the simpler one, in the order above), and every other leaf stays dense. `load(FILE)` gives
back `(model, variables)` with `model.apply(variables, images, train=False)` equal, bit for
bit, to the checkpoint's logits.

The command prints, per prunable kernel, what each encoding costs and which was chosen, then
the bytes on disk of the dense and the sparse file, stored and deflated, beside the nonzero
count ratio (`pruning.compression`); --json prints the same as one JSON object. It writes
nothing but FILE and changes nothing in the trial directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from miajax import cli
from miajax import paths
from miajax import tables
from miajax import workdir as workdir_lib
from miajax.data import specs
from miajax.errors import UserError

FORMATS = ("sparse", "dense")
ENCODINGS = ("dense", "indices", "bitmask")  # also the tie-break order: simplest first
CONTAINER = "miajax.export/1"
HEADER_KEY = "header"
COLLECTIONS = ("params", "batch_stats")

_USAGE = ("usage: python -m miajax.export TRIAL_DIR --out FILE [--format sparse|dense] "
          "[--step N] [--nocompress] [--json]")
_ALLOWED_TRIAL = ("allowed: one trial directory of a python -m miajax.main workdir (holding "
                  "config.json and checkpoints/)")


# ---------------------------------------------------------------- encodings


def index_dtype(size: int) -> np.dtype:
  """The smallest unsigned integer type that holds every flat index of `size` entries."""
  return np.min_scalar_type(max(size - 1, 0))


def encode(array: np.ndarray, encoding: str) -> dict[str, np.ndarray]:
  """`array` as the arrays of `encoding`, keyed by suffix ("" for dense)."""
  array = np.asarray(array)
  if encoding == "dense":
    return {"": array}
  flat = array.ravel()
  nonzero = flat != 0
  values = flat[nonzero]
  if encoding == "indices":
    return {"@values": values,
            "@indices": np.flatnonzero(nonzero).astype(index_dtype(flat.size))}
  if encoding == "bitmask":
    return {"@values": values, "@bitmask": np.packbits(nonzero)}
  raise ValueError(f"encoding={encoding!r}; allowed: {', '.join(ENCODINGS)}")


def decode(arrays: dict[str, np.ndarray], encoding: str, shape: tuple[int, ...],
           dtype: np.dtype) -> np.ndarray:
  """The array `encode` took apart; pruned entries come back as exact zeros."""
  if encoding == "dense":
    return np.asarray(arrays[""], dtype).reshape(shape)
  size = math.prod(shape)
  flat = np.zeros(size, dtype)
  values = np.asarray(arrays["@values"], dtype)
  if encoding == "indices":
    where = np.asarray(arrays["@indices"]).astype(np.int64)
    if where.shape != values.shape or (where.size and (where.min() < 0 or where.max() >= size)):
      raise ValueError("indices do not match the values or the shape")
  elif encoding == "bitmask":
    where = np.unpackbits(np.asarray(arrays["@bitmask"], np.uint8), count=size).astype(bool)
    if int(where.sum()) != values.size:
      raise ValueError("bitmask does not match the number of values")
  else:
    raise ValueError(f"encoding={encoding!r}; allowed: {', '.join(ENCODINGS)}")
  flat[where] = values
  return flat.reshape(shape)


def deflated_size(array: np.ndarray) -> int:
  """Bytes of `array`'s data after raw deflate at zipfile's default level."""
  compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
  return len(compressor.compress(np.ascontiguousarray(array).tobytes()) + compressor.flush())


def encoding_sizes(array: np.ndarray) -> dict[str, dict[str, int]]:
  """{"stored"|"deflate": {encoding: bytes}}: the data bytes of each encoding of `array`."""
  out: dict[str, dict[str, int]] = {"stored": {}, "deflate": {}}
  for encoding in ENCODINGS:
    parts = encode(array, encoding).values()
    out["stored"][encoding] = sum(int(p.nbytes) for p in parts)
    out["deflate"][encoding] = sum(deflated_size(p) for p in parts)
  return out


def smallest(sizes: dict[str, int]) -> str:
  """The encoding with the fewest bytes; ties go to the earlier one in ENCODINGS."""
  return min(ENCODINGS, key=lambda e: (sizes[e], ENCODINGS.index(e)))


# ---------------------------------------------------------------- reading a trial


@dataclasses.dataclass
class Trial:
  """What export reads from one trial directory."""
  name: str
  dir: Path
  step: int
  model: str
  num_classes: int
  norm: str                       # the normalisation the model has ("none" for LeNet-5)
  input_shape: tuple[int, ...] | None
  variables: dict[str, Any]       # {"params": ..., "batch_stats": ...} of NumPy arrays
  config_norm: str | None = None  # model.norm as the config gave it


def _config(trial_dir: Path) -> dict:
  path = trial_dir / "config.json"
  if not path.is_file():
    raise UserError(f"{trial_dir} has no config.json; {_ALLOWED_TRIAL}")
  config = workdir_lib.read_json(path)
  model = config.get("model") if isinstance(config, dict) else None
  if not isinstance(model, dict) or not isinstance(model.get("name"), str):
    raise UserError(f"{path} has no model.name; allowed: a trial config.json as "
                    "python -m miajax.main writes it")
  return config


def _input_shape(config: dict) -> tuple[int, ...] | None:
  data = config.get("data") or {}
  # The dataset's input geometry checks the checkpoint against the model it names (LeNet-5's
  # fc1 width depends on it).
  spec = specs.SPECS.get(data.get("name"))
  return spec.input_shape(int(data.get("image_size") or 224)) if spec else None


def _restore(checkpoint_dir: Path, step: int) -> dict[str, Any]:
  """{"params", "batch_stats"?} of one checkpoint as NumPy arrays; nothing else is read."""
  if not workdir_lib.has_params(checkpoint_dir, step):
    raise UserError(f"{checkpoint_dir / str(step)} holds no params; allowed: a checkpoint "
                    "as python -m miajax.main writes it")
  return workdir_lib.restore(checkpoint_dir, step, COLLECTIONS)[1]


def _flat(variables: dict[str, Any], as_numpy: bool = True) -> dict[str, Any]:
  """{"params/conv1/kernel": array, ...} in sorted path order (the zoo's forward order)."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  flat = traverse_util.flatten_dict(variables, sep="/")
  return {k: np.asarray(flat[k]) if as_numpy else flat[k] for k in sorted(flat)}


def _check_against_model(trial: Trial) -> None:
  """The checkpoint's leaves are exactly those of the model it names, shape for shape."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from miajax import models  # pylint: disable=g-import-not-at-top
  model = models.create(trial.model, trial.num_classes, norm=trial.norm)
  if trial.input_shape is None:
    return  # an unknown dataset: load's apply is the only check left
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, *trial.input_shape)), train=False))
  want = {k: tuple(v.shape) for k, v in _flat(
      {c: shapes[c] for c in COLLECTIONS if c in shapes and jax.tree.leaves(shapes[c])},
      as_numpy=False).items()}
  have = {k: tuple(v.shape) for k, v in _flat(trial.variables).items()}
  if want != have:
    diff = sorted(set(want.items()) ^ set(have.items()))
    path = diff[0][0]
    raise UserError(f"{trial.dir} checkpoint step {trial.step} does not match model "
                    f"{trial.model} ({trial.num_classes} classes, norm {trial.norm}) at "
                    f"{path}: checkpoint {have.get(path)}, model {want.get(path)}; allowed: "
                    "a trial directory whose config.json describes its checkpoints")


def read_trial(trial_dir: str | Path, step: int | None = None) -> Trial:
  """The inference variables of one trial at `step` (default: its latest checkpoint).

  Raises:
    UserError: TRIAL_DIR missing, a workdir rather than a trial, without config.json or
      checkpoints, `step` not among its checkpoints, or checkpoints that do not match the
      model its config names.
  """
  from miajax import models  # pylint: disable=g-import-not-at-top
  from miajax import pruning  # pylint: disable=g-import-not-at-top
  path = paths.of(trial_dir)
  if not path.exists():
    raise UserError(f"{path} does not exist; {_ALLOWED_TRIAL}")
  if not path.is_dir():
    raise UserError(f"{path} is a file, not a directory; {_ALLOWED_TRIAL}")
  if not (path / "checkpoints").is_dir():
    trials = sorted(p.name for p in path.iterdir() if workdir_lib.is_trial_dir(p))
    if trials:
      shown = ", ".join(trials[:6]) + (", ..." if len(trials) > 6 else "")
      raise UserError(f"{path} is a workdir, not a trial directory; allowed: one of its trial "
                      f"directories ({shown})")
    raise UserError(f"{path} has no checkpoints/; {_ALLOWED_TRIAL}")
  config = _config(path)
  model_name = config["model"]["name"]
  if model_name not in models.NAMES:
    raise UserError(f"{path / 'config.json'} names model {model_name!r}; allowed: "
                    f"{', '.join(models.NAMES)}")
  workdir_lib.quiet_orbax()
  steps = workdir_lib.checkpoint_steps(path / "checkpoints")
  if not steps:
    raise UserError(f"{path / 'checkpoints'} holds no checkpoint; allowed: a trial that has "
                    "saved at least one")
  if step is None:
    step = steps[-1]
  elif isinstance(step, bool) or not isinstance(step, int) or step not in steps:
    raise UserError(f"--step={step!r} is not a checkpoint of {path.name}; allowed: one of "
                    f"{', '.join(map(str, steps))}")
  variables = _restore(path / "checkpoints", step)
  kernels = [leaf for name, leaf in _flat(variables["params"]).items()
             if pruning.is_prunable(tuple(name.split("/")), leaf)]
  if not kernels:
    raise UserError(f"{path} checkpoint step {step} has no weight kernels; allowed: a "
                    "checkpoint of a model of miajax.models")
  # The classifier is the last kernel in sorted order (see miajax.models); checked below.
  num_classes = int(kernels[-1].shape[-1])
  config_norm = str(config["model"].get("norm") or "batch")
  trial = Trial(name=path.name, dir=path, step=int(step), model=model_name,
                num_classes=num_classes, norm=models.normalisation(model_name, config_norm),
                input_shape=_input_shape(config), variables=variables, config_norm=config_norm)
  _check_against_model(trial)
  return trial


# ---------------------------------------------------------------- writing


def build(trial: Trial, fmt: str, deflate: bool) -> tuple[dict[str, np.ndarray], dict]:
  """The arrays of the file and its header; the per-kernel choice is the smallest as stored.

  Args:
    trial: what `read_trial` returned.
    fmt: "sparse" or "dense".
    deflate: whether the file will be deflated (decides which sparse encoding is smaller).

  Returns:
    ({member name: array} including the header, header dict).
  """
  from miajax import pruning  # pylint: disable=g-import-not-at-top
  arrays: dict[str, np.ndarray] = {}
  leaves = []
  for path, array in _flat(trial.variables).items():
    prunable = path.startswith("params/") and pruning.is_prunable(tuple(path.split("/")), array)
    sizes = encoding_sizes(array) if prunable else None
    encoding = "dense"
    if fmt == "sparse" and prunable:
      encoding = smallest(sizes["deflate" if deflate else "stored"])
    for suffix, part in encode(array, encoding).items():
      arrays[path + suffix] = part
    leaves.append({"path": path, "shape": list(array.shape), "dtype": array.dtype.name,
                   "encoding": encoding, "prunable": prunable,
                   "nonzero": int(np.count_nonzero(array)), "sizes": sizes})
  header = {"container": CONTAINER, "model": trial.model, "num_classes": trial.num_classes,
            "norm": trial.norm, "input_shape": list(trial.input_shape or []) or None,
            "trial": trial.name, "step": trial.step, "format": fmt, "deflate": deflate,
            "leaves": leaves}
  arrays[HEADER_KEY] = np.frombuffer(json.dumps(header).encode(), np.uint8)
  return arrays, header


def write(path: Path, arrays: dict[str, np.ndarray], deflate: bool) -> int:
  """Writes the .npz to exactly `path` (no ".npz" appended) and returns its bytes on disk."""
  with open(path, "wb") as f:
    (np.savez_compressed if deflate else np.savez)(f, **arrays)
  return os.stat(path).st_size


def export(trial_dir: str | Path, out: str | Path, fmt: str = "sparse", step: int | None = None,
           compress: bool = True, measure: bool = True) -> dict[str, Any]:
  """Writes the trial's inference variables to `out`; returns what was written and measured.

  Args:
    trial_dir: one trial directory of a workdir.
    out: the file to write (replaced if it exists).
    fmt: "sparse" or "dense".
    step: the checkpoint step; None for the latest.
    compress: deflate the archive (np.savez_compressed) rather than store it (np.savez).
    measure: also write the other three variants (dense/sparse x stored/deflated) to a
      temporary directory and report their sizes.

  Returns:
    A JSON-ready report: the trial, step, model, the file written and its bytes, per-kernel
    encoding sizes and choices, `bytes` {dense|sparse: {stored|deflate: bytes on disk}} (only
    the written one without `measure`), the file ratios dense/sparse and the nonzero ratio.

  Raises:
    UserError: a bad TRIAL_DIR, step, format or output path.
  """
  from miajax import pruning  # pylint: disable=g-import-not-at-top
  if fmt not in FORMATS:
    raise UserError(f"--format={fmt!r} is not a format; allowed: {', '.join(FORMATS)}")
  out = paths.of(out)
  remote = paths.is_remote(out)
  if out.is_dir():
    raise UserError(f"--out={out} is a directory; allowed: a file path to write")
  if remote:
    paths.check_writable(out.parent, f"--out={out}")
  elif not out.parent.is_dir():
    raise UserError(f"--out={out}: directory {out.parent} does not exist; allowed: a file in "
                    "an existing directory")
  trial = read_trial(trial_dir, step)
  deflate_key = "deflate" if compress else "stored"
  variants = [(f, d) for f in FORMATS for d in (False, True)] if measure else [(fmt, compress)]
  sizes: dict[str, dict[str, int]] = {}
  headers = {}
  try:
    # A bucket's object is uploaded whole from a local scratch file.
    with tempfile.TemporaryDirectory(dir=None if remote else out.parent,
                                     prefix=".export-") as tmp:
      for f, d in variants:
        arrays, headers[f, d] = build(trial, f, d)
        path = Path(tmp) / f"{f}-{'deflate' if d else 'stored'}.npz"
        sizes.setdefault(f, {})["deflate" if d else "stored"] = write(path, arrays, d)
        if (f, d) == (fmt, compress) and remote:
          paths.write_bytes(out, path.read_bytes())
        elif (f, d) == (fmt, compress):
          os.replace(path, out)  # same directory: whole file or nothing at `out`
  except PermissionError as e:
    raise UserError(f"--out={out} cannot be written ({e.strerror}); allowed: a file in a "
                    "directory you can write") from None
  counts = pruning.compression(trial.variables["params"])
  header = headers[fmt, compress]
  report = {
      "trial": trial.name, "trial_dir": str(trial.dir), "step": trial.step,
      "model": trial.model, "num_classes": trial.num_classes, "norm": trial.norm,
      "config_norm": trial.config_norm, "out": str(out), "format": fmt, "compressed": compress,
      "out_bytes": sizes[fmt][deflate_key], "bytes": sizes,
      "collections": sorted({leaf["path"].split("/")[0] for leaf in header["leaves"]}),
      "weights_total": counts["weights_total"], "weights_nonzero": counts["weights_nonzero"],
      "nonzero_ratio": counts["compression_ratio"],
      "layers": {},
  }
  if "dense" in sizes and "sparse" in sizes:
    report["file_ratio"] = {k: sizes["dense"][k] / sizes["sparse"][k] for k in sizes["dense"]}
  sparse_headers = {d: headers.get(("sparse", d)) for d in (False, True)}
  for leaf in header["leaves"]:
    if not leaf["prunable"]:
      continue
    chosen = {("deflate" if d else "stored"): next(
        x["encoding"] for x in h["leaves"] if x["path"] == leaf["path"])
              for d, h in sparse_headers.items() if h is not None}
    report["layers"][leaf["path"].removeprefix("params/")] = {
        "shape": leaf["shape"], "total": math.prod(leaf["shape"]), "nonzero": leaf["nonzero"],
        "sizes": leaf["sizes"], "chosen": chosen}
  return report


# ---------------------------------------------------------------- loading


def load(path: str | Path):
  """(model, variables) from an exported file, for `model.apply(variables, x, train=False)`.

  Raises:
    UserError: the file is missing or is not an export of this module.
  """
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from miajax import models  # pylint: disable=g-import-not-at-top
  path = paths.of(path)
  allowed = "allowed: a file written by python -m miajax.export"
  if not path.is_file():
    raise UserError(f"{path} is not a file; {allowed}")
  try:
    with paths.load_npz(path, allow_pickle=False) as npz:
      members = {k: npz[k] for k in npz.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise UserError(f"{path} is not an .npz archive ({type(e).__name__}); {allowed}") from None
  try:
    header = json.loads(members.pop(HEADER_KEY).tobytes().decode())
    if header.get("container") != CONTAINER:
      raise ValueError(f"container {header.get('container')!r}, not {CONTAINER!r}")
    flat = {}
    for leaf in header["leaves"]:
      prefix = leaf["path"]
      parts = {k[len(prefix):]: v for k, v in members.items()
               if k == prefix or k.startswith(prefix + "@")}
      flat[tuple(prefix.split("/"))] = decode(parts, leaf["encoding"], tuple(leaf["shape"]),
                                              np.dtype(leaf["dtype"]))
    model = models.create(header["model"], int(header["num_classes"]), norm=header["norm"])
  except (KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
    raise UserError(f"{path} is not a readable export ({type(e).__name__}: {e}); "
                    f"{allowed}") from None
  return model, traverse_util.unflatten_dict(flat)


# ---------------------------------------------------------------- text


def _norm_text(report: dict[str, Any]) -> str:
  """"norm X", and why where the config asked for another: LeNet-5 and the 4-layer CNN have
  no normalisation layers, so their model.norm is ignored."""
  asked = report.get("config_norm")
  if asked is None or asked == report["norm"]:
    return f"norm {report['norm']}"
  return (f"norm {report['norm']} ({report['model']} has no norm layers; "
          f"model.norm={asked} is ignored)")


def format_text(report: dict[str, Any]) -> str:
  kind = "deflated" if report["compressed"] else "stored"
  lines = [f"{report['trial']} step {report['step']}: {report['model']}, "
           f"{report['num_classes']} classes, {_norm_text(report)}; "
           f"{', '.join(report['collections'])} -> {report['out']} ({report['format']}, {kind}, "
           f"{report['out_bytes']:,} bytes)", ""]
  if report["layers"]:
    rows = [["prunable kernel", "shape", "kept", "bytes: dense", "indices", "bitmask",
             "deflated: dense", "indices", "bitmask", "chosen: stored", "deflated"]]
    for name, layer in report["layers"].items():
      s, z = layer["sizes"]["stored"], layer["sizes"]["deflate"]
      rows.append([name, "x".join(map(str, layer["shape"])),
                   f"{100 * layer['nonzero'] / layer['total']:.2f}%",
                   *(f"{s[e]:,}" for e in ENCODINGS), *(f"{z[e]:,}" for e in ENCODINGS),
                   layer["chosen"].get("stored", "-"), layer["chosen"].get("deflate", "-")])
    lines += tables.text(rows, rule=False) + [""]
  rows = [["file", "stored B", "deflated B"]]
  for fmt in ("dense", "sparse"):
    if fmt in report["bytes"]:
      b = report["bytes"][fmt]
      rows.append([fmt, f"{b['stored']:,}" if "stored" in b else "-",
                   f"{b['deflate']:,}" if "deflate" in b else "-"])
  if "file_ratio" in report:
    r = report["file_ratio"]
    rows.append(["dense / sparse", f"{r['stored']:.2f}x", f"{r['deflate']:.2f}x"])
  lines += tables.text(rows, rule=False)
  if report["nonzero_ratio"]:
    lines.append(f"weights / nonzero weights (kernels): {report['weights_total']:,} / "
                 f"{report['weights_nonzero']:,} = {report['nonzero_ratio']:.2f}x")
  return "\n".join(lines)


# ---------------------------------------------------------------- command line


def define_flags() -> None:
  """The command's flags; only when run as a program (miajax.report owns a global --out)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("out", None, "The .npz file to write.")
  flags.DEFINE_string("format", "sparse", "sparse (pruned kernels compact) or dense.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_bool("compress", True, "Deflate the archive (np.savez_compressed).")
  flags.DEFINE_bool("json", False, "Print one JSON object instead of the tables.")


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) != 2:
    what = "missing TRIAL_DIR" if len(argv) < 2 else f"unexpected arguments: {' '.join(argv[2:])}"
    raise UserError(f"{what}; {_USAGE}")
  f = flags.FLAGS
  if not f.out:
    raise UserError(f"--out is missing; {_USAGE}")
  report = export(argv[1], f.out, fmt=f.format, step=f.step, compress=f.compress)
  print(json.dumps(report, indent=1) if f.json else format_text(report))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
