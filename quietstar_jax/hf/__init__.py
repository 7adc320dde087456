"""Hugging Face interop: config.json + safetensors folders (PyTorch layout) <-> our param trees."""

from quietstar_jax.hf.io import load_hf_folder, read_hf_config, save_hf_folder
from quietstar_jax.hf.mapping import CheckpointMismatchError
from quietstar_jax.hf.quietstar_export import load_quietstar_hf, save_quietstar_hf

__all__ = ["load_hf_folder", "read_hf_config", "save_hf_folder", "CheckpointMismatchError", "load_quietstar_hf",
           "save_quietstar_hf"]
