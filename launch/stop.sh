#!/usr/bin/env bash
# Stops training on every worker; re-running ./launch/train.sh resumes from the latest checkpoint.
#   ./launch/stop.sh            # stop the trainer processes on all workers, keep the slice
#   ./launch/stop.sh --delete   # delete the slice (ends the training too): the TPU VM, or with
#                               # QUEUED=1 the queued resource together with its TPU (--force)
set -euo pipefail
# shellcheck source=launch/env.sh
source "$(dirname "$0")/env.sh"

delete=0
for arg in "$@"; do
  case "$arg" in
    --delete) delete=1 ;;
    *) die "unknown argument '$arg': use ./launch/stop.sh [--delete]" ;;
  esac
done

if [[ "$delete" == 0 ]]; then
  tpu_ssh "if pkill -f $(q "$TRAIN_PATTERN"); then echo \"\$(hostname): stopped training\";
  else echo \"\$(hostname): no training process\"; fi"
elif [[ "$QUEUED" == 1 ]]; then
  run gcloud compute tpus queued-resources delete "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" \
    --force --quiet
else
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" --quiet
fi
