"""Mistral-7B, full-parameter Quiet-STaR at the paper's settings, on a Cloud TPU v5e slice of 16 chips.

Everything as configs/tpu_v4.py (model, N/M/P, L, batch 8, AdamW, data, remat) except the slice and the
layout. v5litepod-16 = topology 4x4 = 16 v5e chips (one TensorCore, 16 GiB HBM, 15.75 GiB usable each),
4 hosts of 4 chips.

Why 16 chips: the float32 params + AdamW moments alone are 81.5 GiB, 10.19 GiB per chip on 8 chips, and
with the float32 gradients and one example's activations a v5litepod-8 does not fit:
`--topology=v5litepod-8 --config.mesh.tensor=1` stops with the TPU compiler's "total memory required for
HLO temporaries (20.19G) exceeds available HBM (15.75G)" (19.48G with --config.model.decode_shards=0).
Offloading the AdamW moments (7.29B x 8 bytes = 58 GB) to host memory would make 8 chips fit, but not
make the run cheaper: the step time is set by per-chip work (HBM traffic, then FLOPs, below), and
half the chips each do about twice the work (the FLOPs exactly), so 8 chips would need about the same
chip-hours as 16, plus the moments' host transfers every step. So the cheapest v5e slice for the paper's settings is the 16-chip one,
without offload (which this project therefore does not implement).

Layout: the paper's 8 examples per step cannot be split over 16 chips of fully sharded data parallel
(one example per fsdp rank at most), so the 16 chips are fsdp=8 x tensor=2: each pair of chips shares an
example and splits the heads, MLP columns and vocabulary (Megatron-style), params and moments are split
16 ways. The sampler's bf16 weight copy is split over tensor x fsdp pairs (decode_shards=2: 4 ways,
3.4 GiB per chip).

With a tensor axis the sampler's residual rows are split over tensor too, in the order of the heads'
(tensor, fsdp_inner) split, so its row-parallel sums are float32 reduce-scatters over each group of 4
(quietstar_jax.sharding.layout.DecodeLayout.residual). The README's "TPU generations" table compares
the generations.

Measured (python -m quietstar_jax.compile --config=configs/tpu_v5e.py; libtpu 0.0.52, jax 0.10.2; 2-core
CPU host, 2.2 GB RSS):
    v5e:4x4, 16 chips / 4 hosts, mesh data=1 fsdp=8 tensor=2, decode_shards=2, 7.29B params
    per chip: arguments 5.13 GiB + temporaries 8.60 GiB + code 0.10 GiB = 13.82 GiB of 15.75 GiB
              usable (87.8%; 1.93 GiB headroom)
    FLOPs per step: 3.22 PFLOP model (201 TFLOP per chip), 3.86 PFLOP executed with full remat
    est. step time: 2.55 s at 40% MFU (197 TFLOP/s bf16 per chip), >= 1.22 s at 100%
    roofline: 1.48 s, HBM-bound (1130 GiB per chip at 819 GB/s; compute 1.22 s, ICI 1.02 s)
    communication per chip per step (GiB unless marked):
                        sampling    forward   backward  optimizer  unattrib.      total
    all-gather              8.25      21.44      18.05          -  84.04 MiB      47.82
    reduce-scatter          7.53          -       1.26          -          -       8.80
    all-reduce              63 B       3.87       5.70       60 B      102 B       9.56
    all-to-all              0.41  52.50 MiB       0.10          -          -       0.56
    collective-permute 45.52 MiB       4.90      10.96          -  33.00 KiB      15.91
    total                  16.24      30.26      36.07       60 B  84.07 MiB      82.65
    (the tensor=2 Megatron split of the training pass costs all-gathers and all-reduces v4's
    fsdp-only layout does not have: 66 GiB forward + backward vs 50 on v4)
    compile: 2.1 min wall (121 s in the TPU compiler)
"""

import pathlib

from quietstar_jax.training.config import config_from_file


def _v4_config():
    # The paper settings live in one place: configs/tpu_v4.py.
    return config_from_file(str(pathlib.Path(__file__).with_name("tpu_v4.py")))


def get_config():
    c = _v4_config()
    c.run_name = "quietstar-mistral7b-v5e"
    c.tpu_topology = "v5e:4x4"  # = accelerator type v5litepod-16
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 8, 2
    c.model.decode_shards = 2
    c.distributed = "on"  # 4 hosts
    return c
