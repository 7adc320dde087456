#!/usr/bin/env bash
# Puts the HF model folder and the OpenWebMath shard(s) on every worker's local disk
# (MODEL_DIR, DATA_DIR). Sources: HF hub repos (needs HF_TOKEN for the gated Mistral repo) or gs://.
set -euo pipefail
# shellcheck source=launch/env.sh
source "$(dirname "$0")/env.sh"

model_dir=$(q "$MODEL_DIR")
data_dir=$(q "$DATA_DIR")
hf="\"$VENV/bin/hf\""
if [[ "$MODEL_SRC" == gs://* ]]; then
  get_model="gcloud storage cp -r $(q "${MODEL_SRC%/}/*") $model_dir/"
else
  get_model="$hf download $(q "$MODEL_SRC") --local-dir $model_dir \
    --include '*.json' --include '*.safetensors' --include tokenizer.model"
fi
if [[ "$DATA_SRC" == gs://* ]]; then
  get_data="gcloud storage cp -r $(q "${DATA_SRC%/}/*") $data_dir/"
else
  get_data="$hf download $(q "$DATA_SRC") --repo-type dataset --local-dir $data_dir --include $(q "$DATA_INCLUDE")"
fi
token=${HF_TOKEN:-}
if [[ "$DRY_RUN" == 1 && -n "$token" ]]; then
  token='<HF_TOKEN>'  # the dry run does not print the secret
fi
if [[ -z "$token" && "$MODEL_SRC" != gs://* ]]; then
  note "warning: HF_TOKEN is not set; gated repos such as mistralai/Mistral-7B-v0.1 need it (export HF_TOKEN=hf_...)"
fi

tpu_ssh "set -e
  sudo mkdir -p $model_dir $data_dir && sudo chown -R \"\$USER\" $model_dir $data_dir
  export HF_TOKEN=$(q "$token")
  $get_model
  $get_data
  ls -la $model_dir | head; du -sh $model_dir $data_dir"
