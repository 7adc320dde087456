"""Mistral-7B, full-parameter Quiet-STaR at the paper's settings, on a Cloud TPU v6e-8 (Trillium).

Everything as configs/tpu_v4.py (model, N/M/P, L, batch 8, AdamW, data, remat, decode layout) except the
slice: v6e-8 = topology 2x4 = 8 v6e chips on one host (one TensorCore and 32 GiB HBM per chip, 31.24 GiB
usable). A v6e chip has about the HBM of a v4 chip, so the same fully sharded layout over 8 chips fits.
The 4-chip v6e-4 does not: its train state alone (params + AdamW moments) is 20.38 GiB per chip, and
`--topology=v6e:2x2 --config.mesh.fsdp=4` stops with the TPU compiler's "total memory required for HLO
temporaries (38.66G) exceeds available HBM (31.24G)" (39.03G with --config.model.decode_shards=0).
One host: no jax.distributed. The README's "TPU generations" table compares the generations.

Measured (python -m quietstar_jax.compile --config=configs/tpu_v6e.py; libtpu 0.0.52, jax 0.10.2; 2-core
CPU host, 2.7 GB RSS):
    v6e:2x4, 8 chips / 1 host, mesh data=1 fsdp=8 tensor=1, decode_shards=2, 7.29B params
    per chip: arguments 10.19 GiB + temporaries 10.71 GiB + code 0.10 GiB = 20.99 GiB of 31.24 GiB
              usable (67.2%; 10.25 GiB headroom)
    FLOPs per step: 3.22 PFLOP model (403 TFLOP per chip), 3.86 PFLOP executed with full remat
    est. step time: 1.10 s at 40% MFU (918 TFLOP/s bf16 per chip), >= 0.52 s at 100%
    roofline: 1.25 s, HBM-bound (1912 GiB per chip at 1638 GB/s; compute 0.52 s, ICI 0.38 s)
    communication per chip per step (GiB unless marked; no optimizer-phase collectives):
                        sampling    forward   backward  unattrib.      total
    all-gather              7.80   0.41 MiB       6.12  84.04 MiB      14.01
    reduce-scatter          5.00          -       2.73          -       7.73
    all-reduce              63 B   0.21 KiB   1.00 MiB       98 B   1.00 MiB
    all-to-all              0.81  52.50 MiB       0.10          -       0.97
    collective-permute         -      14.62      24.19          -      38.81
    total                  13.62      14.68      33.14  84.04 MiB      61.52
    compile: 3.4 min wall (200 s in the TPU compiler)
"""

import pathlib

from quietstar_jax.training.config import config_from_file


def _v4_config():
    # The paper settings live in one place: configs/tpu_v4.py.
    return config_from_file(str(pathlib.Path(__file__).with_name("tpu_v4.py")))


def get_config():
    c = _v4_config()
    c.run_name = "quietstar-mistral7b-v6e"
    c.tpu_topology = "v6e:2x4"  # = accelerator type v6e-8
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 8, 1
    c.model.decode_shards = 2  # as on v4: a 6.75 GiB bf16 weight copy per chip for the sampler
    c.distributed = "auto"  # one host
    return c
