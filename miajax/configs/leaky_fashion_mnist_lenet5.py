"""A regime where the target leaks on a CPU: LeNet-5 memorising 2,500 Fashion-MNIST images.

With 60,000 members and a few epochs nothing leaks (baseline attack AUC 0.500), so no defence
can be told from another. A small member set trained to memorisation does, as in the MIA
literature (Shokri et al. and Nasr et al. use small member sets for the same reason). Here
2,500 members (39 steps an epoch at batch 64) train 100 epochs; pruning pretrains as long,
runs ADMM for 20 epochs with one Z/U update an epoch (rho 0.01 growing 1.3x, to ~1.9) and
retrains the masked model for 30; the post-hoc attacks are retrained for 100 epochs (App. D).
The audit set holds 1,250 members and 1,250 non-members.

  python -m miajax.main --config=configs/leaky_fashion_mnist_lenet5.py --workdir=DIR
      the five methods, seeds 0-2
  python -m miajax.main --config=configs/leaky_fashion_mnist_lenet5.py:sweep --workdir=DIR
      Algorithm 1: pruning at six keep levels (App. E's rates among them) beside the baseline,
      seeds 0-2, one stack per method, and the selected level
  python -m miajax.main --config=configs/leaky_fashion_mnist_lenet5.py:controls --workdir=DIR
      is it pruning or any regulariser? Pruning at the paper's rates beside two controls:
      the same schedule without sparsity (keep 1.0: pretraining, ADMM's proximal steps, a
      fresh optimizer's retraining) and the baseline with L2 weight decay at three strengths
      (the one matching pruning's split-0 train-test gap is named by the report), and a dense
      LeNet-5 as small as the pruned one (`narrow`: 4,005 weights against 4,012); seeds 0-4,
      each with its own membership split, so `python -m miajax.report DIR` pairs every trial
      with the baseline of its seed and split. Beside the default audits, the pruning-aware
      attack (`samia`), the differencing attack on the dense checkpoint (`differencing`) and
      the white-box gradient norm over the surviving weights (`grad_norm`)
  python -m miajax.main --config=configs/leaky_fashion_mnist_lenet5.py:controls_small --workdir=DIR
      one part of `:controls` (over an hour on 2 CPU cores): `controls_schedule` (keep 1.0),
      `controls_l2` (weight decay) or `controls_small` (`narrow`), each beside the baseline
      and pruning at the paper's rates, seeds 0-4 on their own splits, with every audit above
  python -m miajax.main --config=configs/leaky_fashion_mnist_lenet5.py:privacy --workdir=DIR
      one privacy scale for every defence: 500 mislabelled canaries (each a member by a fair
      coin) beside the 2,500 members; the baseline, pruning at three keep levels, Min-Max at
      three gammas and DP-SGD at three epsilons, one seed; each trial's empirical epsilon
      (the `epsilon` audit) against its test accuracy in `python -m miajax.report DIR`
"""

from miajax import config as config_lib

# `:controls` in parts of under an hour each on 2 CPU cores: pruning's schedule without its
# sparsity (keep 1.0), L2 weight decay at three strengths, a dense model as small as the
# pruned one. `:controls` alone runs all three in one stack.
CONTROL_PARTS = ("controls_schedule", "controls_l2", "controls_small")


def get_config(arg=None):
  c = config_lib.base()
  c.methods = ("baseline", "pruning", "minmax", "pruning_minmax", "dp")
  c.seeds = (0, 1, 2)
  c.data.name = "fashion_mnist"
  c.data.manual_dir = "/usr/share/datasets/fashion-mnist"
  c.data.train_size = 2500
  c.model.name = "lenet5"
  c.train.epochs = 100.0
  c.pruning.pretrain_epochs = 100.0
  c.admm.epochs = 20.0
  c.admm.update_every = 39          # one Z/U update an epoch
  c.admm.rho = 0.01
  c.admm.rho_growth = 1.3
  c.pruning.retrain_epochs = 30.0
  c.minmax.gamma = 1.0
  # App. D's attack rate of 1e-5 barely moves the inner attack in a run of 4,000 steps.
  c.minmax.attack_learning_rate = 1e-3
  c.attack.epochs = 100
  c.train.log_every = 500
  c.train.checkpoint_every = 2000
  args = config_lib.parse_arg(arg, allowed=("smoke", "sweep", "controls", *CONTROL_PARTS,
                                             "privacy"))
  if "sweep" in args:
    c.methods = ("baseline", "pruning")
    c.sweep.keep = (0.5, 0.3, 0.2, 0.1, 0.05, "paper")
  parts = CONTROL_PARTS if "controls" in args else tuple(p for p in CONTROL_PARTS if p in args)
  if parts:
    # Every part trains the baseline and pruning at the paper's rates (the same numbers in
    # each part: a trial is a function of its seed and split), so each pairs on its own.
    c.methods = ("baseline", "pruning")
    c.seeds = (0, 1, 2, 3, 4)
    c.split_per_trial = True
    c.sweep.keep = ("paper", 1.0) if "controls_schedule" in parts else ("paper",)
    if "controls_l2" in parts:
      c.methods += ("regularised",)
      c.sweep.weight_decay = (1e-4, 1e-3, 1e-2)
    if "controls_small" in parts:
      c.methods += ("narrow",)
    # No Algorithm 1 here: its cross-validated gains are the costly part of a swept audit.
    # The attacks that know the defence: pruning-aware (SAMIA-style), differencing, which
    # reads the dense weights pruning keeps from its pretraining's end, and white-box.
    c.audits = tuple(a for a in c.audits if a != "selection_gain") + (
        "samia", "differencing", "grad_norm")
    c.pruning.keep_dense = True
  if "privacy" in args:
    c.methods = ("baseline", "pruning", "minmax", "dp")
    c.seeds = (0,)
    c.sweep.keep = (0.3, 0.1, "paper")
    c.sweep.gamma = (0.3, 1.0, 3.0)
    c.sweep.epsilon = (0.5, 2.0, 8.0)
    c.canaries.count = 500
    c.canaries.kind = "mislabel"
    # Empirical epsilon beside the usual audits; no Algorithm 1 (its cross-validated gains
    # are the costly part of a swept audit, and nothing is chosen here).
    c.audits = tuple(a for a in c.audits if a != "selection_gain") + ("epsilon",)
  if "smoke" in args:
    config_lib.smoke(c)
  return c
