"""The benchmark's options: its command line, and the keys a profile's ``bench:`` section may set."""

OPTIONS = {  # the command's options (a profile's `bench:` keys are these names): flag settings and help
    "sizes": dict(nargs="+", default=["28", "64", "128x224x224"], help="volume sizes, N or DxHxW (--table2)"),
    "methods": dict(nargs="+", default=["attention", "3d", "acs"], help="methods to measure (--table2)"),
    "batch_size": dict(
        type=int, help="volumes per step (default --table2: 16 up to 28^3, 4 up to 64^3, 2 above; --compare: 64)"
    ),
    "repeats": dict(type=int, default=3, help="timed repetitions; the median is reported"),
    "warmup_steps": dict(type=int, default=1, help="untimed steps before timing (--table2)"),
    "large_chunk_size": dict(
        type=int, default=64, help="2.5D slices per encoder call above 64x64, with checkpointing (0: all at once)"
    ),
    "device": dict(default="auto", help="auto, cpu, cuda or cuda:N"),
    "threads": dict(type=int, help="CPU threads for torch (1 on a shared machine)"),
    "in_process": dict(
        action="store_true", help="measure in this process, not a fresh one per case (CPU peaks then accumulate)"
    ),
    "no_inference": dict(action="store_true", help="skip the inference throughput (--table2)"),
    "no_amp": dict(action="store_true", help="fp32 on CUDA instead of bf16 autocast (lib25d's side)"),
    "compile": dict(action="store_true", help="torch.compile lib25d's backbone (FLOPs are then not counted)"),
    "json": dict(help="JSON file to merge into (default results/bench/<cpu|cuda>.json)"),
    "data_root": dict(help="folder of adrenalmnist3d.npz (--compare; default $LIB25D_DATA_ROOT)"),
    "steps": dict(type=int, default=3, help="timed training steps after an untimed one (--compare)"),
    "subset": dict(type=int, help="a stratified subset of N volumes per split (--compare, quick checks)"),
    "weights": dict(help="backbone weights: imagenet, a state-dict file or none (--compare; default none)"),
    "parts": dict(
        nargs="+",
        default=["training", "inference", "warmup", "memory"],
        choices=["training", "bf16", "inference", "warmup", "memory"],
        help="comparisons to run",
    ),
    "large_shape": dict(default="128x224x224", help="volume of the memory comparison"),
    "large_batch_size": dict(type=int, default=2, help="its batch size"),
    "compare_chunk_size": dict(type=int, default=64, help="its chunk size"),
}
