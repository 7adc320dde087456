#!/usr/bin/env bash
# Creates the TPU VM slice (default v4-16: 8 chips, 2 hosts). Delete it when done:
#   gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE"
set -euo pipefail
source "$(dirname "$0")/env.sh"

extra=()
[[ "$SPOT" == 1 ]] && extra+=(--spot)
gcloud compute tpus tpu-vm create "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" \
  --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${extra[@]}"
gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" \
  --format="value(state,acceleratorType,networkEndpoints[].ipAddress)"
