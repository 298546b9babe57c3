#!/usr/bin/env bash
# Runs one miajax training as N JAX processes on this machine (CPU, gloo collectives).
#
# Usage:
#   launch/local_multiprocess.sh [-n PROCESSES] [-d DEVICES_PER_PROCESS] [-p PORT]
#                                [-l LOG_DIR] [--] [miajax.main flags...]
#
# Example (2 processes x 2 CPU devices = 4 devices):
#   launch/local_multiprocess.sh -n 2 -d 2 -- --workdir=/tmp/mp \
#       --config.train.epochs=2 --config.attack.epochs=1
#
# Each process runs `python -m miajax.main FLAGS --coordinator_address=127.0.0.1:PORT
# --num_processes=N --process_id=i` with JAX_PLATFORMS=cpu and, with -d,
# XLA_FLAGS=--xla_force_host_platform_device_count=D added to its XLA_FLAGS.
# Options can also be given as environment variables: NUM_PROCESSES (default 2),
# DEVICES_PER_PROCESS (default: unset, one CPU device each), PORT (default: a free port),
# LOG_DIR (default: none; output goes to this terminal with a "[i] " prefix), PYTHON (default:
# the repository's .venv/bin/python if present, else python3), GRACE_S (default 10: seconds
# between SIGTERM and SIGKILL when stopping the processes).
#
# It waits for all processes; when one fails (or this script is interrupted) the others are
# stopped (they would otherwise wait for it in a collective), and the exit status is the first
# failure's (0 when all succeed).
# This is a test harness: the processes share this machine's cores. On real clusters use
# launch/tpu_pod.sh or launch/slurm_gpu.sbatch.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NUM_PROCESSES="${NUM_PROCESSES:-2}"
DEVICES_PER_PROCESS="${DEVICES_PER_PROCESS:-}"
PORT="${PORT:-}"
LOG_DIR="${LOG_DIR:-}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

usage() {
  # The comment block at the top of this file.
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
  exit "${1:-2}"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) NUM_PROCESSES="${2:?-n needs a value}"; shift 2 ;;
    -d) DEVICES_PER_PROCESS="${2:?-d needs a value}"; shift 2 ;;
    -p) PORT="${2:?-p needs a value}"; shift 2 ;;
    -l) LOG_DIR="${2:?-l needs a value}"; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) break ;;
  esac
done

if ! [[ "$NUM_PROCESSES" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: -n must be a positive integer, got '$NUM_PROCESSES'" >&2; exit 2
fi
if [[ -n "$DEVICES_PER_PROCESS" ]] && ! [[ "$DEVICES_PER_PROCESS" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: -d must be a positive integer, got '$DEVICES_PER_PROCESS'" >&2; exit 2
fi
if [[ -z "$PORT" ]]; then
  PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
if [[ -n "$LOG_DIR" ]]; then mkdir -p "$LOG_DIR"; fi

xla_flags="${XLA_FLAGS:-}"
if [[ -n "$DEVICES_PER_PROCESS" ]]; then
  xla_flags="${xla_flags:+$xla_flags }--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS"
fi

# Each process in its own process group (job control), so that stopping it stops its children.
set -m
pids=()
# TERM, then KILL after GRACE_S seconds: in a multi-process run JAX's preemption notifier
# catches SIGTERM, and a process waiting for a failed peer in a collective does not return.
GRACE_S="${GRACE_S:-10}"
stop_all() {
  local pid t alive
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for ((t = 0; t < GRACE_S * 10; t++)); do
    alive=0
    for pid in "${pids[@]}"; do
      if kill -0 -- "-$pid" 2>/dev/null; then alive=1; fi
    done
    if [[ $alive -eq 0 ]]; then return; fi
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

echo "local_multiprocess: $NUM_PROCESSES processes, coordinator 127.0.0.1:$PORT," \
     "${DEVICES_PER_PROCESS:-1} device(s) each" >&2
for ((i = 0; i < NUM_PROCESSES; i++)); do
  cmd=(env JAX_PLATFORMS=cpu XLA_FLAGS="$xla_flags"
       PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
       "$PYTHON" -m miajax.main "$@"
       --coordinator_address="127.0.0.1:$PORT" --num_processes="$NUM_PROCESSES"
       --process_id="$i")
  if [[ -n "$LOG_DIR" ]]; then
    "${cmd[@]}" >"$LOG_DIR/process_$i.log" 2>&1 &
  else
    "${cmd[@]}" > >(sed -u "s/^/[$i] /") 2>&1 &
  fi
  pids+=("$!")
done

# Wait for every process; the first failure stops the rest.
status=0
running=("${pids[@]}")
while [[ ${#running[@]} -gt 0 ]]; do
  still=()
  for idx in "${!running[@]}"; do
    pid="${running[$idx]}"
    if kill -0 "$pid" 2>/dev/null; then
      still+=("$pid")
      continue
    fi
    rc=0
    wait "$pid" || rc=$?
    if [[ $rc -ne 0 && $status -eq 0 ]]; then
      for ((i = 0; i < NUM_PROCESSES; i++)); do
        if [[ "${pids[$i]}" == "$pid" ]]; then
          echo "local_multiprocess: process $i exited with status $rc; stopping the others" >&2
        fi
      done
      status=$rc
      stop_all
    fi
  done
  running=("${still[@]+"${still[@]}"}")
  if [[ ${#running[@]} -gt 0 ]]; then sleep 0.5; fi
done
wait  # the output filters
exit "$status"
