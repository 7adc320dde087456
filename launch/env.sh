# shellcheck shell=bash
# shellcheck disable=SC2034  # the settings below are used by the scripts that source this file
# Shared settings and helpers for the launch/ scripts (sourced by them; not meant to be run).
# Override any setting in the environment, e.g.
#   ACCELERATOR_TYPE=v5p-8 BUCKET=gs://my-bucket ./launch/create.sh
#   DRY_RUN=1 ./launch/train.sh --config.steps=10      # print the gcloud commands, run nothing
# A bad setting stops the script with one line naming the problem and the fix.

die() { echo "error: $*" >&2; exit 1; }
note() { echo "$*" >&2; }  # progress messages go to stderr: with DRY_RUN=1 stdout is only commands

# q ARG...: the arguments quoted for a POSIX shell (bash, sh, the remote shell behind ssh --command),
# space-separated. Plain words stay as they are; anything else is single-quoted (after the "=" of a
# --flag=value, for readability).
q() {
  local a out="" sep="" sq="'" flag
  for a in "$@"; do
    flag=""
    if [[ "$a" =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
      flag=${BASH_REMATCH[1]}
      a=${BASH_REMATCH[2]}
    fi
    if [[ ! "$a" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      a="'${a//$sq/$sq\\$sq$sq}'"
    fi
    out+="$sep$flag$a"
    sep=" "
  done
  printf '%s' "$out"
}

for _v in DRY_RUN SPOT QUEUED BEST_EFFORT; do
  [[ -n "${!_v:-}" ]] || printf -v "$_v" 0
  [[ "${!_v}" == 0 || "${!_v}" == 1 ]] || die "$_v=${!_v}: set $_v=1 or $_v=0"
done

# run CMD ARG...: runs the command; with DRY_RUN=1 prints it instead (shell-quoted, ready to paste).
# Every gcloud call that changes something goes through run. Read-only queries (does the TPU exist,
# the queued resource's state) are skipped with DRY_RUN=1: the dry run shows a fresh create.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%s\n' "$(q "$@")"
  else
    "$@"
  fi
}

LAUNCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$LAUNCH_DIR")

# TPU generation: from ACCELERATOR_TYPE, else from CONFIG (configs/tpu_<gen>.py), else v4-16.
# Per generation: the runtime (software) version Cloud TPU's "TPU software versions" page
# (cloud.google.com/tpu/docs/runtimes) lists for JAX -- v6e: v2-alpha-tpuv6e, v5p: v2-alpha-tpuv5,
# v5e: v2-alpha-tpuv5-lite, v4 and older: tpu-ubuntu2204-base -- and a zone where "TPU regions and
# zones" (cloud.google.com/tpu/docs/regions-zones) lists it: v4 only us-central2-b; v5e us-west4-a
# (also us-central1-a, us-south1-a, us-west1-c); v5p us-east5-a (also us-central1-a); v6e us-east5-b
# (also us-east5-a, us-east1-d, us-central1-b).
if [[ -z "${ACCELERATOR_TYPE:-}" ]]; then
  case "${CONFIG:-}" in
    *tpu_v5e.py) ACCELERATOR_TYPE=v5litepod-16 ;;   # 16 chips, 4 hosts (the slice configs/tpu_v5e.py is sized for)
    *tpu_v5p.py) ACCELERATOR_TYPE=v5p-8 ;;          # 4 chips, 1 host
    *tpu_v6e.py) ACCELERATOR_TYPE=v6e-8 ;;          # 8 chips, 1 host
    *) ACCELERATOR_TYPE=v4-16 ;;                    # topology 2x2x2: 8 chips, 2 hosts
  esac
fi
case "$ACCELERATOR_TYPE" in
  v4-*)        GEN=v4;  _zone=us-central2-b; _runtime=tpu-ubuntu2204-base ;;
  v5litepod-*) GEN=v5e; _zone=us-west4-a;    _runtime=v2-alpha-tpuv5-lite ;;
  v5p-*)       GEN=v5p; _zone=us-east5-a;    _runtime=v2-alpha-tpuv5 ;;
  v6e-*)       GEN=v6e; _zone=us-east5-b;    _runtime=v2-alpha-tpuv6e ;;
  v5e-*) die "ACCELERATOR_TYPE=$ACCELERATOR_TYPE: Cloud TPU names v5e slices v5litepod-N; set ACCELERATOR_TYPE=v5litepod-${ACCELERATOR_TYPE#v5e-}" ;;
  *) die "ACCELERATOR_TYPE=$ACCELERATOR_TYPE: unknown TPU generation; set ACCELERATOR_TYPE to v4-N, v5litepod-N (v5e), v5p-N or v6e-N" ;;
esac
: "${ZONE:=$_zone}"
: "${RUNTIME_VERSION:=$_runtime}"
: "${CONFIG:=configs/tpu_${GEN}.py}"    # passed to the trainer; a path inside this repository
if [[ "$CONFIG" =~ tpu_(v[0-9a-z]+)\.py$ && "${BASH_REMATCH[1]}" != "$GEN" ]]; then
  die "CONFIG=$CONFIG is for ${BASH_REMATCH[1]} but ACCELERATOR_TYPE=$ACCELERATOR_TYPE is a $GEN slice; set ACCELERATOR_TYPE or CONFIG to match"
fi
: "${TPU_NAME:=quietstar-${ACCELERATOR_TYPE}}"   # also the queued resource's name with QUEUED=1
: "${RUN_NAME:=quietstar-mistral7b-${GEN}}"

# Capacity: SPOT=1 spot (preemptible; re-running train.sh resumes from the workdir). QUEUED=1 requests
# the slice as a queued resource (create.sh waits until it is ACTIVE, up to QUEUED_TIMEOUT seconds,
# polling every POLL_SECONDS); with it BEST_EFFORT=1 (gcloud alpha --best-effort) and
# VALID_UNTIL_DURATION (e.g. 6h: the request expires if not filled by then).
: "${VALID_UNTIL_DURATION:=}"
: "${QUEUED_TIMEOUT:=7200}"
: "${POLL_SECONDS:=30}"
[[ "$SPOT" == 1 && "$BEST_EFFORT" == 1 ]] && die "SPOT=1 and BEST_EFFORT=1 exclude each other; set only one"
[[ "$QUEUED" == 0 && "$BEST_EFFORT" == 1 ]] && die "BEST_EFFORT=1 needs a queued resource; set QUEUED=1 too"
[[ "$QUEUED" == 0 && -n "$VALID_UNTIL_DURATION" ]] && die "VALID_UNTIL_DURATION applies to queued resources; set QUEUED=1 too"
[[ "$QUEUED_TIMEOUT" =~ ^[0-9]+$ ]] || die "QUEUED_TIMEOUT=$QUEUED_TIMEOUT: set it to a number of seconds"
[[ "$POLL_SECONDS" =~ ^[0-9]+$ ]] || die "POLL_SECONDS=$POLL_SECONDS: set it to a number of seconds"

if [[ -z "${PROJECT:-}" ]]; then  # the one gcloud call also made with DRY_RUN=1 (reads local config)
  command -v gcloud >/dev/null || die "gcloud not found: install the Google Cloud CLI, or set PROJECT=my-project for DRY_RUN=1"
  PROJECT=$(gcloud config get-value project 2>/dev/null) || true
  [[ -n "$PROJECT" ]] || die "no Google Cloud project: set PROJECT=my-project (or run: gcloud config set project my-project)"
fi

# Where every worker keeps its own copy of the code, venv, model and data (local disk). REMOTE_DIR and
# VENV are expanded by the worker's shell ($HOME there); the other paths are passed as they are.
: "${REMOTE_DIR:=\$HOME/quietstar_jax}"
: "${VENV:=\$HOME/venv}"
: "${MODEL_DIR:=/mnt/disks/models/Mistral-7B-v0.1}"
: "${DATA_DIR:=/mnt/disks/data/open-web-math}"
# Model source: an HF hub repo (Mistral-7B-v0.1 is gated: accept its terms, export HF_TOKEN) or a
# gs:// copy of the HF folder (config.json + *.safetensors + tokenizer files).
: "${MODEL_SRC:=mistralai/Mistral-7B-v0.1}"
: "${DATA_SRC:=open-web-math/open-web-math}"  # HF dataset (parquet) or gs:// folder of parquet files
: "${DATA_INCLUDE:=data/train-00000-*}"       # first shard: enough for the reference's train[:1000]

JAX_VERSION=0.10.2                            # setup.py's pin; jax[tpu] pins the matching libtpu

# The trainer's run directory (checkpoints, HF export): WORKDIR, default $BUCKET/runs/$RUN_NAME.
require_workdir() {
  if [[ -z "${WORKDIR:-}" ]]; then
    [[ -n "${BUCKET:-}" ]] || die "BUCKET is not set: export BUCKET=gs://your-bucket (holds the run directory and checkpoints) or set WORKDIR"
    [[ "$BUCKET" == gs://* ]] || die "BUCKET=$BUCKET is not a gs:// URL: export BUCKET=gs://your-bucket"
    WORKDIR="${BUCKET%/}/runs/${RUN_NAME}"
  fi
}

tpu_ssh() {  # tpu_ssh "<command run by the shell of every worker>"
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" --worker=all \
    --command="$1"
}

# Read-only queries (skipped with DRY_RUN=1). Print the state, or nothing with status 1 if absent.
tpu_state() {
  gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" \
    --format="value(state)" 2>/dev/null
}
queued_state() {
  gcloud compute tpus queued-resources describe "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" \
    --format="value(state.state)" 2>/dev/null
}

# The trainer's processes on a worker: "<venv>/bin/python -m quietstar_jax.train ...". Anchored so
# that pgrep/pkill -f do not match the remote shell whose own command line mentions the module.
TRAIN_PATTERN='^[^ ]*python[0-9.]* -m quietstar_jax[.]train'
