"""The config every run starts from, the `:smoke` shrink, and the checks on user values.

Config files in `configs/` call `base()` and change what their paper setting needs, so a
field exists under the same name everywhere and `--config.x=y` can override any of them.
"""

import copy

import ml_collections

from miajax.errors import UserError, finite_positive

OPTIMIZERS = ("adam", "sgd")
STRATEGIES = ("auto", "vmap", "map", "loop", "devices")


def __getattr__(name: str):
  # METHODS: the registered defences' names (miajax/defences/), read when asked for, since
  # the defences import this module.
  if name == "METHODS":
    from miajax import defences  # pylint: disable=g-import-not-at-top
    return defences.NAMES
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0                   # membership splits; shared by every trial of the run
  c.seeds = (0,)               # one trial per seed and method: init, data order, noise
  c.split_per_trial = False    # True: each trial draws its own split from (seed, its seed)
  c.methods = ("baseline",)
  # Set by `:smoke` (`smoke()`): a CPU check, which falls back to SYNTHETIC images when the
  # dataset is not prepared here (`data.synthetic`); any other run stops and says how to
  # prepare it.
  c.smoke = False

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"
  c.data.dir = ml_collections.FieldReference(None, field_type=str)
  c.data.manual_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.batch_size = 64
  c.data.eval_batch_size = 512
  c.data.train_size = ml_collections.FieldReference(None, field_type=int)
  c.data.augment = False       # random crop + flip (CIFAR), inception crop (ImageNet)
  c.data.image_size = 224      # ImageNet crop size; other datasets keep their own geometry
  c.data.workers = 0           # grain prefetch threads; 0 reads in the training thread
  # True: SYNTHETIC stand-ins of the dataset's shape and classes (miajax/data/synthetic.py),
  # smoke runs only. A smoke run whose data is not prepared sets it itself, so the workdir's
  # config.json says what the run saw and a rerun on the real data will not resume it.
  c.data.synthetic = False

  c.model = ml_collections.ConfigDict()
  c.model.name = "lenet5"
  c.model.norm = "batch"       # "group" or "none" where BatchNorm must go (DP-SGD)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"
  # App. C states Adam at 0.05; 1e-3 is Adam's customary rate. Override to reproduce 0.05.
  c.optimizer.learning_rate = 1e-3
  c.optimizer.momentum = 0.9   # sgd only
  c.optimizer.weight_decay = 0.0

  c.train = ml_collections.ConfigDict()
  c.train.epochs = 300.0       # defences of one train phase (baseline, minmax, dp); App. C
  c.train.log_every = 50       # steps between progress lines
  c.train.metrics_every = 10   # steps between curve points (metrics.jsonl, TensorBoard, NaN
                               # checks); at most log_every
  c.train.checkpoint_every = 500
  c.train.strategy = "auto"    # how trials execute: vmap, map, loop, devices; see steps.lift

  # Each defence's own sections (pruning, admm, minmax, dp, ...), declared in its module.
  from miajax import defences  # pylint: disable=g-import-not-at-top
  for section, fields in defences.sections().items():
    c[section] = ml_collections.ConfigDict(fields)
  # Every phase's duration may also be given in steps or examples (`durations`).
  from miajax import durations  # pylint: disable=g-import-not-at-top
  durations.add_alternatives(c, defences.duration_fields())

  c.attack = ml_collections.ConfigDict()
  c.attack.kind = "nasr"       # "one_layer" for the CIFAR-10 CNN row
  # What the post-hoc attack sees of a prediction: "log_losses" (log(-log p_i)) or
  # "log_probs", which do not saturate, or "probs" (the paper's softmax, which does in
  # float32); Min-Max's inner attack always sees probabilities.
  c.attack.features = "log_losses"
  c.attack.epochs = 100        # App. D: post-hoc attack retrained for 100 epochs
  c.attack.learning_rate = 1e-3
  c.attack.batch_size = 64
  c.attack.bootstrap_replicates = 1000   # per-trial intervals over the audit examples

  # Trials that differ in traced hyperparameters (see miajax/trials.py): each non-empty tuple
  # replaces its field for the methods that use it, e.g. sweep.keep=(0.5, 0.1, "paper"); one
  # trial per grid point (or per zipped point, mode="zip") and seed, one stack per method.
  c.sweep = ml_collections.ConfigDict()
  c.sweep.mode = "grid"
  for key in defences.sweeps():   # keep, rho, gamma, epsilon, ...: the defences' sweep keys
    c.sweep[key] = ()

  # Algorithm 1's choice among a swept method's configurations: the smallest attack gain,
  # measured by cross-validation on split 0 (never the audit split); also the smallest under
  # a bound on the test accuracy lost against the baseline.
  c.select = ml_collections.ConfigDict()
  c.select.folds = 2
  c.select.max_accuracy_drop = 0.01

  # LiRA (Carlini et al. 2022): per method, a target and num_shadows shadow models of the same
  # recipe train together as one stack, each on a seeded random half of the members (the
  # pool); 0 turns it off and runs the paper's audit instead. RMIA (Zarifzadeh et al. 2024)
  # runs beside it with the shadows as reference models; rmia_offline_a is the `a` of its
  # offline approximation Pr(x) = ((1 + a) Pr_OUT(x) + 1 - a) / 2: None chooses it per target
  # with shadows standing in as the target (rmia.choose_offline_a), a number in [0, 1] forces it.
  c.lira = ml_collections.ConfigDict()
  c.lira.num_shadows = 0
  c.lira.rmia_offline_a = ml_collections.FieldReference(None, field_type=float)

  # Canaries (miajax/canaries.py): `count` examples appended to the train split, each a member
  # by a fair coin drawn from `seed`; "mislabel" (train images outside the members with a
  # wrong label) or "ood" (noise images). The `epsilon` audit bounds the privacy loss from
  # their `score` (a threshold audit's). 0 plants none.
  from miajax import canaries  # pylint: disable=g-import-not-at-top
  c.canaries = ml_collections.ConfigDict(canaries.SECTION)

  # The audits each trained trial is measured with (miajax/audits): those of the run's layout
  # run, LiRA's with lira.num_shadows > 0, the others otherwise. Opt-in beyond the default:
  # margin.
  from miajax import audits  # pylint: disable=g-import-not-at-top
  c.audits = audits.DEFAULT
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config to a CPU check of seconds to minutes: few steps, small sets; marks it a
  smoke run, which may use synthetic data where the real data is not prepared."""
  c.smoke = True
  # The caps apply to durations in epochs; one given in steps or examples is left as set.
  cap = lambda x, most: x if x is None else min(x, most)
  c.train.epochs = cap(c.train.epochs, 2.0)
  c.pruning.pretrain_epochs = cap(c.pruning.pretrain_epochs, 1.0)
  c.admm.epochs = cap(c.admm.epochs, 1.0)
  c.admm.update_every = min(c.admm.update_every, 10)
  c.pruning.retrain_epochs = cap(c.pruning.retrain_epochs, 1.0)
  c.attack.epochs = min(c.attack.epochs, 5)
  c.attack.bootstrap_replicates = min(c.attack.bootstrap_replicates, 200)
  c.train.log_every = 10
  c.train.checkpoint_every = 50
  return c


def cifar(dataset: str, model: str, methods: tuple[str, ...], arg: str | None):
  """A CIFAR row of the paper: App. C-E settings, random crop + flip; smoke: 256 members."""
  c = base()
  c.methods = methods
  c.data.name = dataset
  c.data.augment = True
  c.model.name = model
  c.admm.update_every = 780         # about one Z/U update an epoch of 50,000
  c.train.log_every = 200
  c.train.checkpoint_every = 2000
  if "smoke" in parse_arg(arg):
    smoke(c)
    c.data.train_size = 256
    c.data.batch_size = 16
    c.data.eval_batch_size = 64
  return c


def imagenet(model: str, arg: str | None):
  """An ImageNet row (Table 3): batch 64 and Adam as App. C states; the epochs are not given
  for Table 3, so 90 (pruning: 60 pretraining, 15 ADMM, 15 retraining). Inception crop at 224
  for training, centre crop for evaluation; smoke: 32 members at batch 4, still at 224."""
  c = base()
  c.methods = ("baseline", "pruning")
  c.data.name = "imagenet2012"
  c.data.augment = True
  c.data.workers = 16
  c.model.name = model
  c.train.epochs = 90.0
  c.pruning.pretrain_epochs = 60.0
  c.admm.epochs = 15.0
  c.pruning.retrain_epochs = 15.0
  c.admm.update_every = 20000       # one Z/U update an epoch of 1.28M at batch 64
  c.attack.epochs = 20
  c.train.log_every = 500
  c.train.checkpoint_every = 5000
  if "smoke" in parse_arg(arg):
    smoke(c)
    c.data.train_size = 32
    c.data.batch_size = 4
    c.data.eval_batch_size = 8
    c.data.workers = 0
  return c


def parse_arg(arg: str | None, allowed: tuple[str, ...] = ("smoke",)) -> set[str]:
  """The words of `--config=FILE:ARG` (comma-separated); `allowed` are the config's own."""
  words = {w for w in (arg or "").split(",") if w}
  unknown = words - set(allowed)
  if unknown:
    raise UserError(f"config argument {','.join(sorted(unknown))!r} is not known; allowed: "
                    f"{', '.join(allowed)}")
  return words


def with_synthetic(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of smoke config `c` that says it ran on synthetic data (for its config.json)."""
  c = copy.deepcopy(c)
  c.data.synthetic = True
  return c


def validate(c: ml_collections.ConfigDict) -> None:
  """Rejects values no run can use, before anything touches the workdir."""
  from miajax import defences  # pylint: disable=g-import-not-at-top
  from miajax import models  # pylint: disable=g-import-not-at-top
  from miajax.data import sources  # pylint: disable=g-import-not-at-top

  def need(ok: bool, field: str, allowed: str) -> None:
    if not ok:
      value = c
      for part in field.split("."):
        value = value[part]
      raise UserError(f"{field}={value!r} is not allowed; allowed: {allowed}")

  from miajax import audits  # pylint: disable=g-import-not-at-top
  names = tuple(c.audits) if not isinstance(c.audits, str) else (c.audits,)
  need(len(names) == len(set(names)) and all(a in audits.NAMES for a in names), "audits",
       "distinct names among " + ", ".join(audits.NAMES))
  layout = audits.layout(c)
  need(any(audits.get(a).layout == layout for a in names), "audits",
       f"at least one audit of a {'LiRA' if layout == 'lira' else 'membership-split'} run: " +
       ", ".join(a for a in audits.NAMES if audits.get(a).layout == layout))
  methods = tuple(c.methods) if not isinstance(c.methods, str) else (c.methods,)
  need(len(methods) > 0 and all(m in defences.NAMES for m in methods), "methods",
       "a non-empty subset of " + ", ".join(defences.NAMES))
  seeds = c.seeds if not isinstance(c.seeds, int) else (c.seeds,)
  need(len(seeds) > 0 and len(set(seeds)) == len(seeds) and
       all(isinstance(s, int) and s >= 0 for s in seeds), "seeds",
       "distinct non-negative integers, e.g. 0,1,2")
  need(c.data.name in sources.NAMES, "data.name", ", ".join(sources.NAMES))
  # A gs:// data dir is copied to local disk (ArrayRecord's reader reads local files only),
  # which only a dataset held in memory allows; any other URL is no data dir TFDS reads here.
  data_dir = str(c.data.dir or "")
  if data_dir.startswith("gs://"):
    from miajax.data import staging  # pylint: disable=g-import-not-at-top
    why = staging.refusal(c.data.name, data_dir)
    if why:
      raise UserError(why)
  need("://" not in data_dir or data_dir.startswith("gs://"), "data.dir",
       "None, a local or shared-disk directory, or gs://BUCKET/PATH")
  # Synthetic numbers must never pass for a real run's.
  need(not c.data.synthetic or c.smoke, "data.synthetic",
       "False outside a :smoke config (synthetic images are for smoke checks only)")
  need(c.model.name in models.NAMES, "model.name", ", ".join(models.NAMES))
  need(c.model.norm in models.NORMS, "model.norm", ", ".join(models.NORMS))
  need(c.data.batch_size > 0, "data.batch_size", "a positive integer")
  need(c.data.eval_batch_size > 0, "data.eval_batch_size", "a positive integer")
  need(c.optimizer.name in OPTIMIZERS, "optimizer.name", ", ".join(OPTIMIZERS))
  need(finite_positive(c.optimizer.learning_rate), "optimizer.learning_rate",
       "a finite number > 0")
  need(c.optimizer.weight_decay >= 0, "optimizer.weight_decay", "a number >= 0")
  registered = [defences.get(name) for name in defences.NAMES]
  from miajax import durations  # pylint: disable=g-import-not-at-top
  for field in defences.duration_fields():
    if (error := durations.problem(c, field)) is not None:
      raise UserError(error)
  # A method that trains 0 steps would audit its untrained initialisation.
  for fields in dict.fromkeys(tuple(f for _, f in defences.get(m).phases) for m in methods):
    set_ = [next(iter(durations.given(c, f))) for f in fields]   # the form each is given in
    if len(fields) == 1:
      need(durations.amount(c, fields[0]) > 0, set_[0], "a number > 0 (0 trains nothing)")
    else:
      need(sum(durations.amount(c, f) for f in fields) > 0, set_[-1],
           " + ".join(set_) + " adding up to > 0")
  need(c.train.log_every > 0, "train.log_every", "a positive integer")
  need(c.train.metrics_every > 0, "train.metrics_every", "a positive integer")
  need(c.train.checkpoint_every > 0, "train.checkpoint_every", "a positive integer")
  need(c.train.strategy in STRATEGIES, "train.strategy", ", ".join(STRATEGIES))
  need(c.sweep.mode in ("grid", "zip"), "sweep.mode", "grid, zip")
  need(c.select.folds >= 2, "select.folds", "an integer >= 2")
  need(0 <= c.select.max_accuracy_drop <= 1, "select.max_accuracy_drop",
       "a fraction in [0, 1], e.g. 0.01 for one point")
  # Each defence checks its own sections (every run's config holds them all) and, when the
  # run trains it, what only matters then.
  for d in registered:
    if d.validate is not None:
      d.validate(c, need, d.name in methods)
  need(c.attack.kind in ("nasr", "one_layer"), "attack.kind", "nasr, one_layer")
  need(c.attack.features in ("log_losses", "log_probs", "probs"), "attack.features",
       "log_losses, log_probs, probs")
  # Shadows train in complementary pairs, so every example is IN for exactly half of them
  # (lira.keep_masks); an odd count would leave one unpaired.
  need(c.lira.num_shadows == 0 or (c.lira.num_shadows >= 2 and c.lira.num_shadows % 2 == 0),
       "lira.num_shadows", "0 (off) or an even integer >= 2")
  a = c.lira.rmia_offline_a
  need(a is None or (not isinstance(a, bool) and 0 <= a <= 1), "lira.rmia_offline_a",
       "None (chosen per target from the shadows) or a number in [0, 1]")
  need(not (c.split_per_trial and c.lira.num_shadows), "split_per_trial",
       "False with lira.num_shadows > 0 (LiRA draws each model's members from one pool)")
  from miajax import canaries  # pylint: disable=g-import-not-at-top
  canaries.validate(c, need)
  need(c.attack.epochs >= 0, "attack.epochs", "an integer >= 0")
  need(c.attack.batch_size > 0, "attack.batch_size", "a positive integer")
  need(c.attack.bootstrap_replicates >= 10, "attack.bootstrap_replicates", "an integer >= 10")
  need(finite_positive(c.attack.learning_rate), "attack.learning_rate", "a finite number > 0")
