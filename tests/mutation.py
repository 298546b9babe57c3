"""Mutation check of the privacy-critical code: each one-line bug must fail a test.

python tests/mutation.py [--only ID[,ID]] [--json PATH]

Every mutant is applied to a fresh copy of the tree (tracked and untracked files, as `git
ls-files` lists them); the tests that should kill it then run in that copy with the copy first
on sys.path. A mutant is killed when at least one of them fails. The script prints a table (id,
what the bug is, killed or SURVIVED, the failing tests, seconds) and exits 1 if any survives.
Each mutant runs the tests (or test files) named for it, not the whole suite, which would take
hours for twenty mutants on a CPU; it is not part of CI.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (id, bug, file, original line fragment, mutated fragment, tests that must catch it)
MUTANTS = [
    ("admm-sign", "ADMM proximal term with the dual's sign flipped (w - z - u)",
     "miajax/defences/admm.py", "jnp.square(w - z + u)", "jnp.square(w - z - u)",
     ["tests/test_methods.py::test_admm_w_step_gradient_is_the_task_gradient_plus_rho_times_w_minus_z_plus_u"]),
    ("admm-rho-growth", "ADMM's rho growth ignored",
     "miajax/defences/admm.py", 'rho=state.extra.rho * growth)',
     'rho=state.extra.rho)',
     ["tests/test_methods.py::test_admm_update_rescales_the_scaled_dual_when_rho_grows"]),
    ("admm-dual-rescale", "scaled dual not divided by the growth when rho grows",
     "miajax/defences/admm.py", "(u + w - z) / growth", "(u + w - z)",
     ["tests/test_methods.py::test_admm_update_rescales_the_scaled_dual_when_rho_grows"]),
    ("dp-no-noise", "no noise in the DP-SGD training step",
     "miajax/defences/dp.py", 'noise_multiplier=hp["noise_multiplier"],',
     "noise_multiplier=0.0,",
     ["tests/test_methods.py::test_dp_step_adds_fresh_gaussian_noise_of_sigma_clip_over_batch_every_step"]),
    ("dp-same-key", "the same DP noise key on every step",
     "miajax/steps.py", "key=jax.random.split(state.key)[0])", "key=state.key)",
     ["tests/test_methods.py::test_dp_step_adds_fresh_gaussian_noise_of_sigma_clip_over_batch_every_step"]),
    ("dp-rate", "DP sample rate 10x too small (epsilon understated)",
     "miajax/defences/dp.py", "sample_rate = config.data.batch_size / num_members",
     "sample_rate = config.data.batch_size / (10 * num_members)",
     ["tests/test_methods.py::test_dp_recipe_is_calibrated_to_the_target_epsilon"]),
    ("dp-clip-scale", "DP clipping scales small gradients up (min(10, C/norm))",
     "miajax/dp.py", "scale = jnp.minimum(1.0, clip_norm", "scale = jnp.minimum(10.0, clip_norm",
     ["tests/test_dp.py"]),
    ("attack-fit-audit", "post-hoc attack fitted on the audit split as well as split 0",
     "miajax/evaluate.py",
     "_class_matched(np.flatnonzero(out.select(True, 0)),\n"
     "                                       np.flatnonzero(out.select(False, 0)),",
     "_class_matched(np.flatnonzero(out.is_member),\n"
     "                                       np.flatnonzero(~out.is_member),",
     ["tests/test_audit.py"]),
    ("split-audit-overlap", "audit non-members overlapping the reference set",
     "miajax/splits.py", "np.sort(test[half:2 * half])", "np.sort(test[half - 1:2 * half - 1])",
     ["tests/test_splits.py"]),
    ("split-minmax-audit", "Min-Max's reference non-members are the audit's",
     "miajax/splits.py", "minmax_reference=np.sort(test[2 * half:3 * half])",
     "minmax_reference=np.sort(test[half:2 * half])",
     ["tests/test_splits.py"]),
    ("minmax-reads-posthoc-ref", "Min-Max's inner attack reads the post-hoc attack's reference",
     "miajax/defences/minmax.py", '"ref": ("test", [s.minmax_reference for s in own], count)',
     '"ref": ("test", [s.reference for s in own], count)',
     ["tests/test_audit_sets.py::test_minmax_inner_attack_reads_its_own_sets_not_the_post_hoc_attacks"]),
    ("lira-minmax-members", "LiRA models' inner attacks fed the shared members",
     "miajax/defences/minmax.py", "  if lira:\n    inner =", "  if False:\n    inner =",
     ["tests/test_audit_sets.py::test_in_a_lira_stack_each_models_inner_attack_sees_only_that_models_members"]),
    ("minmax-sign", "Min-Max classifier raises the attack's gain (loss - gamma * gain)",
     "miajax/defences/minmax.py", 'return loss + hp["gamma"] * gain,',
     'return loss - hp["gamma"] * gain,',
     ["tests/test_methods.py::test_minmax_classifier_step_lowers_the_inner_attacks_gain_on_its_members"]),
    ("mask-dropped", "masked retraining without its mask (pruned weights revive)",
     "miajax/defences/admm.py", 'model=model, tx=tx, mask_key="mask"),', "model=model, tx=tx),",
     ["tests/test_methods.py::test_masked_retraining_keeps_pruned_weights_and_moments_exactly_zero"]),
    ("topk-ties", "top-n projection keeps every tie at the threshold",
     "miajax/pruning.py", "  above = key > t\n", "  above = key >= t\n",
     ["tests/test_pruning.py"]),
    ("tpr-at-rate", "TPR read at FPR <= the rate instead of strictly below",
     "miajax/metrics.py", "tprs[fprs < fpr].max()", "tprs[fprs <= fpr].max()",
     ["tests/test_metrics.py"]),
    ("gain-nonmember", "gain's non-member term log f_A instead of log(1 - f_A)",
     "miajax/metrics.py", "np.log1p(-p[~m]).mean()", "np.log(p[~m]).mean()",
     ["tests/test_metrics.py"]),
    ("lira-offline-in", "offline LiRA scoring against the IN Gaussian",
     "miajax/lira.py", "log_ndtr((target - mu_out) / np.sqrt(var_out))",
     "log_ndtr((target - mu_in) / np.sqrt(var_in))",
     ["tests/test_lira.py::test_offline_ignores_in_shadows"]),
    ("lira-keep-target", "LiRA target trains on the whole pool, not half of it",
     "miajax/lira.py", "rows = [position(target_key)[None] < half]",
     "rows = [position(target_key)[None] < pool_size]",
     ["tests/test_lira.py::test_keep_masks_every_model_trains_on_exactly_half_the_pool"]),
    ("prune-keeps-moments", "hard prune keeps the optimizer moments of the pruned weights",
     "miajax/defences/admm.py", "opt_state=tx.init(params),", "opt_state=state.opt_state,",
     ["tests/test_methods.py::test_masked_retraining_keeps_pruned_weights_and_moments_exactly_zero"]),
    ("epoch-order-reused", "every epoch reads the members in the first epoch's order",
     "miajax/data/pipeline.py", "if cached is None or cached[0] != (seed, epoch, len(indices)):",
     "if cached is None:",
     ["tests/test_pipeline.py"]),
    ("resume-rereads-batches", "a resumed phase reads its batches from the phase's start again",
     "miajax/stack.py", "batches = self.batches(self.start, end)",
     "batches = self.batches(begin, end - self.start + begin)",
     ["tests/test_resume.py"]),
    ("resume-reenters-phase", "a phase resumed midway is entered again (ADMM's Z and U reset)",
     "miajax/stack.py", "if self.start == begin and phase.enter is not None:",
     "if self.start >= begin and phase.enter is not None:",
     ["tests/test_resume.py"]),
    ("lira-target-in-shadows", "LiRA target scored against a shadow set that includes itself",
     "miajax/evaluate.py", "lira.scores(conf[0], conf[1:], keep[1:],",
     "lira.scores(conf[0], conf, keep,",
     ["tests/test_lira.py::test_lira_run_records_lira_and_rmia_and_saves_their_scores"]),
    ("rmia-target-in-references", "RMIA target among its own reference models",
     "miajax/evaluate.py", "logp[0], logp[1:], keep[1:], pop_logp[0], pop_logp[1:], online=online,",
     "logp[0], logp, keep, pop_logp[0], pop_logp, online=online,",
     ["tests/test_rmia.py::test_lira_audit_records_rmia_beside_lira",
      "tests/test_lira.py::test_lira_run_records_lira_and_rmia_and_saves_their_scores"]),
    ("rmia-a-reads-target", "RMIA's offline a chosen with the target among the stand-ins",
     "miajax/evaluate.py", "rmia.choose_offline_a(logp[1:], keep[1:], pop_logp[1:],",
     "rmia.choose_offline_a(logp, keep, pop_logp,",
     ["tests/test_rmia.py::test_choosing_a_reads_nothing_of_the_target"]),
    ("rmia-stand-in-own-reference", "RMIA's stand-in target among its own reference models",
     "miajax/rmia.py", "others = np.arange(len(ref)) != k", "others = np.arange(len(ref)) >= 0",
     ["tests/test_rmia.py::test_a_stand_in_is_attacked_with_the_other_reference_models_only"]),
    ("tpr-boundary", "TPR below FPR reported with exactly 1/FPR non-members (no false positive)",
     "miajax/metrics.py",
     "  while n > 1 and 1.0 / (n - 1) < fpr:\n    n -= 1\n  while not 1.0 / n < fpr:\n    n += 1\n",
     "  n = math.ceil(1.0 / fpr - 1e-9)\n",
     ["tests/test_metrics.py::test_tpr_at_fpr_needs_more_than_one_over_the_rate_non_members"]),
    ("eval-audit-set", "audit non-members read from the reference set",
     "miajax/evaluate.py", '("test", s.audit, False, 1)', '("test", s.reference, False, 1)',
     ["tests/test_audit_sets.py::test_a_split_per_trial_gives_each_trial_its_own_members_and_audit"]),
]


def _copy_tree(dest: Path) -> None:
  files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.splitlines()
  for name in files:
    src = ROOT / name
    if src.is_file():
      (dest / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(src, dest / name)


def _apply(tree: Path, file: str, old: str, new: str) -> None:
  path = tree / file
  text = path.read_text()
  if text.count(old) != 1:
    raise SystemExit(f"mutant on {file}: {old!r} occurs {text.count(old)} times, not once; "
                     "update MUTANTS to the code")
  path.write_text(text.replace(old, new))


def run(mutant, workers: int) -> dict:
  ident, bug, file, old, new, tests = mutant
  t0 = time.time()
  with tempfile.TemporaryDirectory(prefix=f"mutant-{ident}-") as tmp:
    tree = Path(tmp)
    _copy_tree(tree)
    _apply(tree, file, old, new)
    env = dict(os.environ, PYTHONPATH=str(tree), JAX_PLATFORMS="cpu")
    # The copy must be what the tests import, not the installed (editable) tree.
    probe = subprocess.run([sys.executable, "-c", "import miajax; print(miajax.__file__)"],
                           cwd=tree, env=env, capture_output=True, text=True)
    if not probe.stdout.strip().startswith(str(tree)):
      raise SystemExit(f"the copy is not imported first: {probe.stdout or probe.stderr}")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers),
         "-o", "addopts=", *tests], cwd=tree, env=env, capture_output=True, text=True)
  failed = sorted(set(re.findall(r"^FAILED (\S+)", proc.stdout, re.M)))
  return {"id": ident, "bug": bug, "killed": proc.returncode != 0, "killed_by": failed,
          "seconds": round(time.time() - t0, 1),
          "tail": "" if proc.returncode else proc.stdout[-500:]}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", help="comma-separated mutant ids")
  parser.add_argument("--json", help="write the results here")
  parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers")
  args = parser.parse_args()
  chosen = list(MUTANTS)
  if args.only:
    wanted = set(args.only.split(","))
    unknown = wanted - {m[0] for m in MUTANTS}
    if unknown:
      print(f"error: --only: unknown mutants {sorted(unknown)}; allowed: "
            f"{', '.join(m[0] for m in MUTANTS)}", file=sys.stderr)
      return 2
    chosen = [m for m in chosen if m[0] in wanted]
  rows = []
  for mutant in chosen:
    row = run(mutant, args.workers)
    rows.append(row)
    print(f"{row['id']:<26} {'killed' if row['killed'] else 'SURVIVED':<9} "
          f"{row['seconds']:>6.0f}s  {', '.join(row['killed_by'][:2]) or row['tail'][-200:]}",
          flush=True)
  killed = sum(r["killed"] for r in rows)
  print(f"\n{killed} of {len(rows)} mutants killed")
  if args.json:
    Path(args.json).write_text(json.dumps(rows, indent=1))
  return 0 if killed == len(rows) else 1


if __name__ == "__main__":
  sys.exit(main())
