"""The audits a run can measure its models with, by name: `get(name)`, `NAMES`, `DEFAULT`,
`register` for a new one, and `audit_stack`, which runs a config's audits on a trained stack.

Each module holds one audit (`audit.Audit`), or a family (`thresholds`). Adding an audit is
its module and one `register` line below; `config.audits` then accepts its name. The trainer
evaluates each set the audits read once (`evaluate.StackOutputs`) and builds one record per
trial from every audit's fields.
"""

import numpy as np

from miajax import evaluate
from miajax.audits import differencing
from miajax.audits import epsilon
from miajax.audits import grad_norm
from miajax.audits import lira
from miajax.audits import margin
from miajax.audits import nn
from miajax.audits import samia
from miajax.audits import selection
from miajax.audits import thresholds
from miajax.audits.audit import LAYOUTS, Audit, Result, Target

_REGISTRY: dict[str, Audit] = {}
NAMES: tuple[str, ...] = ()


def register(audit: Audit) -> None:
  """Adds an audit to the registry, its name to NAMES (and to what `config.audits` accepts).

  Args:
    audit: the declaration: a new name, a layout of LAYOUTS and exactly one of run, score,
      example_score.
  """
  global NAMES
  if audit.name in _REGISTRY:
    raise ValueError(f"audit {audit.name!r} is registered already")
  kinds = (audit.run, audit.score, audit.example_score)
  if audit.layout not in LAYOUTS or sum(k is not None for k in kinds) != 1:
    raise ValueError(f"audit {audit.name!r}: a layout of {LAYOUTS}, and one of run, score, "
                     "example_score")
  _REGISTRY[audit.name] = audit
  NAMES = tuple(_REGISTRY)


def registered() -> tuple[Audit, ...]:
  """Every registered audit, in registration order."""
  return tuple(_REGISTRY.values())


def get(name: str) -> Audit:
  """The registered audit named `name`.

  Args:
    name: an audit name of NAMES.

  Returns:
    Its `Audit`; a ValueError listing NAMES for any other name.
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown audit {name!r}; allowed: {', '.join(NAMES)}")
  return _REGISTRY[name]


register(nn.AUDIT)
for _audit in thresholds.AUDITS:
  register(_audit)
register(selection.AUDIT)
register(selection.GAIN)
register(lira.AUDIT)
register(margin.AUDIT)
register(grad_norm.AUDIT)
register(samia.AUDIT)
register(differencing.AUDIT)
register(epsilon.AUDIT)

# What a run measures unless config.audits says otherwise: every audit but the opt-in ones
# (margin; grad_norm, which costs a backward pass per example; samia, several forward passes
# per example; differencing, which needs the dense weights kept, pruning.keep_dense; epsilon, the
# privacy scale).
DEFAULT = ("nn", "loss", "confidence", "entropy", "logit", "selection", "selection_gain",
           "lira")


def layout(config) -> str:
  """The stack layout a config trains: "lira" with LiRA shadows, else "splits".

  Args:
    config: the run's config.
  """
  return "lira" if config.lira.num_shadows else "splits"


def selected(config, layout_name: str) -> list[Audit]:
  """The config's audits that apply to stacks of `layout_name`, in config order.

  Args:
    config: the run's config.
    layout_name: "splits" or "lira".
  """
  return [a for a in map(get, config.audits) if a.layout == layout_name]


def describe(config, layout_name: str, swept: bool) -> str:
  """What auditing a stack runs, for its progress line.

  Args:
    config: the run's config.
    layout_name: the stack's layout.
    swept: whether the stack sweeps a hyperparameter (selection runs only then).
  """
  titles = [a.title for a in selected(config, layout_name)
            if swept or a.name not in ("selection", "selection_gain")]
  return ", ".join(dict.fromkeys(titles)) or "nothing"


def audit_stack(stack: evaluate.StackOutputs, seeds: list[int], config, num_classes: int,
                swept: bool) -> list[Result]:
  """Every audit of `config.audits` for the stack's layout on each trial: one Result per
  trial with the fields of all of them, its per-example scores and the files to write.

  A trial's audits draw from one generator seeded by its seed, in config order, the threshold
  attacks' headline last (`evaluate.score_audit`). In the "splits" layout the per-example
  scores go to the trial's scores.npz with its logits and roles (`evaluate.scores_file`).

  Args:
    stack: the trained stack's outputs.
    seeds: each trial's seed, in stack order.
    config: the run's config.
    num_classes: the classes of the labels.
    swept: whether the stack sweeps a hyperparameter.

  Returns:
    One Result per trial: its record fields, per-example scores, headline candidate and files.
  """
  audits = selected(config, stack.layout)
  runs = [a for a in audits if a.run is not None]
  scored = [a for a in audits if a.score is not None or a.example_score is not None]
  results = []
  for k, seed in enumerate(seeds):
    target = Target(k=k, seed=seed, stack=stack, config=config, num_classes=num_classes,
                    swept=swept)
    rng = np.random.default_rng(seed)
    fields, scores, candidate, files = {}, {}, None, {}
    for a in runs:
      if a.once and k:
        fields |= dict.fromkeys(a.fields)       # measured on the target only
        continue
      r = a.run(target, rng)
      fields |= r.fields
      scores |= r.scores
      files |= r.files
      candidate = r.candidate or candidate
    if stack.layout == "splits":
      out = stack.membership(k)
      if scored or candidate is not None:
        for a in scored:
          scores[f"score_{a.name}"] = (a.score(out.logits[k], out.labels) if a.score
                                       else a.example_score(target))
        more, _ = evaluate.score_audit(
            scores, out.roles, num_classes, seed, rng=rng,
            replicates=evaluate.bootstrap_replicates(config.attack), nn=candidate,
            notes=fields.get("notes", ()), attacks=tuple(a.name for a in scored))
        fields |= more
      files["scores.npz"] = evaluate.scores_file(out, k, scores)
    results.append(Result(fields, scores, candidate, files))
  return results
