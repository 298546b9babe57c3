#!/usr/bin/env bash
# Runs miajax on every worker of a Cloud TPU VM (a single host or a pod slice) over gcloud ssh.
#
# Usage:
#   TPU_NAME=NAME ZONE=ZONE launch/tpu_pod.sh push
#   TPU_NAME=NAME ZONE=ZONE launch/tpu_pod.sh install
#   TPU_NAME=NAME ZONE=ZONE BUCKET=BUCKET CONFIG=configs/cifar10_vgg16.py \
#       launch/tpu_pod.sh run [miajax.main flags...]      # workdir gs://BUCKET/miajax/cifar10_vgg16
#   TPU_NAME=NAME ZONE=ZONE launch/tpu_pod.sh tail
#
# Subcommands:
#   push     copy this checkout (tracked and untracked, not ignored files) to $REMOTE_DIR on
#            every worker
#   install  pip install -e '.[tpu]' in $REMOTE_DIR on every worker (once per TPU VM)
#   run      python -m miajax.main --config=$CONFIG --workdir=$WORKDIR
#            --coordinator_address=auto [--config.data.dir=$DATA_DIR] FLAGS... on all workers at
#            once; JAX finds the pod's coordinator, process count and index by itself
#   tail     the last lines of $LOG on every worker (after a DETACH=1 run)
#
# Variables:
#   TPU_NAME, ZONE  the TPU VM (required); PROJECT: gcloud project (default: gcloud's own)
#   CONFIG          config file, relative to $REMOTE_DIR, with an optional :ARG
#                   (default configs/default.py)
#   BUCKET          a Cloud Storage bucket every worker can write (the TPU VM's service
#                   account needs roles/storage.objectAdmin on it)
#   WORKDIR         the run's directory (default gs://$BUCKET/miajax/NAME, NAME the config
#                   file's name and :ARG): a gs:// URL, written in place by every worker, or a
#                   path all workers share (NFS/Filestore); BUCKET or WORKDIR is required for run
#   DATA_DIR        TFDS data dir, passed as --config.data.dir (default: the config's): a
#                   path on every worker, or gs://BUCKET/PATH for MNIST, Fashion-MNIST and
#                   CIFAR (each worker copies the prepared dataset to ~/.cache/miajax/data
#                   once); ImageNet: a gcsfuse mount point
#   REMOTE_DIR      checkout directory on the workers, relative to the home directory
#                   (default miajax)
#   REMOTE_PYTHON   the workers' Python (default python3)
#   DETACH          1: start the run in the background on each worker (output to $LOG) and
#                   return; the run then survives a dropped ssh connection (default 0)
#   LOG             log file on each worker for DETACH=1, relative to $REMOTE_DIR
#                   (default miajax.log)
#
# Rerunning `run` with the same WORKDIR and config resumes from the latest checkpoints.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="${CONFIG:-configs/default.py}"
BUCKET="${BUCKET:-}"
WORKDIR="${WORKDIR:-}"
DATA_DIR="${DATA_DIR:-}"
PROJECT="${PROJECT:-}"
REMOTE_DIR="${REMOTE_DIR:-miajax}"
REMOTE_PYTHON="${REMOTE_PYTHON:-python3}"
DETACH="${DETACH:-0}"
LOG="${LOG:-miajax.log}"

usage() {
  # The comment block at the top of this file.
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
  exit "${1:-2}"
}

die() {
  echo "error: $*" >&2
  exit 2
}

# Runs a shell command line on every worker of the TPU VM at once.
on_all_workers() {
  local project_flag=()
  if [[ -n "$PROJECT" ]]; then project_flag=(--project="$PROJECT"); fi
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${project_flag[@]}" \
      --worker=all --command="$1"
}

# The words of "$@" quoted for the remote shell.
quote() {
  printf '%q ' "$@"
}

ARCHIVE=""
trap 'if [[ -n "$ARCHIVE" ]]; then rm -f "$ARCHIVE"; fi' EXIT

cmd_push() {
  local project_flag=()
  if [[ -n "$PROJECT" ]]; then project_flag=(--project="$PROJECT"); fi
  ARCHIVE="$(mktemp -t miajax-XXXXXX.tar.gz)"
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
      | tar -czf "$ARCHIVE" --null -T -)
  gcloud compute tpus tpu-vm scp "$ARCHIVE" "$TPU_NAME:miajax-src.tar.gz" --zone="$ZONE" \
      "${project_flag[@]}" --worker=all
  on_all_workers "mkdir -p $(quote "$REMOTE_DIR") && tar -xzf miajax-src.tar.gz -C $(quote "$REMOTE_DIR") && rm miajax-src.tar.gz"
}

cmd_install() {
  on_all_workers "cd $(quote "$REMOTE_DIR") && $(quote "$REMOTE_PYTHON") -m pip install -e '.[tpu]' --config-settings editable_mode=compat"
}

cmd_run() {
  if [[ -z "$WORKDIR" ]]; then
    [[ -n "$BUCKET" ]] || die "set BUCKET to a Cloud Storage bucket the workers can write (or WORKDIR)"
    local name="${CONFIG##*/}"
    name="${name/.py/}"
    WORKDIR="gs://${BUCKET#gs://}/miajax/${name//:/-}"
  fi
  if [[ "$WORKDIR" == *://* && "$WORKDIR" != gs://* ]]; then
    die "WORKDIR=$WORKDIR: allowed: a gs://BUCKET/PATH URL or a path every worker shares"
  fi
  echo "workdir: $WORKDIR" >&2
  local args=(-m miajax.main --config="$CONFIG" --workdir="$WORKDIR" --coordinator_address=auto)
  if [[ -n "$DATA_DIR" ]]; then args+=(--config.data.dir="$DATA_DIR"); fi
  args+=("$@")
  local main
  main="$(quote "$REMOTE_PYTHON" "${args[@]}")"
  if [[ "$DETACH" == 1 ]]; then
    on_all_workers "cd $(quote "$REMOTE_DIR") && nohup $main > $(quote "$LOG") 2>&1 < /dev/null & echo \"\$(hostname): started, log in ~/$REMOTE_DIR/$LOG\""
  else
    on_all_workers "cd $(quote "$REMOTE_DIR") && $main"
  fi
}

cmd_tail() {
  on_all_workers "echo \"== \$(hostname)\"; tail -n 20 $(quote "$REMOTE_DIR/$LOG")"
}

[[ $# -ge 1 ]] || usage
case "$1" in
  -h|--help) usage 0 ;;
  push|install|run|tail) ;;
  *) echo "error: unknown subcommand '$1'" >&2; usage ;;
esac
[[ -n "${TPU_NAME:-}" ]] || die "set TPU_NAME to the TPU VM's name"
[[ -n "${ZONE:-}" ]] || die "set ZONE to the TPU VM's zone"
command -v gcloud >/dev/null || die "gcloud is not installed (https://cloud.google.com/sdk)"
subcommand="$1"
shift
"cmd_$subcommand" "$@"
