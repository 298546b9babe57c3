"""One defence around another: `compose(minmax.DEFENCE, admm.DEFENCE)` is pruning + Min-Max."""

from miajax.defences.defence import Defence


def compose(outer: Defence, inner: Defence, name: str | None = None) -> Defence:
  """`outer` (a defence with `wrap`) around `inner` (one that builds): inner's phases, every
  step wrapped by outer's; both defences' sections, sweeps, checks, traced values, terms,
  record fields and step costs (inner's plus what outer adds). The name defaults to "<inner>_<outer>"."""
  if outer.wrap is None or inner.build is None:
    raise ValueError(f"compose({outer.name}, {inner.name}): the outer must wrap, the inner "
                     "build")

  def build(config, phase_steps, model, tx, num_classes, num_members):
    recipe = inner.build(config, phase_steps, model, tx, num_classes, num_members)
    return outer.wrap(recipe, config, model, num_classes)

  def validate(c, need, used):
    for part in (inner, outer):
      if part.validate is not None:
        part.validate(c, need, used)

  def check(*args):
    for part in (inner, outer):
      if part.check is not None:
        part.check(*args)

  def step_cost(config, phase):
    own = inner.step_cost(config, phase) if inner.step_cost else 1.0
    return own + (outer.step_cost(config, phase) if outer.step_cost else 0.0)

  return Defence(
      name=name or f"{inner.name}_{outer.name}", phases=inner.phases, build=build,
      sections={**inner.sections, **outer.sections}, sweeps={**inner.sweeps, **outer.sweeps},
      validate=validate, traced=inner.traced + outer.traced, terms=inner.terms + outer.terms,
      side_sets=outer.side_sets or inner.side_sets,
      check=check if inner.check or outer.check else None,
      report_fields=inner.report_fields + outer.report_fields, step_cost=step_cost,
      model_field=inner.model_field, dense_phase=inner.dense_phase)
