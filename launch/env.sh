# Shared settings for the launch/ scripts. Override any of them in the environment, e.g.
#   TPU_NAME=my-v4 ZONE=us-central2-b BUCKET=gs://my-bucket ./launch/create.sh
# Sourced by the other scripts; not meant to be run.

: "${PROJECT:=$(gcloud config get-value project 2>/dev/null)}"
: "${ZONE:=us-central2-b}"                  # v4 slices live in us-central2-b
: "${TPU_NAME:=quietstar-v4-16}"
: "${ACCELERATOR_TYPE:=v4-16}"              # = topology 2x2x2: 8 chips, 2 hosts (configs/tpu_v4.py)
: "${RUNTIME_VERSION:=tpu-ubuntu2204-base}"
: "${SPOT:=0}"                              # 1: --spot (preemptible; the trainer resumes from the workdir)

: "${BUCKET:?set BUCKET=gs://your-bucket (run directory / checkpoints)}"
: "${RUN_NAME:=quietstar-mistral7b-v4}"
: "${WORKDIR:=${BUCKET}/runs/${RUN_NAME}}"

# Where every worker keeps its own copy of the code, venv, model and data (local disk).
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

tpu_ssh() {  # tpu_ssh "<command run on every worker>"
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" --worker=all \
    --command="$1"
}
