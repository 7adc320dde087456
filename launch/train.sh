#!/usr/bin/env bash
# Starts training on every worker (all hosts run the same command; jax.distributed joins them).
# Extra arguments are passed through, e.g.  ./launch/train.sh --config.steps=10
# Logs: ~/train.log on each worker (launch/README.md shows how to follow them). Re-running the same
# command resumes from the latest checkpoint in WORKDIR.
set -euo pipefail
source "$(dirname "$0")/env.sh"

args="--config=configs/tpu_v4.py --workdir=$WORKDIR --config.model.path=$MODEL_DIR \
  --config.data.path=$DATA_DIR --config.run_name=$RUN_NAME $*"
tpu_ssh "cd $REMOTE_DIR && setsid nohup $VENV/bin/python -m quietstar_jax.train $args \
  > \$HOME/train.log 2>&1 < /dev/null &
  sleep 2; echo \"\$(hostname): started (pid \$!), log ~/train.log\""
