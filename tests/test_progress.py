"""The run's ETA counts setting up, compiling, training and auditing, each at the pace
measured so far; fed made-up timings, no training needed."""

import pytest

from miajax import progress as progress_lib
from miajax.progress import Progress, Stack


def _run() -> Progress:
  # A 1-phase and a 3-phase stack of 3 trials each.
  return Progress({"baseline": Stack(3, (100,)), "pruning": Stack(3, (50, 30, 20))})


def test_the_eta_is_unknown_until_a_training_rate_is_measured():
  p = _run()
  p.compiling("baseline", 0, "train", since=0.0)
  assert p.seconds_left() is None and p.eta() == "?"


def test_the_eta_adds_setting_up_compiling_training_and_auditing_left():
  p = _run()
  p.was_set_up("baseline", 8.0)
  p.compiling("baseline", 0, "train", since=0.0)
  p.compiled(now=30.0)                             # one phase compiled in 30 s
  p.trained("baseline", 40, seconds=60.0)           # 120 trial-steps: 0.5 s a trial-step
  setting_up = 8.0                                  # pruning's, at the mean so far
  training = (60 * 3 + 100 * 3) * 0.5               # the rest at the run's rate
  compiling = 3 * 30.0                              # pruning's 3 phases at the mean so far
  auditing = 6 * progress_lib.AUDIT_GUESS_S         # nothing audited yet: the guess per trial
  assert p.seconds_left() == pytest.approx(setting_up + training + compiling + auditing)

  p.trained("baseline", 60, seconds=90.0)
  p.audited_in("baseline", seconds=120.0)           # 40 s a trial
  assert p.seconds_left() == pytest.approx(8.0 + 100 * 3 * 0.5 + 3 * 30.0 + 3 * 40.0)
  assert p.eta() == "0:06:08"


def test_before_anything_is_measured_guesses_stand_in():
  p = _run()
  p.trained("baseline", 10, seconds=3.0)            # 0.1 s a trial-step
  assert p.seconds_left() == pytest.approx(
      (90 + 100) * 3 * 0.1 + 2 * progress_lib.SETUP_GUESS_S
      + 4 * progress_lib.COMPILE_GUESS_S + 6 * progress_lib.AUDIT_GUESS_S)


def test_a_started_stack_runs_at_its_own_rate_and_compiles_only_what_is_left():
  p = _run()
  p.compiling("baseline", 0, "train", since=0.0)
  p.compiled(now=10.0)
  p.trained("baseline", 100, seconds=30.0)          # 0.1 s a trial-step
  p.audited_in("baseline", seconds=30.0)
  p.was_set_up("pruning", 5.0)
  p.compiling("pruning", 0, "pretrain", since=100.0)
  p.compiled(now=130.0)                              # compiles so far: 10 s and 30 s
  p.trained("pruning", 50, seconds=60.0)             # 0.4 s a trial-step: Min-Max is slower
  # admm and retrain: 50 steps of 3 trials at pruning's own rate, 2 compiles at the mean.
  assert p.seconds_left() == pytest.approx(50 * 3 * 0.4 + 2 * 20.0 + 3 * 10.0)


def test_restored_and_finished_stacks_leave_only_their_remainder():
  p = _run()
  p.finished_earlier("baseline")                     # results on disk: nothing left
  p.was_set_up("pruning", 5.0)
  p.restored("pruning", 60)                          # resumed inside admm: pretrain is done
  p.compiling("pruning", 1, "admm", since=0.0)
  p.compiled(now=12.0)
  p.trained("pruning", 10, seconds=15.0)             # 0.5 s a trial-step
  # 30 steps left (10 of admm, 20 of retrain), the retrain phase still to compile.
  assert p.seconds_left() == pytest.approx(
      30 * 3 * 0.5 + 12.0 + 3 * progress_lib.AUDIT_GUESS_S)


def test_the_setup_and_compiling_lines_name_the_stack_phase_trials_and_time():
  p = _run()
  assert p.setting_up("baseline") == (f"[1/2 baseline] setting up 3 trials "
                                      f"(about {progress_lib.SETUP_GUESS_S:.0f} s)")
  line = p.compiling("pruning", 1, "admm", since=5.0)
  assert line == (f"[2/2 pruning] compiling the admm step for 3 trials "
                  f"(about {progress_lib.COMPILE_GUESS_S:.0f} s)")
  p.trained("pruning", 50, seconds=30.0)
  assert p.compiled(now=26.4) == "[2/2 pruning] admm step compiled in 21 s; run ETA " + p.eta()
  assert p.compiling("pruning", 2, "retrain", since=30.0).endswith("(about 21 s)")
  one = Progress({"dp": Stack(1, (10,))})
  assert one.compiling("dp", 0, "train", since=0.0).startswith("[1/1 dp] compiling the "
                                                                "train step for 1 trial (")


def test_times_read_as_seconds_or_hours_minutes_seconds():
  assert progress_lib.seconds(21.4) == "21 s" and progress_lib.seconds(3725) == "1:02:05"
  assert progress_lib.hms(float("inf")) == "?"


def test_a_stack_not_started_is_estimated_by_its_defences_step_cost():
  # Min-Max's steps cost 2.7 plain steps, DP's 4: a plain stack's pace predicts theirs.
  p = Progress({"baseline": Stack(1, (100,)), "minmax": Stack(1, (100,), (2.7,)),
                "pruning": Stack(1, (50, 50), (1.0, 2.0))})
  p.trained("baseline", 100, seconds=10.0)          # 0.1 s a plain step
  p.audited_in("baseline", seconds=0.0)
  p.was_set_up("baseline", 0.0)
  training = 100 * 2.7 * 0.1 + (50 * 1.0 + 50 * 2.0) * 0.1
  others = 2 * 0.0 + 3 * progress_lib.COMPILE_GUESS_S + 2 * 0.0
  assert p.seconds_left() == pytest.approx(training + others)


def test_a_started_stack_weighs_its_own_pace_by_the_cost_of_the_phases_left():
  p = Progress({"pruning": Stack(1, (50, 50), (1.0, 3.0))})
  p.compiling("pruning", 0, "pretrain", since=0.0)
  p.compiled(now=0.0)
  p.trained("pruning", 50, seconds=5.0)             # 0.1 s a plain step
  p.audited_in("pruning", seconds=0.0)              # (as if audited: training left only)
  assert p.seconds_left() == pytest.approx(50 * 3.0 * 0.1 + 1 * 0.0)


def test_every_defence_costs_at_least_a_plain_step_and_min_max_and_dp_cost_more():
  from miajax import config as config_lib
  from miajax import defences
  config = config_lib.base()
  costs = {m: defences.get(m).phase_costs(config) for m in defences.NAMES}
  assert all(c >= 1.0 for phase_costs in costs.values() for c in phase_costs)
  assert costs["baseline"] == (1.0,) and costs["pruning"] == (1.0, 1.0, 1.0)
  assert min(costs["minmax"]) > 2 and min(costs["pruning_minmax"]) > 2
  assert costs["dp"][0] > 3
