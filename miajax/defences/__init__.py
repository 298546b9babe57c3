"""The defences a run can train, by name: `get(name)`, `NAMES`, and `register` for a new one.

Each module holds one defence (`defence.Defence`); `compose` puts one around another. Adding a
defence is its module and one `register` line below; `config.METHODS`, the config's sections
and sweep keys, the trials and the trainer then know it.
"""

from miajax.defences import admm
from miajax.defences import baseline
from miajax.defences import dp
from miajax.defences import minmax
from miajax.defences import narrow
from miajax.defences import regularised
from miajax.defences.compose import compose
from miajax.defences.defence import Defence, field_value

_REGISTRY: dict[str, Defence] = {}
NAMES: tuple[str, ...] = ()


def register(defence: Defence) -> None:
  """Adds a defence to the registry, its name to NAMES.

  Args:
    defence: the declaration; its name must be new.
  """
  global NAMES
  if defence.name in _REGISTRY:
    raise ValueError(f"defence {defence.name!r} is registered already")
  _REGISTRY[defence.name] = defence
  NAMES = tuple(_REGISTRY)


def get(name: str) -> Defence:
  """The registered defence named `name`.

  Args:
    name: a method name of NAMES.

  Returns:
    Its `Defence`; a ValueError listing NAMES for any other name.
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown method {name!r}; allowed: {', '.join(NAMES)}")
  return _REGISTRY[name]


def sections() -> dict[str, dict]:
  """Every registered defence's config sections with their defaults, in registration order."""
  out: dict[str, dict] = {}
  for d in _REGISTRY.values():
    for section, fields in d.sections.items():
      if out.setdefault(section, dict(fields)) != dict(fields):
        raise ValueError(f"config section {section!r} is declared twice, differently")
  return out


def duration_fields() -> tuple[str, ...]:
  """The epochs field of every registered defence's phases, once each (`durations`)."""
  return tuple(dict.fromkeys(f for d in _REGISTRY.values() for _, f in d.phases))


def sweeps() -> dict[str, tuple[str, tuple[str, ...], str]]:
  """sweep key -> (config field, the defences that read it, trial-name prefix)."""
  out: dict[str, tuple[str, tuple[str, ...], str]] = {}
  for d in _REGISTRY.values():
    for key, (field, prefix) in d.sweeps.items():
      _, used_by, _ = out.get(key, (field, (), prefix))
      out[key] = (field, used_by + (d.name,), prefix)
  return out


register(baseline.DEFENCE)
register(admm.DEFENCE)
register(compose(minmax.DEFENCE, baseline.DEFENCE, name="minmax"))
register(compose(minmax.DEFENCE, admm.DEFENCE))            # pruning_minmax (Eq. 3)
register(dp.DEFENCE)
register(regularised.DEFENCE)
register(narrow.DEFENCE)
