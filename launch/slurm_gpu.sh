#!/usr/bin/env bash
# SLURM GPU launcher: one JAX process per node, each driving all of its node's GPUs.
#
# From a login node it submits itself with sbatch; inside the allocation it starts one task per
# node with srun, and each task runs experiments.main, whose jax.distributed.initialize() reads
# the process count and rank from SLURM (SLURM_NTASKS, SLURM_PROCID) and the coordinator from
# JAX_COORDINATOR_ADDRESS (exported below: the first node of the allocation).
#
#   launch/slurm_gpu.sh --nodes=2 --gpus-per-node=8 --partition=gpu --time=04:00:00 \
#       --venv=$HOME/venvs/seqgen --config=experiments/configs/shakespeare_char.py \
#       --workdir=/shared/runs/shakespeare -- --config.train.batch_size=512
#   launch/slurm_gpu.sh ... --dry-run     # print the sbatch command (or, inside an allocation,
#                                         # the exports and the srun command) and run nothing
#
# Why the exports: JAX's SLURM auto-detection assumes one process per GPU and otherwise shows
# each process only GPU number SLURM_LOCALID; JAX_LOCAL_DEVICE_IDS gives our one process per node
# all of them. The coordinator port is derived from the job id (as JAX does), so that two jobs
# sharing a node do not collide.
#
#SBATCH --job-name=seqgen
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --signal=TERM@120
#SBATCH --output=slurm-%j.out
# --signal=TERM@120: SIGTERM two minutes before the time limit; the loop saves a checkpoint and
# exits 0, and resubmitting the same command resumes from it.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/slurm_gpu.sh --nodes=N --gpus-per-node=G --config=PATH[:ARG] --workdir=DIR
                           [--partition=P] [--account=A] [--time=T] [--venv=DIR] [--dry-run]
                           [-- experiments.main flags]
  --workdir must be on a filesystem every node sees (or gs://...).
EOF
}

die() { echo "error: $*" >&2; exit 2; }

ARGS=()  # what the batch job gets: these arguments minus --dry-run
for arg in "$@"; do
  [[ "$arg" == --dry-run ]] || ARGS+=("$arg")
done
NODES="" GPUS="" CONFIG="" WORKDIR="" PARTITION="" ACCOUNT="" TIME="" VENV="" DRY_RUN=0
EXTRA=()
while (($#)); do
  case "$1" in
    --nodes=*) NODES="${1#*=}" ;;
    --gpus-per-node=*) GPUS="${1#*=}" ;;
    --config=*) CONFIG="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --partition=*) PARTITION="${1#*=}" ;;
    --account=*) ACCOUNT="${1#*=}" ;;
    --time=*) TIME="${1#*=}" ;;
    --venv=*) VENV="${1#*=}" ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option '$1' (see launch/slurm_gpu.sh --help)" ;;
  esac
  shift
done
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, got '$NODES'"
[[ "$GPUS" =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node must be a positive integer, got '$GPUS'"
[[ -n "$CONFIG" ]] || die "--config is required"
[[ -n "$WORKDIR" ]] || die "--workdir is required"

# One shell word, quoted only when needed (--flag='value' for flags).
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

x() {
  if ((DRY_RUN)); then show "$@"; else "$@"; fi
}

if [[ -z "${SLURM_JOB_ID:-}" ]]; then
  # ---------------------------------------------------------------- login node: submit this script
  REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  opts=(--nodes="$NODES" --ntasks-per-node=1 --gpus-per-node="$GPUS" --exclusive
        --signal=TERM@120 --job-name=seqgen --output="$REPO/slurm-%j.out" --chdir="$REPO")
  [[ -n "$PARTITION" ]] && opts+=(--partition="$PARTITION")
  [[ -n "$ACCOUNT" ]] && opts+=(--account="$ACCOUNT")
  [[ -n "$TIME" ]] && opts+=(--time="$TIME")
  x sbatch "${opts[@]}" "$REPO/launch/slurm_gpu.sh" "${ARGS[@]}"
  exit 0
fi

# -------------------------------------------------------------------- inside the allocation
# sbatch runs a copy of this script from its spool directory, with the repository (--chdir) as
# the working directory.
NUM_NODES="${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-$NODES}}"
((NUM_NODES == NODES)) || die "the allocation has $NUM_NODES nodes but --nodes=$NODES"
if [[ -n "$VENV" ]]; then
  if ((DRY_RUN)); then
    show source "$VENV/bin/activate"
  else
    # shellcheck disable=SC1091
    source "$VENV/bin/activate"
  fi
fi
distributed=off
if ((NODES > 1)); then
  # sed reads the whole list (head would close the pipe early: SIGPIPE under pipefail).
  head_node="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)"
  port="${JAX_COORDINATOR_PORT:-$((SLURM_JOB_ID % 4096 + 61440))}"
  export JAX_COORDINATOR_ADDRESS="$head_node:$port"
  export JAX_LOCAL_DEVICE_IDS
  JAX_LOCAL_DEVICE_IDS="$(seq -s, 0 $((GPUS - 1)))"
  if ((DRY_RUN)); then
    show export JAX_COORDINATOR_ADDRESS="$JAX_COORDINATOR_ADDRESS"
    show export JAX_LOCAL_DEVICE_IDS="$JAX_LOCAL_DEVICE_IDS"
  fi
  distributed=on
fi
x srun --nodes="$NODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \
  python -m experiments.main --config="$CONFIG" --workdir="$WORKDIR" \
  --distributed="$distributed" "${EXTRA[@]}"
