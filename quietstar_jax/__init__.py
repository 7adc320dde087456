"""quietstar_jax: Quiet-STaR (Zelikman et al. 2024) in JAX, for Cloud TPU."""

__version__ = "0.1.0"
