#!/usr/bin/env bash
# Creates the TPU slice: default v4-16 (8 chips, 2 hosts); ACCELERATOR_TYPE picks the generation,
# zone and runtime (launch/env.sh). With QUEUED=1 it requests the slice as a queued resource and
# waits until it is ACTIVE (re-run to keep waiting). A slice or request of that name that already
# exists is reused, not created again. Delete it when done: ./launch/stop.sh --delete
set -euo pipefail
# shellcheck source=launch/env.sh
source "$(dirname "$0")/env.sh"

where=(--zone="$ZONE" --project="$PROJECT")

if [[ "$QUEUED" == 0 ]]; then
  if [[ "$DRY_RUN" == 0 ]] && state=$(tpu_state); then
    case "$state" in
      PREEMPTED | TERMINATED)
        die "TPU $TPU_NAME in $ZONE exists but is $state: delete it with ./launch/stop.sh --delete, then re-run ./launch/create.sh" ;;
    esac
    note "TPU $TPU_NAME already exists in $ZONE (state $state): not creating it again"
  else
    extra=()
    [[ "$SPOT" == 1 ]] && extra+=(--spot)
    run gcloud compute tpus tpu-vm create "$TPU_NAME" "${where[@]}" \
      --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" ${extra[@]+"${extra[@]}"}
  fi
else
  if [[ "$DRY_RUN" == 0 ]] && state=$(queued_state); then
    note "queued resource $TPU_NAME already exists in $ZONE (state $state): not requesting it again"
  else
    gcloud_cmd=(gcloud)
    extra=()
    [[ "$SPOT" == 1 ]] && extra+=(--spot)
    # --best-effort is only in the alpha command group (gcloud alpha compute tpus queued-resources create).
    [[ "$BEST_EFFORT" == 1 ]] && gcloud_cmd+=(alpha) && extra+=(--best-effort)
    [[ -n "$VALID_UNTIL_DURATION" ]] && extra+=(--valid-until-duration="$VALID_UNTIL_DURATION")
    run "${gcloud_cmd[@]}" compute tpus queued-resources create "$TPU_NAME" --node-id="$TPU_NAME" \
      "${where[@]}" --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION" \
      ${extra[@]+"${extra[@]}"}
  fi
  if [[ "$DRY_RUN" == 0 ]]; then  # wait: WAITING_FOR_RESOURCES -> PROVISIONING -> ACTIVE
    start=$SECONDS
    while :; do
      state=$(queued_state) || die "queued resource $TPU_NAME not found in $ZONE: check ZONE and PROJECT, then re-run ./launch/create.sh"
      note "queued resource $TPU_NAME: $state ($((SECONDS - start)) s)"
      case "$state" in
        ACTIVE) break ;;
        FAILED | SUSPENDING | SUSPENDED)
          die "queued resource $TPU_NAME is $state (details: gcloud compute tpus queued-resources describe $TPU_NAME --zone=$ZONE): delete it with QUEUED=1 ./launch/stop.sh --delete, then re-run" ;;
      esac
      ((SECONDS - start < QUEUED_TIMEOUT)) ||
        die "queued resource $TPU_NAME is still $state after ${QUEUED_TIMEOUT} s: the request stays queued; re-run QUEUED=1 ./launch/create.sh to keep waiting (QUEUED_TIMEOUT=seconds) or drop it with QUEUED=1 ./launch/stop.sh --delete"
      sleep "$POLL_SECONDS"
    done
  else
    note "(DRY_RUN: would poll gcloud compute tpus queued-resources describe $TPU_NAME until ACTIVE)"
  fi
fi
run gcloud compute tpus tpu-vm describe "$TPU_NAME" "${where[@]}" \
  --format="value(state,acceleratorType,networkEndpoints[].ipAddress)"
