"""miajax against a plain PyTorch implementation of the same jobs, in one sitting.

  python benchmarks/torch_side_by_side.py [--only a,b,c,profile,levers,flags,roofline]
      [--json PATH]
      [--steps 300] [--phase-steps 100] [--members 60000] [--rounds 3] [--torch-compile]
      (default sections: a,b,c,profile,levers,roofline; flags takes ~10 processes)

Needs PyTorch (CPU): `pip install -e '.[bench]'` (or `pip install torch --index-url
https://download.pytorch.org/whl/cpu`). Reads Fashion-MNIST through miajax's own data
pipeline (Debian's IDX files at /usr/share/datasets/fashion-mnist, prepared once into the
TFDS data dir, `--data_dir`); PyTorch trains on the same arrays.

Sections (each prints a table; `--json PATH` writes every number):

  a         LeNet-5 baseline train step, batch 64, Adam(1e-3), input pipeline included.
            miajax: the baseline recipe's phase run as train.py runs it (pipeline.train_batches
            -> pipeline.place -> steps.lift(step, strategy) on a 1-trial stack, metrics fetched
            every train.log_every steps). PyTorch: the dataset normalised once into a tensor,
            a per-epoch torch.randperm, one Adam step per batch, loss/accuracy fetched every
            log_every steps.
  b         One pruning trial end to end at a fixed budget: pretrain, ADMM (W-steps with the
            proximal term, Z/U update every --update-every steps), hard prune with fresh Adam
            moments, masked retrain, then test accuracy on the 10,000 test images. miajax: the
            real recipe (methods.recipe("pruning")) phases through steps.lift/lift_update/
            lift_eval; PyTorch: the same algorithm written plainly. Cold (first run: compiles)
            and warm (the same compiled programs run again; best of --rounds - 1, so with
            --rounds 1 the warm columns repeat the cold run) walls.
  c         A 4-trial sparsity sweep (keep 0.5, 0.2, 0.1, 0.05) at the same budget: miajax as
            one stack with "loop" and "vmap" on one device and with "devices" (the CPU default
            with several cores: a device per core); PyTorch runs the
            4 trials one after another.
  profile   Where the time of miajax's step goes: host batch assembly, placement, the
            compiled step (blocking and pipelined), metric fetches, the trial-stack lift
            against a bare jit, XLA's cost and memory analysis, and the XLA ops' time from a
            jax.profiler (perfetto) trace.
  levers    Changes inside the step, on the bare step: LeNet-5 formulations that compute the
            same function (max-pool as a reshape + max instead of reduce_window; conv1 as
            im2col @ kernel), gradients checked against miajax's model; and lax.scan of 10
            steps per dispatch.
  flags     Levers that need no miajax change, each in a fresh process: XLA_FLAGS (e.g.
            --xla_cpu_multi_thread_eigen=false) on the bare step and on section a's loop.
  roofline  FLOPs per step (XLA cost analysis), achieved FLOP/s and fraction of the measured
            f32 matmul peak (benchmarks/run.py's matmul_peak), XLA's memory analysis and the
            peak RSS of a process of its own, for the LeNet-5 step (batch 64) and the
            ResNet-18 CIFAR step (batch 128).

PyTorch is tuned as a competent user would: the thread count (1 or all cores) and memory
format (contiguous or channels_last) are picked by a short timed trial in the same sitting
(--torch-threads/--torch-format to fix them); torch.compile only with --torch-compile (on this
2-core CPU it compiled for ~30 s and ran slower than eager). Eval runs under inference_mode.
The PyTorch LeNet-5 is checked against miajax's: same parameter count (61,706) and the same
logits (to float32 rounding) from the same weights; both sides start from the same weights.

On a shared machine only ratios measured in one sitting mean anything: miajax and PyTorch are
timed in interleaved rounds, best round each, and /proc/loadavg is recorded with every section.
"""

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _pin_early():
  """--cpus N: restrict this process (and so XLA's and PyTorch's thread pools, which size
  themselves from the CPUs a process may use) to N CPUs, before either starts."""
  if "--cpus" in sys.argv:
    n = int(sys.argv[sys.argv.index("--cpus") + 1])
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])


_pin_early()

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
from miajax import cores  # pylint: disable=g-import-not-at-top,wrong-import-position
cores.claim(jax)   # one CPU device per core, as `python -m miajax.main` does
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top,wrong-import-position

from miajax import config as config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from miajax import methods  # pylint: disable=g-import-not-at-top,wrong-import-position
from miajax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from miajax import pruning  # pylint: disable=g-import-not-at-top,wrong-import-position
from miajax import stack as stack_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from miajax import steps  # pylint: disable=g-import-not-at-top,wrong-import-position
from miajax.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position

BATCH = 64
EVAL_BATCH = 512
LOG_EVERY = 50          # config.train.log_every's default: metrics fetched this often
LR = 1e-3
RHO = 1e-3              # config.admm.rho's default
SWEEP_KEEPS = (0.5, 0.2, 0.1, 0.05)
LENET5_PARAMS = 61_706
PRUNABLE = ("conv1", "conv2", "fc1", "fc2", "fc3")


def loadavg() -> str:
  try:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
  except OSError:
    return "?"


def peak_rss_mb() -> float:
  """This process's peak resident memory: VmHWM (which, unlike ru_maxrss, is not inherited
  through fork + exec from a larger parent), else ru_maxrss."""
  try:
    for line in Path("/proc/self/status").read_text().splitlines():
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ==================================================================================== data


def load_data(data_dir):
  c = config_lib.base()
  c.data.name = "fashion_mnist"
  c.data.dir = data_dir
  return pipeline.load(c)


# ================================================================================== miajax


def _config(method, keep, phase_steps, steps_per_epoch, update_every, data_dir):
  c = config_lib.base()
  c.data.name = "fashion_mnist"
  c.data.dir = data_dir
  c.data.batch_size = BATCH
  c.optimizer.learning_rate = LR
  epochs = phase_steps / steps_per_epoch
  c.train.epochs = epochs
  c.pruning.pretrain_epochs = c.admm.epochs = c.pruning.retrain_epochs = epochs
  c.admm.update_every = update_every
  c.admm.rho = RHO
  c.train.log_every = LOG_EVERY
  if keep is not None:
    c.pruning.keep = str(keep)
  return c


class MiajaxJob:
  """A stack of trials of one method, built (and jitted) once, runnable several times.

  `run()` does what train._run_stack/_train_phase do minus checkpoints, log files and the
  audit: init the stack, per phase its `enter`, then per step pipeline.train_batches ->
  pipeline.place -> the lifted step, the periodic update (its metrics fetched, as train.py
  logs them) every `every` steps, the window of step metrics fetched every log_every steps;
  then the test accuracy of every trial through steps.lift_eval.
  """

  def __init__(self, data, members, method, keeps, strategy, phase_steps, update_every,
               data_dir, seed=0, evaluate=True):
    self.data, self.members, self.strategy, self.evaluate = data, members, strategy, evaluate
    spe = len(members) // BATCH
    self.model = models.create("lenet5", data.num_classes)
    configs = [_config(method, keep, phase_steps, spe, update_every, data_dir) for keep in keeps]
    self.tx = steps.optimizer(configs[0])
    self.recipes = [methods.recipe(method, c, self.model, self.tx, spe, data.num_classes,
                                   len(members)) for c in configs]
    recipe = self.recipes[0]
    self.k = len(keeps)
    self.seeds = np.full(self.k, seed)
    # "devices" over every core's device (stack.make_mesh); the others on one device, as a
    # process with one CPU device runs them.
    self.mesh = (stack_lib.make_mesh(self.k, BATCH, strategy) if strategy == "devices" else
                 jax.make_mesh((1, 1), ("trial", "data"), devices=jax.devices()[:1],
                               axis_types=(jax.sharding.AxisType.Auto,) * 2))
    init = functools.partial(steps.init, model=self.model, tx=self.tx,
                             input_shape=data.input_shape, extra_fn=recipe.extra)
    self.init = jax.jit(jax.vmap(init), out_shardings=NamedSharding(self.mesh, P("trial")))
    self.keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in self.seeds])
    self.phases = []
    for phase in recipe.phases:
      enter = periodic = None
      if phase.enter is not None:
        enter = steps.lift_update(lambda s, h, e=phase.enter: (e(s, h), {}), strategy)
      if phase.periodic is not None:
        periodic = steps.lift_update(phase.periodic, strategy)
      self.phases.append((phase, steps.lift(phase.step, strategy), enter, periodic))
    self.eval_fn = steps.lift_eval(functools.partial(steps.eval_logits, model=self.model),
                                   strategy)
    self.test_idx = np.arange(data.num_examples("test"))

  def initial(self):
    state = self.init(self.keys)
    recipe = self.recipes[0]
    if recipe.hp is None:
      return state, {}
    params0 = jax.tree.map(lambda x: x[0], state.params)
    hp = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]),
                      *[r.hp(params0) for r in self.recipes])
    return state, jax.device_put(hp, NamedSharding(self.mesh, P("trial")))

  def run(self, steps_limit=None):
    """Trains every phase (or only the first `steps_limit` steps of the first phase)."""
    state, hp = self.initial()
    begin, last = 0, {}
    for phase, step_fn, enter, periodic in self.phases:
      end = begin + (phase.steps if steps_limit is None else min(phase.steps, steps_limit))
      if enter is not None:
        state = enter(state, hp)[0]
      batches = pipeline.prefetch(
          pipeline.train_batches(self.data, self.members, self.seeds, BATCH, begin, end),
          lambda b: pipeline.place(b, self.mesh))
      window = []
      for step in range(begin, end):
        batch = next(batches)
        state, metrics = step_fn(state, batch, hp)
        window.append(metrics)
        done = step + 1
        if periodic is not None and (done - begin) % phase.every == 0:
          state, update = periodic(state, hp)
          jax.device_get(update)
        if done % LOG_EVERY == 0 or done == end:
          last = {k: np.mean(np.stack([np.asarray(m[k]) for m in window]), 0)
                  for k in window[0]}
          window = []
      begin = end
      if steps_limit is not None:
        break
    out = {"train_loss": [float(x) for x in np.atleast_1d(last["cross_entropy"])]}
    if self.evaluate and steps_limit is None:
      jax.block_until_ready(state)
      t0 = time.perf_counter()
      out["test_accuracy"] = self.test_accuracy(state)
      out["eval_s"] = time.perf_counter() - t0
    jax.block_until_ready(state)
    return out

  def test_accuracy(self, state):
    sharding = NamedSharding(self.mesh, P("data"))
    correct = np.zeros(self.k)
    for batch, valid in pipeline.eval_batches(self.data, "test", self.test_idx, EVAL_BATCH):
      logits = np.asarray(self.eval_fn(state, jax.device_put(batch["image"], sharding)))
      correct += (logits[:, :valid].argmax(-1) == batch["label"][:valid]).sum(-1)
    return [float(c) / len(self.test_idx) for c in correct]

  @property
  def train_steps(self):
    return sum(p.steps for p, *_ in self.phases)


# ================================================================================== torch


def torch_setup(threads):
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  return torch


def torch_lenet5():
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top,invalid-name

  class LeNet5(nn.Module):
    """miajax.models.lenet.LeNet5 in PyTorch: conv 6@5x5 SAME, ReLU, max-pool 2, conv 16@5x5
    VALID, ReLU, max-pool 2, dense 120, 84, 10 with ReLU between; 61,706 parameters."""

    def __init__(self, num_classes=10):
      super().__init__()
      self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
      self.conv2 = nn.Conv2d(6, 16, 5)
      self.fc1 = nn.Linear(400, 120)
      self.fc2 = nn.Linear(120, 84)
      self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
      x = F.max_pool2d(F.relu(self.conv1(x)), 2)
      x = F.max_pool2d(F.relu(self.conv2(x)), 2)
      x = torch.flatten(x, 1)         # (C, H, W) order; load_flax permutes fc1 to match
      return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

  return LeNet5()


def load_flax(net, params):
  """Copies one trial's miajax LeNet-5 params into the PyTorch module (HWIO -> OIHW, (in, out)
  -> (out, in), fc1's inputs from Flax's (H, W, C) flattening to PyTorch's (C, H, W))."""
  import torch  # pylint: disable=g-import-not-at-top
  p = jax.tree.map(np.asarray, params)
  sd = {}
  for name in ("conv1", "conv2"):
    sd[f"{name}.weight"] = p[name]["kernel"].transpose(3, 2, 0, 1)
    sd[f"{name}.bias"] = p[name]["bias"]
  fc1 = p["fc1"]["kernel"].reshape(5, 5, 16, 120).transpose(2, 0, 1, 3).reshape(400, 120)
  sd["fc1.weight"], sd["fc1.bias"] = fc1.T, p["fc1"]["bias"]
  for name in ("fc2", "fc3"):
    sd[f"{name}.weight"], sd[f"{name}.bias"] = p[name]["kernel"].T, p[name]["bias"]
  net.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in sd.items()})
  return net


def check_torch_model(data):
  """Parameter counts of both LeNet-5s and the largest logit difference from the same weights."""
  import torch  # pylint: disable=g-import-not-at-top
  model = models.create("lenet5", 10)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), train=False)
  n_jax = sum(x.size for x in jax.tree.leaves(variables["params"]))
  net = load_flax(torch_lenet5(), variables["params"])
  n_torch = sum(p.numel() for p in net.parameters())
  images = pipeline.normalise(data.test["image"][:256], data.name)
  want = np.asarray(model.apply(variables, images, train=False))
  with torch.inference_mode():
    got = net(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()).numpy()
  diff = float(np.abs(got - want).max())
  if not n_jax == n_torch == LENET5_PARAMS:
    raise SystemExit(f"parameter counts differ: miajax {n_jax}, PyTorch {n_torch}, "
                     f"expected {LENET5_PARAMS}")
  if diff > 1e-4:
    raise SystemExit(f"PyTorch LeNet-5 logits differ from miajax's by {diff}")
  return {"params_miajax": n_jax, "params_torch": n_torch, "max_logit_diff": diff}


class TorchJob:
  """The same jobs written plainly in PyTorch: baseline, or pruning (pretrain, ADMM with Z/U
  updates, hard prune with fresh Adam, masked retrain), then test accuracy."""

  def __init__(self, data, members, settings, init_params):
    import torch  # pylint: disable=g-import-not-at-top
    self.torch = torch
    self.settings = settings
    fmt = torch.channels_last if settings["format"] == "channels_last" else torch.contiguous_format
    self.fmt = fmt

    def tensor(images):
      x = torch.from_numpy(pipeline.normalise(images, data.name)).permute(0, 3, 1, 2)
      return x.contiguous(memory_format=fmt)
    # A competent PyTorch user keeps an in-memory dataset as one normalised tensor.
    self.x = tensor(data.train["image"][members])
    self.y = torch.from_numpy(data.train["label"][members].astype(np.int64))
    self.x_test = tensor(data.test["image"])
    self.y_test = torch.from_numpy(data.test["label"].astype(np.int64))
    self.init_params = init_params
    self.spe = len(members) // BATCH

  def _model(self):
    net = load_flax(torch_lenet5(), self.init_params).to(memory_format=self.fmt)
    fwd = self.torch.compile(net) if self.settings.get("compile") else net
    return net, fwd

  def _batches(self, seed):
    torch = self.torch
    g = torch.Generator().manual_seed(seed)
    while True:
      perm = torch.randperm(len(self.y), generator=g)
      for i in range(self.spe):
        idx = perm[i * BATCH:(i + 1) * BATCH]
        yield self.x[idx], self.y[idx]

  def _train(self, net, fwd, opt, batches, n, admm=None, masks=None, update_every=0):
    """n Adam steps; with `admm` ({"z", "u", "counts", "rho"}) the proximal term and a Z/U
    update every `update_every` steps; with `masks` pruned weights and grads stay zero."""
    torch = self.torch
    import torch.nn.functional as F  # pylint: disable=g-import-not-at-top,invalid-name
    weights = [getattr(net, n).weight for n in PRUNABLE]
    loss_sum = torch.zeros(())
    correct = torch.zeros((), dtype=torch.int64)
    last = None
    for i in range(n):
      x, y = next(batches)
      logits = fwd(x)
      ce = F.cross_entropy(logits, y)
      loss = ce
      if admm is not None:
        loss = loss + admm["rho"] / 2 * sum(
            (w - z + u).square().sum() for w, z, u in zip(weights, admm["z"], admm["u"]))
      opt.zero_grad(set_to_none=True)
      loss.backward()
      if masks is not None:
        for w, m in zip(weights, masks):
          w.grad.mul_(m)
      opt.step()
      with torch.no_grad():
        if masks is not None:
          for w, m in zip(weights, masks):
            w.mul_(m)
        loss_sum += ce.detach()
        correct += (logits.argmax(1) == y).sum()
        if admm is not None and (i + 1) % update_every == 0:
          admm["z"] = [project(w + u, k) for w, u, k in zip(weights, admm["u"], admm["counts"])]
          admm["u"] = [u + w - z for u, w, z in zip(admm["u"], weights, admm["z"])]
          torch.stack([(w - z).norm() for w, z in zip(weights, admm["z"])]).tolist()
      if (i + 1) % LOG_EVERY == 0 or i + 1 == n:
        last = loss_sum.item() / ((i % LOG_EVERY) + 1)    # one sync per window, as miajax
        loss_sum.zero_()
        correct.zero_()
    return last

  def run(self, method, counts=None, phase_steps=100, update_every=25, seed=0, evaluate=True,
          steps_limit=None):
    torch = self.torch
    net, fwd = self._model()
    net.train()
    batches = self._batches(seed)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    if method == "baseline":
      last = self._train(net, fwd, opt, batches, steps_limit or phase_steps)
    else:
      weights = [getattr(net, n).weight for n in PRUNABLE]
      self._train(net, fwd, opt, batches, phase_steps)                        # pretrain
      with torch.no_grad():                                                   # ADMM enter
        admm = {"z": [project(w, k) for w, k in zip(weights, counts)],
                "u": [torch.zeros_like(w) for w in weights], "counts": counts, "rho": RHO}
      self._train(net, fwd, opt, batches, phase_steps, admm=admm, update_every=update_every)
      with torch.no_grad():                                                   # hard prune
        masks = [topk_mask(w, k) for w, k in zip(weights, counts)]
        for w, m in zip(weights, masks):
          w.mul_(m)
      opt = torch.optim.Adam(net.parameters(), lr=LR)                         # fresh moments
      last = self._train(net, fwd, opt, batches, phase_steps, masks=masks)    # retrain
    out = {"train_loss": [last]}
    if evaluate and steps_limit is None:
      t0 = time.perf_counter()
      out["test_accuracy"] = [self.test_accuracy(net)]
      out["eval_s"] = time.perf_counter() - t0
      if method != "baseline":
        out["nonzero"] = int(sum(int((getattr(net, n).weight != 0).sum()) for n in PRUNABLE))
    return out

  def test_accuracy(self, net):
    torch = self.torch
    net.eval()
    correct = 0
    with torch.inference_mode():
      for s in range(0, len(self.y_test), EVAL_BATCH):
        correct += int((net(self.x_test[s:s + EVAL_BATCH]).argmax(1)
                        == self.y_test[s:s + EVAL_BATCH]).sum())
    net.train()
    return correct / len(self.y_test)


def topk_mask(w, k):
  import torch  # pylint: disable=g-import-not-at-top
  flat = w.abs().flatten()
  mask = torch.zeros_like(flat)
  mask[flat.topk(int(k)).indices] = 1
  return mask.view_as(w)


def project(w, k):
  """Euclidean projection onto k nonzeros: keep the k largest magnitudes."""
  return w * topk_mask(w, k)


def prune_counts(keep):
  """miajax's per-layer keep counts for LeNet-5 at `keep`, in PRUNABLE order."""
  model = models.create("lenet5", 10)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)),
                                             train=False))["params"]
  counts = pruning.keep_counts(shapes, pruning.keep_fractions(shapes, pruning.parse_keep(
      str(keep))))
  return [int(counts[f"{n}/kernel"]) for n in PRUNABLE]


def tune_torch(data, members, init_params, args):
  """Picks PyTorch's threads and memory format by a short timed trial (best of each)."""
  threads = ([int(args.torch_threads)] if args.torch_threads else
             sorted({1, len(os.sched_getaffinity(0))}))
  formats = [args.torch_format] if args.torch_format else ["contiguous", "channels_last"]
  trials = []
  for t in threads:
    for f in formats:
      settings = {"threads": t, "format": f, "compile": args.torch_compile}
      torch = torch_setup(t)
      job = TorchJob(data, members, settings, init_params)
      job.run("baseline", steps_limit=10, evaluate=False)          # warm-up (compile)
      best = float("inf")
      for _ in range(2):
        t0 = time.perf_counter()
        job.run("baseline", steps_limit=100, evaluate=False)
        best = min(best, time.perf_counter() - t0)
      trials.append({**settings, "examples_per_s": 100 * BATCH / best})
      del torch
  chosen = max(trials, key=lambda r: r["examples_per_s"])
  torch_setup(chosen["threads"])
  return {k: chosen[k] for k in ("threads", "format", "compile")}, trials


# ================================================================================= timing


def timed(fn):
  t0 = time.perf_counter()
  out = fn()
  return time.perf_counter() - t0, out


def interleaved(runs, rounds):
  """{name: fn}: `rounds` rounds of every fn back to back; per name the best and all walls."""
  walls = {name: [] for name in runs}
  outs = {}
  for _ in range(rounds):
    for name, fn in runs.items():
      wall, outs[name] = timed(fn)
      walls[name].append(wall)
  return {name: {"best_s": min(w), "walls_s": w, "out": outs[name]} for name, w in walls.items()}


# =============================================================================== sections


def section_a(ctx):
  args, data, members = ctx["args"], ctx["data"], ctx["members"]
  n = args.steps
  job = MiajaxJob(data, members, "baseline", [None], steps.default_strategy(), n, 10**9,
                  args.data_dir, evaluate=False)
  tjob = TorchJob(data, members, ctx["torch_settings"], ctx["init_params"])
  job.run(steps_limit=20)                     # compile
  tjob.run("baseline", steps_limit=20, evaluate=False)
  res = interleaved({"miajax": lambda: job.run(),
                     "torch": lambda: tjob.run("baseline", phase_steps=n, evaluate=False)},
                    args.rounds)
  examples = n * BATCH
  row = {"steps": n, "examples": examples,
         "miajax_wall_s": res["miajax"]["best_s"], "torch_wall_s": res["torch"]["best_s"],
         "miajax_walls_s": res["miajax"]["walls_s"], "torch_walls_s": res["torch"]["walls_s"],
         "miajax_examples_per_s": examples / res["miajax"]["best_s"],
         "torch_examples_per_s": examples / res["torch"]["best_s"]}
  row["ratio"] = row["miajax_examples_per_s"] / row["torch_examples_per_s"]
  return row


def _trial_rows(ctx, keeps, strategies):
  """Sections b (one keep) and c (the sweep): cold run of each side, then warm rounds."""
  args, data, members = ctx["args"], ctx["data"], ctx["members"]
  ps, ue = args.phase_steps, args.update_every
  counts = {keep: prune_counts(keep) for keep in keeps}
  examples = len(keeps) * 3 * ps * BATCH
  t0 = time.perf_counter()
  jobs = {s: MiajaxJob(data, members, "pruning", list(keeps), s, ps, ue, args.data_dir)
          for s in strategies}
  build_s = time.perf_counter() - t0
  tjob = TorchJob(data, members, ctx["torch_settings"], ctx["init_params"])

  def torch_all():
    return [tjob.run("pruning", counts[k], ps, ue) for k in keeps]
  runs = {f"miajax_{s}": jobs[s].run for s in strategies} | {"torch": torch_all}
  cold = {}
  for name, fn in runs.items():
    cold[name] = timed(fn)
  warm = interleaved(runs, args.rounds - 1) if args.rounds > 1 else {}
  rows = []
  torch_wall = warm["torch"]["best_s"] if warm else cold["torch"][0]
  for name in runs:
    wall = warm[name]["best_s"] if warm else cold[name][0]
    out = (warm[name]["out"] if warm else cold[name][1])
    if name == "torch":
      acc = [o["test_accuracy"][0] for o in out]
      eval_s = sum(o["eval_s"] for o in out)
    else:
      acc, eval_s = out["test_accuracy"], out["eval_s"]
    rows.append({"side": name, "trials": len(keeps), "keeps": list(keeps),
                 "train_steps_per_trial": 3 * ps, "examples": examples,
                 "cold_wall_s": cold[name][0], "warm_wall_s": wall,
                 "warm_walls_s": warm[name]["walls_s"] if warm else [],
                 "cold_examples_per_s": examples / cold[name][0],
                 "warm_examples_per_s": examples / wall,
                 "ratio_warm": torch_wall / wall, "ratio_cold": cold["torch"][0] / cold[name][0],
                 "test_accuracy": acc, "eval_s_of_warm_run": eval_s,
                 "train_examples_per_s_warm": examples / (wall - eval_s)})
  torch_train = next(r for r in rows if r["side"] == "torch")["train_examples_per_s_warm"]
  for r in rows:
    r["ratio_train_only_warm"] = r["train_examples_per_s_warm"] / torch_train
  return {"rows": rows, "miajax_build_s": build_s, "counts": counts}


def section_b(ctx):
  return _trial_rows(ctx, ("paper",), (steps.default_strategy(),))


def section_c(ctx):
  return _trial_rows(ctx, SWEEP_KEEPS, ("loop", "vmap") + (
      ("devices",) if jax.local_device_count() > 1 else ()))


def _bare_step():
  """The plain single-trial LeNet-5 train step, jitted alone (benchmarks/run.py's reference)."""
  import optax  # pylint: disable=g-import-not-at-top
  model = models.create("lenet5", 10)
  tx = optax.adam(LR)
  state = steps.init(jax.random.PRNGKey(0), model, tx, (28, 28, 1))
  step = functools.partial(steps.train_step, model=model, tx=tx)
  return model, tx, state, step


def section_profile(ctx):
  """Host/device time splits of section a's loop, per step, in ms."""
  args, data, members = ctx["args"], ctx["data"], ctx["members"]
  n = min(args.steps, 200)
  out = {"steps": n}
  job = MiajaxJob(data, members, "baseline", [None], "loop", n, 10**9, args.data_dir,
                  evaluate=False)
  phase, step_fn, _, _ = job.phases[0]
  state, hp = job.initial()

  # Host: batch assembly (grain map over train_batches) and placement.
  for label, mem in (("members_all", members), ("members_2500", members[:2500])):
    it = pipeline.train_batches(data, mem, job.seeds, BATCH, 0, n)
    t0 = time.perf_counter()
    host = [next(it) for _ in range(n)]
    out[f"assemble_ms[{label}]"] = (time.perf_counter() - t0) / n * 1e3
  t0 = time.perf_counter()
  placed = [pipeline.place(b, job.mesh) for b in host]
  jax.block_until_ready(placed)
  out["place_ms"] = (time.perf_counter() - t0) / n * 1e3
  t0 = time.perf_counter()
  plain = [jax.device_put(b) for b in host]
  jax.block_until_ready(plain)
  out["device_put_ms"] = (time.perf_counter() - t0) / n * 1e3

  # The lifted step on pre-placed batches: pipelined (async dispatch) and blocking each step.
  held = [step_fn(state, placed[0], hp)[0]]      # state is donated: thread it through
  jax.block_until_ready(held)

  def lifted(block, fetch):
    def go():
      for b in placed:
        held[0], m = step_fn(held[0], b, hp)
        if block:
          jax.block_until_ready(m)
        if fetch:
          jax.device_get(m)
      jax.block_until_ready(held[0])
    return go
  bare_model, bare_tx, bare_state, bare = _bare_step()
  bare_jit = jax.jit(bare, donate_argnums=0)
  unstacked = [{k: v[0] for k, v in b.items()} for b in plain]
  bs = [bare_jit(bare_state, unstacked[0], {})[0]]
  jax.block_until_ready(bs)
  def bare_run():
    for b in unstacked:
      bs[0], m = bare_jit(bs[0], b, {})
    jax.block_until_ready(bs[0])

  # Host pipeline + placement + step, as section a runs it (for the sum check).
  runs = {"lifted_pipelined": lifted(False, False), "lifted_blocking": lifted(True, False),
          "lifted_fetch_every_step": lifted(False, True), "bare_jit_pipelined": bare_run,
          "section_a_loop": lambda: job.run()}
  res = interleaved(runs, args.rounds)
  for name, r in res.items():
    out[f"{name}_ms"] = r["best_s"] / n * 1e3
  compiled = jax.jit(bare).lower(_bare_step()[2], unstacked[0], {}).compile()
  out["xla"] = cost(compiled)
  out["trace"] = op_breakdown(bare_jit, bs, unstacked[:50])
  return out


def cost(compiled):
  """XLA's cost analysis (flops, bytes accessed) and memory analysis of a compiled step."""
  res = {}
  try:
    c = compiled.cost_analysis()
    c = c[0] if isinstance(c, (list, tuple)) else c
    res["flops"] = float(c.get("flops", 0) or 0)
    res["bytes_accessed"] = float(c.get("bytes accessed", 0) or 0)
    res["transcendentals"] = float(c.get("transcendentals", 0) or 0)
  except Exception as e:  # pylint: disable=broad-except
    res["cost_error"] = repr(e)
  try:
    m = compiled.memory_analysis()
    res["argument_mb"] = m.argument_size_in_bytes / 2**20
    res["output_mb"] = m.output_size_in_bytes / 2**20
    res["temp_mb"] = m.temp_size_in_bytes / 2**20
    res["generated_code_mb"] = m.generated_code_size_in_bytes / 2**20
  except Exception as e:  # pylint: disable=broad-except
    res["memory_error"] = repr(e)
  return res


def op_breakdown(fn, holder, batches, top=12):
  """Per-op wall time of `fn` over `batches` from a jax.profiler perfetto trace: the XLA ops
  (thunks) of the step's executable, summed by name, and the host-side events around them."""
  import glob  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  logdir = tempfile.mkdtemp(prefix="miajax_trace_")
  try:
    with jax.profiler.trace(logdir, create_perfetto_trace=True):
      for b in batches:
        holder[0], m = fn(holder[0], b, {})
      jax.block_until_ready(holder[0])
    files = glob.glob(f"{logdir}/**/*.trace.json.gz", recursive=True)
    if not files:
      return {"error": "no perfetto trace written"}
    events = json.loads(gzip.open(files[0]).read())
    events = events["traceEvents"] if isinstance(events, dict) else events
  except Exception as e:  # pylint: disable=broad-except
    return {"error": repr(e)[:300]}
  threads = {}
  for e in events:
    if e.get("ph") == "M" and e.get("name") == "thread_name":
      threads[(e.get("pid"), e.get("tid"))] = e["args"]["name"]
  by_name, by_thread = {}, {}
  for e in events:
    if e.get("ph") != "X":
      continue
    dur = e.get("dur", 0) / 1e3 / len(batches)          # ms per step
    by_name[e["name"]] = by_name.get(e["name"], 0) + dur
    t = threads.get((e.get("pid"), e.get("tid")), str(e.get("tid")))
    by_thread[t] = by_thread.get(t, 0) + dur
  names = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
  return {"ms_per_step_by_event": dict(names),
          "ms_per_step_by_thread": dict(sorted(by_thread.items(), key=lambda kv: -kv[1])[:6])}


def lenet5_variant(pool="reshape", im2col_conv1=False):
  """miajax's LeNet-5 with the same parameter tree and the same function, computed differently:
  `pool="reshape"` (what miajax.models.pooling does) takes each non-overlapping 2x2 max as a
  max over a reshaped axis pair
  instead of lax.reduce_window (whose gradient XLA:CPU expands into iota index arrays, a
  variadic reduce-window and a scatter); `im2col_conv1` computes conv1 as patches @ kernel."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top

  class Im2ColConv(nn.Module):
    features: int
    kernel_size: tuple
    padding: str

    @nn.compact
    def __call__(self, x):
      kh, kw = self.kernel_size
      k = self.param("kernel", nn.initializers.lecun_normal(),
                     (kh, kw, x.shape[-1], self.features))
      b = self.param("bias", nn.initializers.zeros, (self.features,))
      patches = lax.conv_general_dilated_patches(x, (kh, kw), (1, 1), self.padding,
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
      return patches @ k.transpose(2, 0, 1, 3).reshape(-1, self.features) + b

  def max_pool(x):
    if pool != "reshape":
      return nn.max_pool(x, (2, 2), strides=(2, 2))
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

  class LeNet5Variant(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train):
      del train
      conv1 = (Im2ColConv(6, (5, 5), "SAME", name="conv1") if im2col_conv1 else
               nn.Conv(6, (5, 5), padding="SAME", name="conv1"))
      x = max_pool(nn.relu(conv1(x)))
      x = max_pool(nn.relu(nn.Conv(16, (5, 5), padding="VALID", name="conv2")(x)))
      x = x.reshape((x.shape[0], -1))
      x = nn.relu(nn.Dense(120, name="fc1")(x))
      x = nn.relu(nn.Dense(84, name="fc2")(x))
      return nn.Dense(self.num_classes, name="fc3")(x)

  return LeNet5Variant()


def section_levers(ctx):
  """Levers inside the step, on the bare single-trial LeNet-5 step with a device-resident
  batch (ms per step, interleaved rounds): model formulations that compute the same function
  (gradient checked against miajax's model), and several steps per dispatch (lax.scan)."""
  import optax  # pylint: disable=g-import-not-at-top
  args = ctx["args"]
  data = ctx["data"]
  tx = optax.adam(LR)
  images = pipeline.normalise(data.train["image"][:BATCH], data.name)
  batch = {"image": jnp.asarray(images), "label": jnp.asarray(data.train["label"][:BATCH])}
  reference = models.create("lenet5", 10)
  state0 = steps.init(jax.random.PRNGKey(0), reference, tx, (28, 28, 1))
  grad = lambda m: jax.grad(lambda p: steps.classifier_loss(p, {}, m, batch)[0])(state0.params)
  want = grad(reference)
  # miajax's LeNet-5 pools by reshape since 2026-12-02; "flax_maxpool" is the model before.
  variants = {"miajax_lenet5": reference,
              "flax_maxpool": lenet5_variant("reduce_window"),
              "reshape_maxpool": lenet5_variant("reshape"),
              "reshape_maxpool+im2col_conv1": lenet5_variant("reshape", True),
              "im2col_conv1": lenet5_variant("reduce_window", True)}
  n = 100
  runs, out = {}, {}
  for name, model in variants.items():
    got = grad(model)
    err = max(float(jnp.abs(a - b).max() / (jnp.abs(b).max() + 1e-12))
              for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
    step = functools.partial(steps.train_step, model=model, tx=tx)
    fn = jax.jit(step, donate_argnums=0)
    out[name] = {"grad_rel_err": err,
                 "flops": cost(jax.jit(step).lower(state0, batch, {}).compile()).get("flops")}
    held = [fn(jax.tree.map(jnp.copy, state0), batch, {})[0]]
    jax.block_until_ready(held)

    def go(fn=fn, held=held):
      for _ in range(n):
        held[0], _ = fn(held[0], batch, {})
      jax.block_until_ready(held[0])
    runs[name] = go
  scan_len = 10
  stacked = jax.tree.map(lambda x: jnp.stack([x] * scan_len), batch)
  plain = functools.partial(steps.train_step, model=reference, tx=tx)
  scanned = jax.jit(lambda s, b: jax.lax.scan(lambda s, x: plain(s, x, {}), s, b),
                    donate_argnums=0)
  held_scan = [scanned(jax.tree.map(jnp.copy, state0), stacked)[0]]
  jax.block_until_ready(held_scan)

  def scan_run():
    for _ in range(n // scan_len):
      held_scan[0], _ = scanned(held_scan[0], stacked)
    jax.block_until_ready(held_scan[0])
  runs[f"lax.scan_{scan_len}_steps_per_dispatch"] = scan_run
  out[f"lax.scan_{scan_len}_steps_per_dispatch"] = {}
  res = interleaved(runs, args.rounds)
  base = res["miajax_lenet5"]["best_s"]
  for name, r in res.items():
    out[name] |= {"step_ms": r["best_s"] / n * 1e3, "speedup": base / r["best_s"]}
  return out


# Levers tried in fresh processes (XLA reads XLA_FLAGS once, at backend start). "cpu1:" runs
# the process under `taskset -c 0`: XLA sizes its thread pools from the CPUs it may use, so
# this is the XLA side of torch.set_num_threads(1).
FLAG_SETS = {
    "default": "",
    "one_cpu": "cpu1:",
    "one_cpu+no_multi_thread_eigen": "cpu1:--xla_cpu_multi_thread_eigen=false",
    "no_multi_thread_eigen": "--xla_cpu_multi_thread_eigen=false",
    "xnn_graph_fusion": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "ynn_individual_conv": "--xla_cpu_experimental_ynn_fusion_type="
                           "+LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION",
    "use_onednn": "--xla_cpu_use_onednn=true",
    "concurrency_scheduler": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
    "fast_min_max": "--xla_cpu_enable_fast_min_max=true",
}


def _flags_child(args):
  """One process's numbers for section flags: the bare step (pre-placed batch, pipelined) and
  section a's full loop, per step in ms."""
  data = load_data(args.data_dir)
  members = np.arange(min(args.members, data.num_examples("train")))
  _, _, state, bare = _bare_step()
  fn = jax.jit(bare, donate_argnums=0)
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=(BATCH, 28, 28, 1)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, BATCH), jnp.int32)}
  holder = [fn(state, batch, {})[0]]
  jax.block_until_ready(holder)
  n = 100

  def bare_run():
    for _ in range(n):
      holder[0], _ = fn(holder[0], batch, {})
    jax.block_until_ready(holder[0])
  job = MiajaxJob(data, members, "baseline", [None], "loop", n, 10**9, args.data_dir,
                  evaluate=False)
  job.run(steps_limit=10)
  res = interleaved({"bare": bare_run, "loop": job.run}, args.rounds)
  return {"bare_step_ms": res["bare"]["best_s"] / n * 1e3,
          "section_a_step_ms": res["loop"]["best_s"] / n * 1e3, "load": loadavg()}


def section_flags(ctx):
  args = ctx["args"]
  rows = {}
  for rnd in range(2):      # two passes over the flag sets: load that comes and goes hits all
    chosen = args.flag_sets.split(",") if args.flag_sets else list(FLAG_SETS)
    for name, flags in ((n, FLAG_SETS[n]) for n in chosen):
      prefix = []
      if flags.startswith("cpu1:"):
        prefix, flags = ["taskset", "-c", "0"], flags.removeprefix("cpu1:")
      env = dict(os.environ, JAX_PLATFORMS="cpu",
                 XLA_FLAGS=" ".join(f for f in (os.environ.get("XLA_FLAGS", ""), flags) if f))
      proc = subprocess.run(
          [*prefix, sys.executable, __file__, "--flags-child", "--data_dir", args.data_dir or "",
           "--members", str(args.members), "--rounds", str(args.rounds)],
          env=env, capture_output=True, text=True, check=False)
      if proc.returncode != 0:
        rows.setdefault(name, {"flags": " ".join(prefix + [flags]),
                               "error": proc.stderr.strip().splitlines()[-1:]})
        continue
      r = json.loads(proc.stdout.strip().splitlines()[-1])
      prev = rows.get(name, {})
      rows[name] = {"flags": " ".join(prefix + [flags]), "load": r["load"],
                    "bare_step_ms": min(r["bare_step_ms"], prev.get("bare_step_ms", 1e9)),
                    "section_a_step_ms": min(r["section_a_step_ms"],
                                             prev.get("section_a_step_ms", 1e9))}
    del rnd
  base = rows.get("default", {})
  for r in rows.values():
    if "bare_step_ms" in r and "bare_step_ms" in base:
      r["bare_speedup"] = base["bare_step_ms"] / r["bare_step_ms"]
      r["section_a_speedup"] = base["section_a_step_ms"] / r["section_a_step_ms"]
  return rows


def _roofline_child(name):
  """One model's train step in a process of its own (so its peak RSS is its own)."""
  import run as run_bench  # pylint: disable=g-import-not-at-top
  rss_imports = peak_rss_mb()
  repeats = 2
  if name == "lenet5":
    fn, state, batch, hp, compiled = run_bench._classifier("lenet5", 64, (28, 28, 1))  # pylint: disable=protected-access
    n = 200
  else:
    fn, state, batch, hp, compiled = run_bench._classifier("resnet18", 128, (32, 32, 3))  # pylint: disable=protected-access
    n = 2
  sec = run_bench.run_step(fn, state, batch, hp, n, repeats)
  examples = int(batch["label"].shape[0])
  return {"model": name, "batch": examples, "step_ms": sec * 1e3,
          "examples_per_s": examples / sec, **cost(compiled),
          "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": rss_imports,
          "load": loadavg()}


def section_roofline(ctx):
  import run as run_bench  # pylint: disable=g-import-not-at-top
  peak = run_bench.matmul_peak(3)
  rows = []
  for name in ("lenet5", "resnet18"):
    proc = subprocess.run([sys.executable, __file__, "--roofline-child", name],
                          env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
      rows.append({"model": name, "error": proc.stderr.strip().splitlines()[-3:]})
      continue
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["achieved_gflops"] = r["flops"] / (r["step_ms"] / 1e3) / 1e9 if r.get("flops") else None
    r["fraction_of_peak"] = (r["achieved_gflops"] * 1e9 / peak
                             if r["achieved_gflops"] else None)
    rows.append(r)
  # PyTorch's LeNet-5 step at the same FLOPs (the same math), for the same fraction.
  a = ctx["results"].get("a")
  if a and rows and rows[0].get("flops"):
    tstep = BATCH / a["torch_examples_per_s"]
    rows.append({"model": "lenet5 (PyTorch, section a)", "batch": BATCH, "step_ms": tstep * 1e3,
                 "flops": rows[0]["flops"],
                 "achieved_gflops": rows[0]["flops"] / tstep / 1e9,
                 "fraction_of_peak": rows[0]["flops"] / tstep / peak})
  return {"matmul_peak_gflops": peak / 1e9, "rows": rows}


SECTIONS = {"a": section_a, "b": section_b, "c": section_c, "profile": section_profile,
            "levers": section_levers, "flags": section_flags, "roofline": section_roofline}


# ================================================================================== print


def fmt(v, spec=".1f"):
  return format(v, spec) if isinstance(v, (int, float)) else str(v)


def report(results):
  lines = []
  a = results.get("a")
  if a:
    lines += ["", f"a) LeNet-5 baseline train step, batch {BATCH}, Adam, pipeline included, "
              f"{a['steps']} steps (load {a['load']})",
              "| side | wall s (best) | walls s | ex/s |", "|---|---:|---|---:|",
              f"| miajax (loop, 1 trial) | {a['miajax_wall_s']:.2f} | "
              f"{', '.join(f'{w:.2f}' for w in a['miajax_walls_s'])} | "
              f"{a['miajax_examples_per_s']:.0f} |",
              f"| PyTorch | {a['torch_wall_s']:.2f} | "
              f"{', '.join(f'{w:.2f}' for w in a['torch_walls_s'])} | "
              f"{a['torch_examples_per_s']:.0f} |",
              f"ratio miajax/PyTorch: {a['ratio']:.2f}x"]
  for key, title in (("b", "b) one pruning trial end to end"),
                     ("c", "c) 4-trial sparsity sweep")):
    sec = results.get(key)
    if not sec:
      continue
    lines += ["", f"{title} (load {sec['load']}; miajax build {sec['miajax_build_s']:.1f} s)",
              "| side | trials | cold wall s | warm wall s | of which eval s | cold ex/s | "
              "warm ex/s | ratio warm | ratio cold | ratio train only | test acc |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in sec["rows"]:
      lines.append(f"| {r['side']} | {r['trials']} | {r['cold_wall_s']:.2f} | "
                   f"{r['warm_wall_s']:.2f} | {r['eval_s_of_warm_run']:.2f} | "
                   f"{r['cold_examples_per_s']:.0f} | "
                   f"{r['warm_examples_per_s']:.0f} | {r['ratio_warm']:.2f}x | "
                   f"{r['ratio_cold']:.2f}x | {r['ratio_train_only_warm']:.2f}x | "
                   f"{', '.join(f'{x:.3f}' for x in r['test_accuracy'])} |")
  p = results.get("profile")
  if p:
    lines += ["", f"profile (ms per step, load {p['load']})"]
    lines += [f"  {k:32s} {fmt(v, '.3f')}" for k, v in p.items()
              if k.endswith("_ms") or k.startswith("assemble")]
    lines.append(f"  xla {p['xla']}")
    lines.append(f"  trace {json.dumps(p['trace'], indent=1)}")
  lv = results.get("levers")
  if lv:
    lines += ["", f"levers in the step (bare LeNet-5 step, batch on device; load {lv['load']})",
              "| lever | step ms | speedup | grad rel err vs miajax | GFLOP/step |",
              "|---|---:|---:|---:|---:|"]
    for name, r in lv.items():
      if isinstance(r, dict):
        lines.append(f"| {name} | {r['step_ms']:.2f} | {r['speedup']:.2f}x | "
                     f"{fmt(r.get('grad_rel_err'), '.1e')} | "
                     f"{fmt((r.get('flops') or 0) / 1e9, '.3f')} |")
  f = results.get("flags")
  if f:
    lines += ["", f"flags (load {f.get('load')})",
              "| lever | bare step ms | speedup | section a step ms | speedup |",
              "|---|---:|---:|---:|---:|"]
    for name, r in f.items():
      if not isinstance(r, dict):
        continue
      if "error" in r:
        lines.append(f"| {name} `{r['flags']}` | error: {r['error']} | | | |")
        continue
      lines.append(f"| {name} `{r['flags']}` | {r['bare_step_ms']:.2f} | "
                   f"{r.get('bare_speedup', 1):.2f}x | {r['section_a_step_ms']:.2f} | "
                   f"{r.get('section_a_speedup', 1):.2f}x |")
  rf = results.get("roofline")
  if rf:
    lines += ["", f"roofline (f32 matmul peak {rf['matmul_peak_gflops']:.1f} GFLOP/s, "
              f"load {rf['load']})",
              "| model | batch | GFLOP/step | step ms | achieved GFLOP/s | of peak | "
              "XLA temp MB | args MB | peak RSS MB (after imports) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rf["rows"]:
      if "error" in r:
        lines.append(f"| {r['model']} | error {r['error']} |")
        continue
      lines.append(f"| {r['model']} | {r['batch']} | {fmt(r.get('flops', 0) / 1e9, '.3f')} | "
                   f"{r['step_ms']:.1f} | {fmt(r.get('achieved_gflops'), '.2f')} | "
                   f"{fmt(r.get('fraction_of_peak'), '.3f')} | {fmt(r.get('temp_mb'))} | "
                   f"{fmt(r.get('argument_mb'))} | {fmt(r.get('peak_rss_mb'), '.0f')} "
                   f"({fmt(r.get('rss_after_imports_mb'), '.0f')}) |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", default="a,b,c,profile,levers,roofline",
                      help="comma-separated: a, b, c, profile, levers, flags, roofline")
  parser.add_argument("--json", default=None)
  parser.add_argument("--steps", type=int, default=300, help="section a's train steps")
  parser.add_argument("--phase-steps", type=int, default=100,
                      help="steps of each pruning phase (pretrain, ADMM, retrain)")
  parser.add_argument("--update-every", type=int, default=25, help="ADMM Z/U update period")
  parser.add_argument("--members", type=int, default=60000,
                      help="training members (Fashion-MNIST's default run: all 60,000)")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: TFDS's)")
  parser.add_argument("--torch-threads", default=None)
  parser.add_argument("--torch-format", default=None, choices=("contiguous", "channels_last"))
  parser.add_argument("--torch-compile", action="store_true")
  parser.add_argument("--cpus", type=int, default=None,
                      help="pin the whole process (both frameworks) to this many CPUs")
  parser.add_argument("--flag-sets", default=None,
                      help="section flags: comma-separated names of FLAG_SETS (default all)")
  parser.add_argument("--flags-child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--roofline-child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  args.data_dir = args.data_dir or None
  if args.flags_child:
    print(json.dumps(_flags_child(args)))
    return 0
  if args.roofline_child:
    print(json.dumps(_roofline_child(args.roofline_child)))
    return 0
  names = [n for n in args.only.split(",") if n]
  unknown = [n for n in names if n not in SECTIONS]
  if unknown:
    print(f"error: unknown section {unknown[0]!r}; allowed: {', '.join(SECTIONS)}",
          file=sys.stderr)
    return 2
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("error: PyTorch is not installed; allowed: pip install -e '.[bench]'",
          file=sys.stderr)
    return 2
  data = load_data(args.data_dir)
  members = np.arange(min(args.members, data.num_examples("train")))
  model = models.create("lenet5", 10)
  init_params = jax.vmap(functools.partial(
      steps.init, model=model, tx=steps.optimizer(config_lib.base()),
      input_shape=(28, 28, 1)))(jax.random.PRNGKey(0)[None]).params
  init_params = jax.tree.map(lambda x: np.asarray(x[0]), init_params)
  meta = {"jax": jax.__version__, "torch": torch.__version__, "cpus": os.cpu_count(),
          "cpus_allowed": sorted(os.sched_getaffinity(0)),
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "members": len(members),
          "load_start": loadavg(), "model_check": check_torch_model(data)}
  ctx = {"args": args, "data": data, "members": members, "init_params": init_params,
         "results": {}}
  if any(n in names for n in ("a", "b", "c", "roofline")):
    ctx["torch_settings"], meta["torch_tuning"] = tune_torch(data, members, init_params, args)
    meta["torch_settings"] = ctx["torch_settings"]
    print(f"PyTorch settings: {ctx['torch_settings']} (tried: "
          + "; ".join(f"{t['threads']} thr {t['format']}: {t['examples_per_s']:.0f} ex/s"
                      for t in meta["torch_tuning"]) + ")", flush=True)
  print(f"model check: {meta['model_check']}", flush=True)
  for name in names:
    t0 = time.perf_counter()
    load0 = loadavg()
    res = SECTIONS[name](ctx)
    res["load"] = f"{load0} -> {loadavg()}"
    res["section_wall_s"] = time.perf_counter() - t0
    ctx["results"][name] = res
    print(report({name: res}), flush=True)
  meta["load_end"] = loadavg()
  meta["peak_rss_mb"] = peak_rss_mb()
  text = json.dumps({"meta": meta, **ctx["results"]}, indent=1, default=str)
  if args.json:
    Path(args.json).write_text(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
