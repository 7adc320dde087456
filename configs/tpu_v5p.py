"""Mistral-7B, full-parameter Quiet-STaR at the paper's settings, on a Cloud TPU v5p-8.

Everything as configs/tpu_v4.py (model, N/M/P, L, batch 8, AdamW, data, remat) except the slice and the
sampler's weight copy: v5p-8 = topology 2x2x1 = 4 v5p chips on one host (megacore: one JAX device per
chip, 95.73 GiB usable HBM each). The smallest v5p slice: 109 GiB of float32 params + AdamW moments +
gradients do not fit one chip. fsdp=4, two examples (4 rows) per chip. With that much HBM the sampler
keeps a full bf16 weight copy on every chip (model.decode_shards=1): its 10 decode passes then move no
weights and no activations. One host: no jax.distributed.

The README's "TPU generations" table compares the generations.

Measured (python -m quietstar_jax.compile --config=configs/tpu_v5p.py; libtpu 0.0.52, jax 0.10.2; 2-core
CPU host, 2.2 GB RSS):
    v5p:2x2x1, 4 chips / 1 host, mesh data=1 fsdp=4 tensor=1, decode_shards=1, 7.29B params
    per chip: arguments 20.38 GiB + temporaries 20.74 GiB + code 0.08 GiB = 41.20 GiB of 95.73 GiB
              usable (43.0%; 54.53 GiB headroom)
    FLOPs per step: 3.22 PFLOP model (805 TFLOP per chip), 3.86 PFLOP executed with full remat
    est. step time: 4.38 s at 40% MFU (459 TFLOP/s bf16 per chip), >= 2.10 s at 100%
    roofline: 2.10 s, compute-bound (HBM 0.62 s, ICI 0.24 s)
    communication per chip per step (GiB unless marked; no optimizer-phase collectives):
                        sampling    forward   backward  unattrib.      total
    all-gather             10.12       9.75      11.62  72.04 MiB      31.56
    reduce-scatter             -          -      12.17          -      12.17
    all-reduce              54 B  72.19 KiB   0.79 MiB       84 B   0.86 MiB
    all-to-all                 -  90.00 MiB       0.18          -       0.26
    collective-permute         -          -  72.00 MiB   7.50 MiB  79.50 MiB
    total                  10.12       9.84      24.04  79.54 MiB      44.07
    (sampling: the full bf16 copy, 3/4 of 13.5 GiB received per chip once per step; no per-pass traffic)
    compile: 1.6 min wall (94 s in the TPU compiler)
"""

import pathlib

from quietstar_jax.training.config import config_from_file


def _v4_config():
    # The paper settings live in one place: configs/tpu_v4.py.
    return config_from_file(str(pathlib.Path(__file__).with_name("tpu_v4.py")))


def get_config():
    c = _v4_config()
    c.run_name = "quietstar-mistral7b-v5p"
    c.tpu_topology = "v5p:2x2x1"  # = accelerator type v5p-8
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 4, 1
    c.model.decode_shards = 1  # a full 13.5 GiB bf16 weight copy per chip while sampling
    c.distributed = "auto"  # one host
    return c
