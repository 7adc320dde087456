"""quietstar_jax: TPU-native JAX/Flax implementation of Quiet-STaR (arXiv 2403.09629)."""

from setuptools import find_packages, setup

# Versions pinned to a set known to install together (see README, "Versions").
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "chex==0.1.92",
    "ml-collections==1.1.0",
    "numpy==2.3.5",
    "safetensors==0.8.0",
    "transformers==5.23.0",
    "tokenizers==0.23.3",
    "tensorflow-datasets==4.9.10",
    # tfds imports it (DatasetBuilder.code_path, through etils' lazy imports) without declaring it.
    "importlib_resources",
    "grain==0.2.18",
    "array-record==0.8.6",
    "mistral-common==1.13.1",
    "tensorboardX",
    "absl-py",
]

EXTRAS = {
    # torch is an exact pin: 2.13.0 is a local CPU wheel here; anything else pulls GBs of CUDA.
    # gguf + accelerate + torch let transformers materialise SmolLM2 from its GGUF file; tensorboard
    # reads the runs' event files (`tensorboard --logdir WORKDIR/tensorboard`).
    "hf": ["torch==2.13.0", "accelerate==1.15.0", "gguf==0.19.0", "tensorboard==2.20.0"],
    # libtpu in the test extra so the AOT-compile-for-TPU tests run on CPU-only CI (137 MB wheel, ~6 s);
    # sentencepiece reads Mistral-7B's tokenizer.model (mistral-common wheel) for the eval tokenizer tests.
    "test": ["torch==2.13.0", "accelerate==1.15.0", "gguf==0.19.0", "pytest", "libtpu==0.0.52",
             "sentencepiece==0.2.3"],
    # On a TPU VM install jax[tpu]==0.10.2 (launch/setup.sh); this pin is the libtpu matching jax 0.10.2,
    # also what `python -m quietstar_jax.compile` needs on a CPU host.
    "tpu": ["libtpu==0.0.52"],
}

setup(
    name="quietstar_jax",
    version="0.1.0",
    description="Quiet-STaR (language models that think before speaking) in JAX for Cloud TPU.",
    packages=find_packages(include=["quietstar_jax", "quietstar_jax.*"]),
    package_data={"quietstar_jax.inference": ["page/*"]},  # the thoughts page's template, CSS and JS
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
