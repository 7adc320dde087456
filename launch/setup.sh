#!/usr/bin/env bash
# Copies this repository (tracked + untracked-but-not-ignored files) to every worker and installs it
# into a Python 3.11 venv with jax[tpu]. Re-run after code changes (the venv is reused).
set -euo pipefail
# shellcheck source=launch/env.sh
source "$(dirname "$0")/env.sh"
git -C "$REPO_ROOT" rev-parse --git-dir >/dev/null 2>&1 ||
  die "$REPO_ROOT is not a git checkout: setup.sh packs the files git tracks; run it from a clone of the repository"
cd "$REPO_ROOT"

pack="git ls-files -z --cached --others --exclude-standard | tar --null -T - -czf"
if [[ "$DRY_RUN" == 1 ]]; then
  tarball="${TMPDIR:-/tmp}/quietstar_jax.tar.gz"
  printf '%s\n' "cd $(q "$REPO_ROOT") && $pack $(q "$tarball")"
else
  tarball=$(mktemp "${TMPDIR:-/tmp}/quietstar_jax.XXXXXX")
  trap 'rm -f "$tarball"' EXIT
  git ls-files -z --cached --others --exclude-standard | tar --null -T - -czf "$tarball"
fi
run gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME":/tmp/quietstar_jax.tar.gz \
  --zone="$ZONE" --project="$PROJECT" --worker=all
run rm -f "$tarball"

# tpu-ubuntu2204-base ships Python 3.10; jax 0.10 needs >= 3.11: uv provides it (on any runtime image).
tpu_ssh "set -e
  mkdir -p \"$REMOTE_DIR\" && tar -xzf /tmp/quietstar_jax.tar.gz -C \"$REMOTE_DIR\"
  command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh
  export PATH=\"\$HOME/.local/bin:\$PATH\"
  [ -x \"$VENV/bin/python\" ] || uv venv --python 3.11 \"$VENV\"
  uv pip install --python \"$VENV/bin/python\" 'jax[tpu]==$JAX_VERSION' -e \"$REMOTE_DIR\" pyarrow 'huggingface_hub[cli]'
  \"$VENV/bin/python\" -c 'import jax; jax.distributed.initialize(); print(jax.process_index(), jax.process_count(), jax.device_count())'"
