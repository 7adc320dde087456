#!/usr/bin/env bash
# Starts training on every worker (all hosts run the same command; jax.distributed joins them).
# Extra arguments are passed through unchanged, e.g.  ./launch/train.sh --config.steps=10
# Logs: ~/train.log on each worker (launch/README.md shows how to follow them). Re-running the same
# command resumes from the latest checkpoint in WORKDIR. Stop it with ./launch/stop.sh.
set -euo pipefail
# shellcheck source=launch/env.sh
source "$(dirname "$0")/env.sh"
require_workdir
[[ -f "$REPO_ROOT/$CONFIG" ]] ||
  die "CONFIG=$CONFIG: no such file in the repository; set CONFIG=configs/<name>.py (then ./launch/setup.sh copies it to the workers)"

# Every argument is quoted for the worker's shell, so it reaches the trainer exactly as given here.
args=$(q --config="$CONFIG" --workdir="$WORKDIR" --config.model.path="$MODEL_DIR" \
  --config.data.path="$DATA_DIR" --config.run_name="$RUN_NAME" "$@")
tpu_ssh "cd \"$REMOTE_DIR\" || exit 1
  if pgrep -f $(q "$TRAIN_PATTERN") >/dev/null; then
    echo \"\$(hostname): training is already running; stop it first: ./launch/stop.sh\" >&2; exit 1
  fi
  setsid nohup \"$VENV/bin/python\" -m quietstar_jax.train $args > \"\$HOME/train.log\" 2>&1 < /dev/null &
  sleep 2; echo \"\$(hostname): started (pid \$!), log ~/train.log\""
