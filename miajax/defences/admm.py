"""ADMM pruning (the paper's defence): pretrain -> admm -> retrain.

App. B: minimise loss + sum_i rho_i/2 ||W_i - Z_i + U_i||^2 over W; every `admm.update_every`
steps Z_i = Pi_{n_i}(W_i + U_i) (keep the n_i largest magnitudes) and U_i += W_i - Z_i. Then
the hard prune (keep the n_i largest |W_i|, fresh optimizer moments) and masked retraining, so
pruned weights stay exactly 0. The keep counts n_i and rho are traced per trial.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from miajax import durations
from miajax import pruning
from miajax import steps
from miajax.defences.defence import Defence, Phase, Recipe


class AdmmState(NamedTuple):
  """ADMM's state beside the weights; each a tree like the params (rho a scalar)."""
  z: Any      # the projection Pi(W + U) onto the keep counts
  u: Any      # the scaled dual variable
  rho: Any    # the proximal weight, grown by admm.rho_growth at each update
  mask: Any   # True where a weight survives the hard prune (all True before it)
  # The weights at pretraining's end, for audits that compare the dense model with the
  # pruned one (`pruning.keep_dense`; {} when not kept). Checkpointed with the rest, so a
  # resumed run still has them.
  dense: Any = {}

SECTIONS = {
    "pruning": {
        "keep": "paper",       # "paper", overall fraction, "uniform:F", "a,b,c", "fc1=0.1,..."
        "pretrain_epochs": 200.0,
        "retrain_epochs": 50.0,
        # The same durations in steps or examples instead (`durations`): None unless set.
        **durations.alternatives("pretrain_epochs"),
        **durations.alternatives("retrain_epochs"),
        # Keep the dense weights of pretraining's end in the state (`AdmmState.dense`), for
        # audits that compare them with the pruned ones (`audits/differencing.py`).
        "keep_dense": False,
    },
    "admm": {
        "epochs": 50.0,
        **durations.alternatives("epochs"),
        "rho": 1e-3,
        "rho_growth": 1.0,     # rho *= growth at each Z/U update (1.0: fixed rho)
        "update_every": 100,   # steps between Z-projections and dual updates
    },
}


def _validate(c, need, used):
  need(c.admm.rho >= 0, "admm.rho", "a number >= 0")
  need(c.admm.rho_growth >= 1.0, "admm.rho_growth", "a number >= 1")
  need(c.admm.update_every > 0, "admm.update_every", "a positive integer")
  need(isinstance(c.pruning.keep_dense, bool), "pruning.keep_dense", "True or False")
  if used:
    pruning.parse_keep(c.pruning.keep)


def _build(config, phase_steps, model, tx, num_classes, num_members):
  del num_classes, num_members
  plain = functools.partial(steps.train_step, model=model, tx=tx)
  keep = pruning.parse_keep(config.pruning.keep)
  rho = float(config.admm.rho)
  hp = lambda params: {"counts": pruning.count_tree(params, pruning.keep_counts(
      params, pruning.keep_fractions(params, keep, model=config.model.name))),
      "rho": jnp.float32(rho)}
  pretrain, admm, retrain = phase_steps
  return Recipe(
      phases=[
          Phase("pretrain", pretrain, plain),
          Phase("admm", admm,
                functools.partial(_admm_step, model=model, tx=tx),
                enter=functools.partial(_admm_enter, keep_dense=admm > 0),
                periodic=functools.partial(_admm_update, growth=config.admm.rho_growth),
                every=config.admm.update_every),
          Phase("retrain", retrain,
                functools.partial(steps.train_step, model=model, tx=tx, masked=True),
                enter=functools.partial(_hard_prune, tx=tx, keep_dense=admm == 0)),
      ],
      extra=functools.partial(_pruning_extra, keep_dense=config.pruning.keep_dense), hp=hp)


DEFENCE = Defence(
    name="pruning",
    phases=(("pretrain", "pruning.pretrain_epochs"), ("admm", "admm.epochs"),
            ("retrain", "pruning.retrain_epochs")),
    build=_build, sections=SECTIONS,
    sweeps={"keep": ("pruning.keep", "keep"), "rho": ("admm.rho", "rho")},
    validate=_validate, traced=("counts", "rho"), terms=(("proximal", "admm"),),
    dense_phase="pretrain")


def _pruning_extra(params, keep_dense=False) -> AdmmState:
  zeros = jax.tree.map(jnp.zeros_like, params)
  return AdmmState(z=zeros, u=zeros, rho=jnp.zeros((), jnp.float32),
                   mask=jax.tree.map(lambda p: jnp.ones(p.shape, jnp.bool_), params),
                   dense=zeros if keep_dense else {})


def _kept_dense(state, keep: bool) -> dict:
  """{"dense": the weights now} where the state keeps them and `keep` says this is
  pretraining's end (the first phase that changes them after pretraining begins); else {}."""
  return {"dense": state.params} if keep and state.extra.dense else {}


def _prunable_map(fn, counts, *trees):
  """fn over the prunable leaves (count not None); other leaves give None."""
  return jax.tree.map(lambda n, *xs: None if n is None else fn(*xs), counts, *trees,
                      is_leaf=lambda x: x is None)


def _admm_enter(state, hp, keep_dense=False):
  z = pruning.project_tree(state.params, hp["counts"])
  u = jax.tree.map(jnp.zeros_like, state.params)
  return state.replace(extra=state.extra._replace(z=z, u=u, rho=hp["rho"],
                                                  **_kept_dense(state, keep_dense)))


def _admm_loss(params, batch_stats, model, batch, *, loss_fn, extra: AdmmState, counts):
  """The W-step objective: loss_fn + sum_i rho/2 ||W_i - Z_i + U_i||^2."""
  loss, aux = loss_fn(params, batch_stats, model, batch)
  penalty = _prunable_map(lambda w, z, u: jnp.sum(jnp.square(w - z + u)), counts, params,
                          extra.z, extra.u)
  return loss + extra.rho / 2 * sum(jax.tree.leaves(penalty)), aux


def _admm_step(state, batch, hp, *, model, tx, loss_fn=steps.classifier_loss):
  """W-step: the optimizer on the task loss plus the proximal term."""
  loss = functools.partial(_admm_loss, loss_fn=loss_fn, extra=state.extra, counts=hp["counts"])
  return steps.train_step(state, batch, hp, model=model, tx=tx, loss_fn=loss)


def _admm_update(state, hp, *, growth):
  """Z-projection, dual update, residuals ||W_i - Z_i|| per layer (ADMM has converged when
  they approach 0); rho grows by `growth` per update (1.0: fixed).

  U is the scaled dual, U = Y / rho. When rho is multiplied by g, U must be divided by g so the
  unscaled dual Y carries over (Boyd et al. 2011, section 3.4.1); otherwise every earlier
  residual would weigh g^updates too much in the proximal term.
  """
  z = pruning.project_tree(jax.tree.map(jnp.add, state.params, state.extra.u), hp["counts"])
  u = jax.tree.map(lambda u, w, z: (u + w - z) / growth, state.extra.u, state.params, z)
  residual = _prunable_map(lambda w, z: jnp.sqrt(jnp.sum(jnp.square(w - z))), hp["counts"],
                           state.params, z)
  extra = state.extra._replace(z=z, u=u, rho=state.extra.rho * growth)
  flat = {"residual/" + "/".join(str(k.key) for k in path): r
          for path, r in jax.tree_util.tree_leaves_with_path(residual)}
  return state.replace(extra=extra), flat


def _hard_prune(state, hp, *, tx, keep_dense=False):
  """mask_i = top-n_i(|W_i|); W *= mask; fresh optimizer moments so nothing pruned revives.
  With no ADMM steps, pretraining ends here: its dense weights are kept first."""
  mask = pruning.mask_tree(state.params, hp["counts"])
  params = pruning.apply_mask(state.params, mask)
  return state.replace(params=params, opt_state=tx.init(params),
                       extra=state.extra._replace(mask=mask, **_kept_dense(state, keep_dense)))
