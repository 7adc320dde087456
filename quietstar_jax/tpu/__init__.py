"""Cloud TPU without a TPU: slices described by libtpu's compile-only client, AOT compiles of the real
programs, and what the compiled HLO says about memory, FLOPs, communication and step time (the
per-generation hardware facts are in quietstar_jax.hardware).

  topology   topology names -> compile-only devices; usable HBM
  aot        compile the train step for a slice -> report dict
  hlo        HLO text parsing (computations, instructions, loop trip counts)
  hlo_stats  collective and HBM bytes per chip per step by kind and phase
  roofline   step time = max(compute, HBM, ICI)
  report     the report as text
"""
