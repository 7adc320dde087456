"""Training system: state, step, loop, checkpointing, metrics."""
