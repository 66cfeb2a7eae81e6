"""``python -m study bench`` (formerly ``lib25d bench``): the paper's Table 2 on this machine, and lib25d
against the authors' design.

``--table2``: per method and volume size (uniform noise, random weights, RunConfig defaults; 2.5D
slices above 64x64 in chunks of ``--large-chunk-size`` with checkpointing): parameters, peak memory
of a training step (CUDA max allocated, or the peak RSS of a fresh process per case on CPU), seconds
per step (median of ``--repeats``) and per epoch (AdrenalMNIST3D's 1188 training volumes up to 64^3,
the paper's 975 PDAC scans above), volumes per second, and GFLOP/s against a measured matmul peak.

``--compare`` (:mod:`.compare`): 2.5D attention on AdrenalMNIST3D against the authors'
design from the same weights and batches. Parts: ``training`` (``--steps`` steps, extrapolated to the
epoch, losses compared); ``bf16`` (the same with bf16 autocast on CPU, and one epoch against fp32);
``inference`` (the test split, predictions compared); ``warmup`` (head-only steps in the authors'
BatchNorm mode, and lib25d's cached frozen-BatchNorm epochs); ``memory`` (a ``--large-shape`` step in
chunks with checkpointing in a fresh process, and the time factor checkpointing costs at batch 1).
Both merge into one JSON file (default ``results/bench/<cpu|cuda>.json``), shown by
:func:`.table2.table2_frame` and :func:`.compare.compare_frame`; the options: :mod:`.options`.
"""
