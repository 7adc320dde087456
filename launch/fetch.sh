#!/usr/bin/env bash
# Puts the HF model folder and the OpenWebMath shard(s) on every worker's local disk
# (MODEL_DIR, DATA_DIR). Sources: HF hub repos (needs HF_TOKEN for the gated Mistral repo) or gs://.
set -euo pipefail
source "$(dirname "$0")/env.sh"

if [[ "$MODEL_SRC" == gs://* ]]; then
  get_model="gcloud storage cp -r '$MODEL_SRC/*' $MODEL_DIR/"
else
  get_model="$VENV/bin/hf download $MODEL_SRC --local-dir $MODEL_DIR \
    --include '*.json' --include '*.safetensors' --include 'tokenizer.model'"
fi
if [[ "$DATA_SRC" == gs://* ]]; then
  get_data="gcloud storage cp -r '$DATA_SRC/*' $DATA_DIR/"
else
  get_data="$VENV/bin/hf download $DATA_SRC --repo-type dataset --local-dir $DATA_DIR --include '$DATA_INCLUDE'"
fi

tpu_ssh "set -e
  sudo mkdir -p $MODEL_DIR $DATA_DIR && sudo chown -R \$USER $MODEL_DIR $DATA_DIR
  export HF_TOKEN='${HF_TOKEN:-}'
  $get_model
  $get_data
  ls -la $MODEL_DIR | head; du -sh $MODEL_DIR $DATA_DIR"
