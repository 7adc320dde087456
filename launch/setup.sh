#!/usr/bin/env bash
# Copies this repository (tracked + untracked-but-not-ignored files) to every worker and installs it
# into a Python 3.11 venv with jax[tpu]. Re-run after code changes (the venv is reused).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"

tarball=$(mktemp /tmp/quietstar_jax.XXXXXX.tar.gz)
git ls-files -z --cached --others --exclude-standard | tar --null -T - -czf "$tarball"
gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME":/tmp/quietstar_jax.tar.gz \
  --zone="$ZONE" --project="$PROJECT" --worker=all
rm -f "$tarball"

# Ubuntu 22.04 ships Python 3.10; jax 0.10 needs >= 3.11: uv provides it.
tpu_ssh "set -e
  mkdir -p $REMOTE_DIR && tar -xzf /tmp/quietstar_jax.tar.gz -C $REMOTE_DIR
  command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh
  export PATH=\$HOME/.local/bin:\$PATH
  [ -x $VENV/bin/python ] || uv venv --python 3.11 $VENV
  uv pip install --python $VENV/bin/python 'jax[tpu]==$JAX_VERSION' -e '$REMOTE_DIR' pyarrow 'huggingface_hub[cli]'
  $VENV/bin/python -c 'import jax; jax.distributed.initialize(); print(jax.process_index(), jax.process_count(), jax.device_count())'"
