"""Hugging Face interop: config.json + safetensors folders (PyTorch layout) <-> our param trees."""

from quietstar_jax.hf.io import load_hf_folder, read_hf_config, save_hf_folder
from quietstar_jax.hf.mapping import CheckpointMismatchError

__all__ = ["load_hf_folder", "read_hf_config", "save_hf_folder", "CheckpointMismatchError"]
