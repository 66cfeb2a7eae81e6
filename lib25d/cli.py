"""Command line: ``lib25d params | train | evaluate | explain | bench``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import WARMUP_BN, RunConfig
from .models import METHODS


def _params(args: argparse.Namespace) -> int:
    from .models import build_model, count_parameters
    print(f"{'method':12s} {'trainable':>12s}  (backbone {args.backbone}, {args.in_channels} channel(s), "
          f"{args.num_classes} classes)")
    for name in METHODS:
        model = build_model(name, backbone=args.backbone, in_channels=args.in_channels,
                            num_classes=args.num_classes)
        print(f"{name:12s} {count_parameters(model) / 1e6:10.2f} M")
    return 0


def _none_or_int(text: str) -> int | None:
    return None if text.lower() in ("none", "0") else int(text)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field; defaults come from RunConfig (the paper's protocol)."""
    d = RunConfig()
    p.add_argument("--dataset", default=d.dataset,
                   help=f"organ, nodule, fracture, adrenal, vessel, synapse, synthetic or nifti:<csv> "
                        f"(default {d.dataset})")
    p.add_argument("--size", type=int, default=d.size, help=f"MedMNIST edge length, 28 or 64 (default {d.size})")
    p.add_argument("--method", default=d.method, help=f"{', '.join(METHODS)} (default {d.method})")
    p.add_argument("--backbone", default=d.backbone, help=f"torchvision backbone (default {d.backbone})")
    p.add_argument("--weights", default=d.weights,
                   help="'imagenet' (torchvision cache or download), a state-dict file, or 'none' "
                        f"(default {d.weights})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"training epochs (default {d.epochs})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"volumes per step (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"NAdam learning rate (default {d.lr})")
    p.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs,
                   help=f"first epochs train only the new modules (default {d.warmup_epochs}: the authors' code; "
                        "the paper says 2)")
    p.add_argument("--warmup-bn", default=d.warmup_bn, choices=WARMUP_BN,
                   help="the frozen encoder's BatchNorm in the warm-up: 'authors' = first epoch in eval mode, "
                        "then train mode (statistics move; needed from scratch), 'frozen' = eval mode "
                        f"throughout (protects pretrained statistics; allows the feature cache) (default {d.warmup_bn})")
    p.add_argument("--device", default=d.device, help=f"auto, cpu, cuda or cuda:N (default {d.device})")
    p.add_argument("--data-root", default=d.data_root,
                   help="folder with the MedMNIST .npz files (default $LIB25D_DATA_ROOT, else ~/.medmnist)")
    p.add_argument("--num-workers", type=int, default=d.num_workers, help="DataLoader workers (default -1: auto, up to 4 on CUDA, 0 on CPU)")
    p.add_argument("--chunk-size", type=_none_or_int, default=d.chunk_size,
                   help="slices per encoder call, bounds memory on large volumes (default: all at once)")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="disable bf16 autocast on CUDA")
    p.add_argument("--bf16-cpu", action="store_true",
                   help="bf16 autocast on CPU too (changes the numbers; faster only on CPUs with native bf16)")
    # performance switches (same numbers up to float summation order; see lib25d/bench.py)
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep the slice encoder in the default NCHW memory format (default: channels_last)")
    p.add_argument("--no-tiny-convs", dest="tiny_convs", action="store_false",
                   help="run convolutions on maps no bigger than their kernel (ResNet layer3/4 at 28^3) as "
                        "convolutions, not as matrix products")
    p.add_argument("--no-fold-adapter", dest="fold_adapter", action="store_false",
                   help="run the 1x1 channel adapter as its own convolution (default: folded into the first one)")
    p.add_argument("--no-dedupe-slices", dest="dedupe_slices", action="store_false",
                   help="encode identical slices every time (default: once, BatchNorm weighing each by its count)")
    p.add_argument("--no-cache-warmup-features", dest="cache_warmup_features", action="store_false",
                   help="with --warmup-bn frozen: re-encode the training volumes in every warm-up epoch, not once")
    p.add_argument("--checkpointing", action="store_true",
                   help="recompute slice-encoder activations per chunk in the backward pass (use with "
                        "--chunk-size): memory of one chunk, about one extra forward pass of time")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone (slow start)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, repeatable, e.g. n_train=128 (synthetic) or window=-150,250 (nifti)")


def _dataset_options(pairs: list[str]) -> dict:
    import yaml
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"dataset option {pair!r} is not KEY=VALUE, e.g. --option n_train=128")
        key, value = pair.split("=", 1)
        parsed = yaml.safe_load(value)
        out[key] = tuple(parsed) if isinstance(parsed, list) else parsed
        if isinstance(parsed, str) and "," in parsed:
            out[key] = tuple(yaml.safe_load(v) for v in parsed.split(","))
    return out


def config_from_args(args: argparse.Namespace) -> RunConfig:
    values = {f: getattr(args, f) for f in RunConfig().to_dict() if hasattr(args, f)}
    values["dataset_options"] = _dataset_options(args.option)
    return RunConfig.from_dict(values)


def _train(args: argparse.Namespace) -> int:
    from .train import train
    result = train(config_from_args(args), args.out, resume=args.resume, quiet=args.quiet)
    for which, m in result["metrics"].items():
        print(f"{which:9s} model (epoch {m['epoch']:3d}): test AUROC {m['test']['auc']:.4f}  ACC {m['test']['acc']:.4f}")
    print(f"result: {Path(args.out) / 'result.json'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .train import evaluate_run
    metrics = evaluate_run(args.run, split=args.split, which=args.which, device=args.device)
    print(f"{args.run} [{args.which} model, {args.split}]: AUROC {metrics['auc']:.4f}  ACC {metrics['acc']:.4f}"
          f"  loss {metrics['loss']:.4f}  (n={metrics['n']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lib25d", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("params", help="trainable parameters of every method (paper Table 2, first column)")
    p.add_argument("--backbone", default="resnet18", help="torchvision backbone name (default resnet18)")
    p.add_argument("--in-channels", type=int, default=1, help="input channels (default 1)")
    p.add_argument("--num-classes", type=int, default=2, help="classes; 2 means one logit (default 2)")
    p.set_defaults(func=_params)

    p = sub.add_parser("train", help="train and test one run; writes checkpoints and result.json into --out",
                       description="Train one run with the authors' protocol (NAdam, warm-up, per-epoch "
                                   "checkpoints) and test the final and the best-validation model.")
    _add_run_options(p)
    p.add_argument("--out", required=True, help="output folder (refused if it holds a run, unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="evaluate a finished or interrupted run on a split")
    p.add_argument("run", help="run folder written by 'lib25d train'")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split (default test)")
    p.add_argument("--which", default="final", choices=["final", "best"],
                   help="final-epoch checkpoint or best-validation model (default final)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.set_defaults(func=_evaluate)

    from .explain.cli import register as register_explain
    register_explain(sub)
    __import__("lib25d.bench", fromlist=["register"]).register(sub)  # lib25d bench
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, FloatingPointError) as err:
        print(f"lib25d {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
