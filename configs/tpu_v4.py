"""Mistral-7B, full-parameter Quiet-STaR at the paper's settings, on a Cloud TPU v4-16 slice.

Slice: v4-16 = topology 2x2x2 = 8 v4 chips (megacore: one JAX device per chip, 32 GiB HBM each,
30.75 GiB usable), 2 hosts x 4 chips. The smallest v4 slice for 7.29B fp32 params + fp32 AdamW moments
+ fp32 gradients (16 bytes per param: 109 GiB before activations); on a v4-8 (4 x 30.75 GiB) that
leaves ~3.6 GiB per chip for the step's activations, and it does not fit.

Paper settings: N=12 thought slots (n_ahead), M=4 talk tokens (n_ahead_talk), P=2 thoughts per position
(n_passes), L=256, 8 examples per optimizer step, AdamW lr 1e-6 wd 1e-3 warmup 20 clip 1.0, 100 steps,
OpenWebMath train[:1000] in random 256-token crops. bf16 compute with fp32 master weights (the reference
trains in pure bf16, where most lr-1e-6 updates round away).

Layout: fully sharded data parallel over the 8 chips (mesh data=1, fsdp=8, tensor=1): params, grads and
AdamW moments are split 8 ways, each chip holds one example (x P=2 thought copies = 2 rows of 15 streams
of 256 tokens). grad_accum_steps=1 (the reference's 4 per device x 2 accumulation = 8 is the same
optimizer batch; with fsdp=8 a micro-batch must hold >= 8 examples). Full remat per layer.

Check that it fits (AOT compile for the slice on any host, no TPU needed):

    python -m quietstar_jax.compile --config=configs/tpu_v4.py        # topology from tpu_topology

Launch: launch/README.md (create the slice, install, put the model and data on every worker's disk,
then launch/train.sh runs on all workers, via gcloud compute tpus tpu-vm ssh --worker=all):

    python -m quietstar_jax.train --config=configs/tpu_v4.py --workdir=gs://BUCKET/runs/RUN \
        --config.model.path=/mnt/disks/models/Mistral-7B-v0.1 --config.data.path=/mnt/disks/data/open-web-math

Measured (python -m quietstar_jax.compile --config=configs/tpu_v4.py; libtpu 0.0.52, jax 0.10.2; 2-core
CPU host, 4.3 GB RSS, 2.3 min wall):
    v4:2x2x2, 8 chips / 2 hosts, mesh data=1 fsdp=8 tensor=1, 7.29B params (incl. mixing head)
    per chip: arguments 10.19 GiB (params + AdamW moments, fp32) + temporaries 11.11 GiB
              + code 0.11 GiB = 21.41 GiB of 30.75 GiB usable (69.6%; 9.34 GiB headroom)
    FLOPs per step: 3.22 PFLOP model (403 TFLOP per chip), 3.86 PFLOP executed with full remat
    est. step time: 3.7 s at 40% MFU (275 TFLOP/s bf16 per chip), >= 1.75 s at 100%: 100 steps ~6 min
    roofline: 1.75 s, compute-bound (HBM 1.56 s, ICI 0.60 s)

Communication per chip per step (the report's table; GiB unless marked; no optimizer-phase collectives).
The sampler's 10 passes (base + 9 thought tokens) used to all-gather every layer's fsdp-sharded weights
again in each pass; with model.decode_shards=2 they share one bf16 weight copy split over pairs of chips,
made once per step, and move activations (quietstar_jax.sharding.layout). Same thoughts, 2.6x fewer bytes:

    before: --config.model.decode_shards=0 (= commit 9265e2e)
                        sampling    forward   backward  unattrib.      total
    all-gather            115.89   0.41 MiB       6.12  84.04 MiB     122.09
    reduce-scatter             -          -          -          -          -
    all-reduce              63 B   0.21 KiB       4.60       98 B       4.60
    all-to-all         35.00 MiB  52.50 MiB       0.10          -       0.19
    collective-permute         -      14.62      24.74          -      39.36
    total                 115.92      14.68      35.57  84.04 MiB     166.25
    per chip 19.67 GiB (10.19 + temporaries 9.37 + 0.11); roofline 1.75 s compute-bound, HBM 1.66 s,
    ICI 1.19 s

    after: this config (model.decode_shards=2)
                        sampling    forward   backward  unattrib.      total
    all-gather              7.80   0.41 MiB       6.12  84.04 MiB      14.01
    reduce-scatter          5.00          -          -          -       5.00
    all-reduce              63 B   0.21 KiB       4.60       98 B       4.60
    all-to-all              0.81  52.50 MiB       0.10          -       0.97
    collective-permute         -      14.62      24.74          -      39.36
    total                  13.62      14.68      35.57  84.04 MiB      63.94
    per chip 21.41 GiB (10.19 + temporaries 11.11 + 0.11); roofline 1.75 s compute-bound, HBM 1.56 s,
    ICI 0.60 s (50.32 GiB over the slice on 3 links, 5.24 GiB in groups of 4 chips on 2, 8.38 GiB in
    pairs on 1)

    sampling after, from the HLO: the copy, once per step: all-to-all 0.81 + all-gathers 5.30 (7/16 of
    the 13.5 GiB of bf16 weights received per chip, plus the replicated embedding and LM head); then in
    each of the 320 layer passes two bf16 all-gathers (4 MiB) and two float32 reduce-scatters (8 MiB)
    inside each pair: 2.50 + 5.00.
    decode_shards=4 (copy split over 4 chips): 76.24 GiB per step (sampling 25.91), 19.77 GiB per chip.
"""

from quietstar_jax.training.config import base_config


def get_config():
    c = base_config()
    c.run_name = "quietstar-mistral7b-v4"
    # The slice this config is sized for; quietstar_jax.compile uses it when --topology is not given.
    c.tpu_topology = "v4:2x2x2"  # = accelerator type v4-16

    # Model: HF Mistral-7B-v0.1 folder on each worker's local disk (config.json + safetensors +
    # tokenizer). Pass --config.model.path=/mnt/disks/models/Mistral-7B-v0.1. The preset stands in for
    # config.json when AOT-compiling without the weights.
    c.model.source = "hf"
    c.model.path = ""
    c.model.preset = "mistral-7b"
    c.model.dtype = "bfloat16"  # compute
    c.model.param_dtype = "float32"  # master weights (and AdamW moments)
    c.model.remat_policy = "full"
    c.model.scan_layers = True
    c.model.attention_impl = "stream"
    # The thought sampler's 10 decode passes keep one bf16 weight copy split over pairs of chips
    # (quietstar_jax.sharding.layout): 1/2 of it (6.75 GiB) per chip during sampling, and each pass moves
    # activations instead of all-gathering every layer's weights again (see the table above).
    c.model.decode_shards = 2

    # Quiet-STaR (paper / reference defaults, spelled out).
    c.quietstar.n_ahead = 12  # N
    c.quietstar.n_ahead_talk = 4  # M
    c.quietstar.n_passes = 2  # P

    c.seq_len = 256
    c.global_batch_size = 8
    c.grad_accum_steps = 1
    c.steps = 100
    c.mesh.data = 1
    c.mesh.fsdp = 8
    c.mesh.tensor = 1

    c.optimizer.learning_rate = 1e-6
    c.optimizer.weight_decay = 1e-3
    c.optimizer.warmup_steps = 20
    c.optimizer.schedule = "constant"
    c.optimizer.clip_norm = 1.0

    # Data: OpenWebMath (HF dataset open-web-math/open-web-math, parquet shards with a "text" column),
    # the reference's train[:1000] as random 256-token crops. PLACEHOLDER path: download the first
    # shard(s) to every worker (launch/fetch.sh) or override --config.data.path=...
    # A tfds array_record copy works too: data.source="tfds", data.tfds_name=..., data.tfds_data_dir=gs://...
    c.data.source = "parquet"
    c.data.path = "/mnt/disks/data/open-web-math"
    c.data.text_field = "text"
    c.data.max_documents = 1000
    c.data.mode = "crop"
    c.data.add_bos = True  # the reference tokenised with the Mistral tokenizer's default <s>
    c.data.add_eos = False

    c.checkpoint.every_steps = 50
    c.checkpoint.every_secs = 1800  # preemptible slices: also save every 30 min
    c.log_every = 1
    c.sample_every = 10
    c.export_hf = True
    c.export_dtype = "bfloat16"
    c.distributed = "on"  # a v4-16 is always 2 hosts: jax.distributed.initialize() (auto-detects on Cloud TPU)
    return c
