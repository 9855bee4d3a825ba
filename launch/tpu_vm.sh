#!/usr/bin/env bash
# Cloud TPU VM launcher: create (on-demand, spot or queued), install this checkout on every
# worker, run experiments.main on all workers, stream logs, delete; and a babysitter that
# recreates a preempted spot TPU and resumes from the latest checkpoint in the GCS workdir.
#
#   launch/tpu_vm.sh up --name=seqgen-v5e --zone=us-west4-a --accelerator-type=v5litepod-8 \
#       --config=experiments/configs/shakespeare_char.py --workdir=gs://BUCKET/runs/shakespeare
#   launch/tpu_vm.sh babysit --spot ... (same flags)     # until the run logs "done: step N"
#   launch/tpu_vm.sh delete --name=seqgen-v5e --zone=us-west4-a
#
# Every command takes --dry-run: print the exact commands (one per line) instead of running them.
# Flags after "--" go to experiments.main, e.g. -- --config.train.batch_size=256.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/tpu_vm.sh COMMAND --name=NAME --zone=ZONE [options] [-- experiments.main flags]

commands:
  create   create the TPU VM (--spot: spot capacity; --queued: through a queued resource)
  setup    copy this checkout (tracked + untracked, not ignored) to every worker, pip install
  run      run experiments.main on all workers (--worker=all), streaming their logs
           (--detach: start it in the background; follow it with 'logs')
  logs     follow the log of a detached run on --worker (default 0)
  delete   delete the TPU VM (and its queued resource)
  up       create + setup + run
  babysit  up; then until the run logs "done: step", recreate the TPU whenever it was
           preempted and run again (the run resumes from the latest checkpoint in --workdir)

options:
  --name=NAME               TPU VM name (the queued resource is NAME-qr)
  --zone=ZONE               e.g. us-west4-a
  --project=PROJECT         default: gcloud's configured project
  --accelerator-type=TYPE   default v5litepod-8
  --version=RUNTIME         TPU software version, default v2-alpha-tpuv5-lite (v5e); v4:
                            tpu-ubuntu2204-base, v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e
  --spot                    spot (preemptible) capacity
  --queued                  create through 'gcloud compute tpus queued-resources'
  --config=PATH[:ARG]       experiment config, relative to the repository root
  --data=gs://...           setup: also copy this directory to ~/seqgen_data on every worker
                            (the data directory experiments.main reads by default)
  --workdir=gs://...        checkpoints, metrics, logs (must be GCS: shared by all workers and
                            kept across preemptions)
  --detach                  run: start in the background (nohup), log to ~/seqgen_run.log
  --worker=W                logs: which worker (0, 1, ... or all)
  --max-restarts=N          babysit: give up after N restarts (default 20)
  --poll=SECONDS            babysit / queued create: seconds between state checks (default 60)
  --dry-run                 print the commands, run nothing
EOF
}

die() { echo "error: $*" >&2; exit 2; }

# ------------------------------------------------------------------------------------- options
COMMAND="${1:-}"
[[ -z "$COMMAND" || "$COMMAND" == -h || "$COMMAND" == --help ]] && { usage; exit 0; }
shift
NAME="" ZONE="" PROJECT="" TYPE="v5litepod-8" VERSION="v2-alpha-tpuv5-lite"
SPOT=0 QUEUED=0 CONFIG="" WORKDIR="" DATA="" DETACH=0 WORKER=0 MAX_RESTARTS=20 POLL=60 DRY_RUN=0
EXTRA=()
while (($#)); do
  case "$1" in
    --name=*) NAME="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --project=*) PROJECT="${1#*=}" ;;
    --accelerator-type=*) TYPE="${1#*=}" ;;
    --version=*) VERSION="${1#*=}" ;;
    --spot) SPOT=1 ;;
    --queued) QUEUED=1 ;;
    --config=*) CONFIG="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --data=*) DATA="${1#*=}" ;;
    --detach) DETACH=1 ;;
    --worker=*) WORKER="${1#*=}" ;;
    --max-restarts=*) MAX_RESTARTS="${1#*=}" ;;
    --poll=*) POLL="${1#*=}" ;;
    --dry-run) DRY_RUN=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option '$1' (see launch/tpu_vm.sh --help)" ;;
  esac
  shift
done
case "$COMMAND" in
  create|setup|run|logs|delete|up|babysit) ;;
  *) die "unknown command '$COMMAND'; choose one of: create, setup, run, logs, delete, up, babysit" ;;
esac
[[ -n "$NAME" ]] || die "--name is required"
[[ -n "$ZONE" ]] || die "--zone is required"
if [[ "$COMMAND" == run || "$COMMAND" == up || "$COMMAND" == babysit ]]; then
  [[ -n "$CONFIG" ]] || die "--config is required for '$COMMAND'"
  [[ "$WORKDIR" == gs://* ]] || die "--workdir must be a gs:// path (shared by all workers and \
kept across preemptions), got '$WORKDIR'"
fi
[[ -z "$DATA" || "$DATA" == gs://* ]] || die "--data must be a gs:// directory, got '$DATA'"
[[ "$COMMAND" != babysit || $SPOT == 1 || $QUEUED == 1 ]] || \
  echo "# note: babysit is meant for --spot or --queued TPUs; on-demand ones are not preempted" >&2

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QR="$NAME-qr"
ARCHIVE="${TMPDIR:-/tmp}/seqgen-$NAME.tar.gz"
# Paths on the workers: the tilde is left for the workers' shell to expand.
# shellcheck disable=SC2088
REMOTE_DIR='~/seqgen'
# shellcheck disable=SC2088
REMOTE_LOG='~/seqgen_run.log'
COMMON=(--zone="$ZONE")
[[ -n "$PROJECT" ]] && COMMON+=(--project="$PROJECT")

# ------------------------------------------------------------------------------------- helpers
# One shell word, quoted only when needed (--flag='value' for flags), so that a printed line can
# be pasted back into a shell.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  elif [[ "$1" =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
    quote "${BASH_REMATCH[2]}"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

show() {
  local first=1 arg
  for arg in "$@"; do
    ((first)) || printf ' '
    quote "$arg"
    first=0
  done
  printf '\n'
}

# Runs a command, or with --dry-run prints it.
x() {
  if ((DRY_RUN)); then show "$@"; else "$@"; fi
}

gc_tpu() { x gcloud compute tpus tpu-vm "$@"; }

# The query for the TPU's state (READY, PREEMPTED, ...; ACTIVE, SUSPENDED, ... for a queued
# resource).
state_query() {
  if ((QUEUED)); then
    STATE_QUERY=(gcloud compute tpus queued-resources describe "$QR" "${COMMON[@]}"
                 --format='value(state.state)')
  else
    STATE_QUERY=(gcloud compute tpus tpu-vm describe "$NAME" "${COMMON[@]}"
                 --format='value(state)')
  fi
}
state_query

# The state, or empty when the TPU does not exist. With --dry-run: prints the query, answers "".
tpu_state() {
  if ((DRY_RUN)); then show "${STATE_QUERY[@]}"; return 0; fi
  "${STATE_QUERY[@]}" 2>/dev/null || true
}

# The command every worker runs: experiments.main with --distributed=on (each worker is one JAX
# process; jax.distributed.initialize() reads the topology from the TPU metadata).
train_command() {
  local cmd=(python3 -m experiments.main --config="$CONFIG" --workdir="$WORKDIR"
             --distributed=on "${EXTRA[@]}")
  local line
  line="$(show "${cmd[@]}")"
  if ((DETACH)); then
    printf 'cd %s && nohup %s > %s 2>&1 < /dev/null &' "$REMOTE_DIR" "$line" "$REMOTE_LOG"
  else
    printf 'set -o pipefail; cd %s && %s 2>&1 | tee -a %s' "$REMOTE_DIR" "$line" "$REMOTE_LOG"
  fi
}

# ------------------------------------------------------------------------------------- commands
do_create() {
  local spot=()
  ((SPOT)) && spot=(--spot)
  if ((QUEUED)); then
    x gcloud compute tpus queued-resources create "$QR" --node-id="$NAME" "${COMMON[@]}" \
      --accelerator-type="$TYPE" --runtime-version="$VERSION" "${spot[@]}"
    if ((DRY_RUN)); then
      echo "# wait until the queued resource is ACTIVE:"
      tpu_state
      return
    fi
    local state
    while state="$(tpu_state)"; [[ "$state" != ACTIVE ]]; do
      case "$state" in
        FAILED|SUSPENDED) die "queued resource $QR is $state" ;;
      esac
      echo "# queued resource $QR: ${state:-not visible yet}; checking again in ${POLL}s" >&2
      sleep "$POLL"
    done
  else
    gc_tpu create "$NAME" "${COMMON[@]}" --accelerator-type="$TYPE" --version="$VERSION" \
      "${spot[@]}"
  fi
}

do_setup() {
  # Ships the working tree as it is (tracked and untracked files, minus .gitignore'd ones).
  if ((DRY_RUN)); then
    echo "git -C $(quote "$REPO") ls-files -z -co --exclude-standard |" \
      "tar -C $(quote "$REPO") -czf $(quote "$ARCHIVE") --null -T -"
  else
    git -C "$REPO" ls-files -z -co --exclude-standard | tar -C "$REPO" -czf "$ARCHIVE" --null -T -
  fi
  gc_tpu scp "$ARCHIVE" "$NAME:seqgen.tar.gz" "${COMMON[@]}" --worker=all
  local install="rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar -xzf ~/seqgen.tar.gz -C \
$REMOTE_DIR && cd $REMOTE_DIR && python3 -m pip install -q --upgrade pip && python3 -m pip install \
-q -e \".[tpu]\""
  if [[ -n "$DATA" ]]; then
    install+=" && mkdir -p ~/seqgen_data && gcloud storage rsync --recursive $(quote "$DATA") \
~/seqgen_data"
  fi
  gc_tpu ssh "$NAME" "${COMMON[@]}" --worker=all --command="$install"
}

do_run() {
  gc_tpu ssh "$NAME" "${COMMON[@]}" --worker=all --command="$(train_command)"
}

do_logs() {
  gc_tpu ssh "$NAME" "${COMMON[@]}" --worker="$WORKER" --command="tail -n +1 -F $REMOTE_LOG"
}

do_delete() {
  if ((QUEUED)); then
    x gcloud compute tpus queued-resources delete "$QR" "${COMMON[@]}" --force --quiet
  else
    gc_tpu delete "$NAME" "${COMMON[@]}" --quiet
  fi
}

# Until a run finishes: (re)create the TPU when it is missing or was preempted, install, run.
# A preempted worker gets SIGTERM, the loop saves a checkpoint to the GCS workdir, and the next
# run restores it, so no step is lost beyond the one in flight.
do_babysit() {
  local restarts=0 state attempt_log rc
  attempt_log="${TMPDIR:-/tmp}/seqgen-$NAME-attempt.log"
  while :; do
    if ((DRY_RUN)); then tpu_state; state=""; else state="$(tpu_state)"; fi
    case "$state" in
      READY|ACTIVE) ;;
      CREATING|STARTING|PROVISIONING|WAITING_FOR_RESOURCES|ACCEPTED|REPAIRING|RESTARTING)
        ((DRY_RUN)) || { sleep "$POLL"; continue; } ;;
      *)  # missing, PREEMPTED, TERMINATED, STOPPED, SUSPENDED, FAILED, ...
        [[ -z "$state" ]] || do_delete
        do_create
        do_setup ;;
    esac
    if ((DRY_RUN)); then
      do_run
      echo "# repeat until the run's output has 'done: step' (at most $MAX_RESTARTS restarts," \
        "checking every ${POLL}s)"
      return
    fi
    rc=0
    do_run 2>&1 | tee "$attempt_log" || rc=$?
    if grep -q "done: step" "$attempt_log"; then
      echo "# babysit: the run finished (exit $rc)" >&2
      return 0
    fi
    restarts=$((restarts + 1))
    ((restarts <= MAX_RESTARTS)) || die "the run did not finish after $MAX_RESTARTS restarts"
    echo "# babysit: run ended without finishing (exit $rc, TPU $(tpu_state));" \
      "restart $restarts of $MAX_RESTARTS in ${POLL}s" >&2
    sleep "$POLL"
  done
}

case "$COMMAND" in
  create) do_create ;;
  setup) do_setup ;;
  run) do_run ;;
  logs) do_logs ;;
  delete) do_delete ;;
  up) do_create; do_setup; do_run ;;
  babysit) do_babysit ;;
esac
