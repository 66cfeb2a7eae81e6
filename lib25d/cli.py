"""The command line: ``lib25d params | train | evaluate | explain``. The study's commands are its own:
``python -m study bench`` (Table 2, the race against the authors' design), ``python -m study profile``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .explain.cli import register as register_explain
from .models import METHODS, build_model, count_parameters
from .run import RunConfig, RunFolder, evaluate, loss_function, resolve_device, split_of, train
from .settings import add_options, run_command, settings_from_args


def _params(args: argparse.Namespace) -> int:
    print(
        f"{'method':12s} {'trainable':>12s}  (backbone {args.backbone}, {args.in_channels} channel(s), "
        f"{args.num_classes} classes)"
    )
    for name, method in METHODS.items():
        try:
            model = build_model(
                name, backbone=args.backbone, in_channels=args.in_channels, num_classes=args.num_classes
            )
        except ValueError:
            if method.family != "volume" and method.model is None:
                raise
            print(f"{name:12s} {'—':>12s}  (torchvision ResNets only)")  # timm backbones: not 3d, acs, spatial
            continue
        print(f"{name:12s} {count_parameters(model) / 1e6:10.2f} M")
    return 0


def _train(args: argparse.Namespace) -> int:
    result = train(settings_from_args(RunConfig, args), args.out, resume=args.resume, quiet=args.quiet)
    for which, m in result["metrics"].items():
        print(
            f"{which:9s} model (epoch {m['epoch']:3d}): test AUROC {m['test']['auc']:.4f}  ACC {m['test']['acc']:.4f}"
        )
    print(f"result: {Path(args.out) / 'result.json'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    run = RunFolder(args.run).load(args.which, args.device)
    data = split_of(run.config, args.split)
    m = evaluate(run.model, data, run.config, resolve_device(args.device), loss_function(data.info.num_classes))
    print(
        f"{args.run} [{args.which} model, {args.split}]: AUROC {m['auc']:.4f}  ACC {m['acc']:.4f}"
        f"  loss {m['loss']:.4f}  (n={len(data)})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lib25d", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("params", help="trainable parameters of every method (the paper's Table 2, first column)")
    p.add_argument("--backbone", default="resnet18", help="torchvision name or timm:<name> (default resnet18)")
    p.add_argument("--in-channels", type=int, default=1, help="input channels (default 1)")
    p.add_argument("--num-classes", type=int, default=2, help="classes; 2 means one logit (default 2)")
    p.set_defaults(func=_params)

    p = sub.add_parser(
        "train",
        help="train and test one run; writes checkpoints and result.json into --out",
        description="Train one run with the authors' protocol (NAdam, warm-up, per-epoch "
        "checkpoints) and test the final and the best-validation model.",
    )
    add_options(
        p,
        RunConfig,
        {
            "run": "run settings",
            "runtime": "where and how it runs",
            "speed": "speed switches (same numbers, other speed and memory)",
        },
    )
    p.add_argument("--out", required=True, help="output folder (refused if it holds a run, unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="evaluate a finished or interrupted run on a split")
    p.add_argument("run", help="run folder written by 'lib25d train'")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split (default test)")
    p.add_argument(
        "--which",
        default="final",
        choices=["final", "best"],
        help="final-epoch checkpoint or best-validation model (default final)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.set_defaults(func=_evaluate)

    register_explain(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    errors = (ValueError, FileNotFoundError, FileExistsError, RuntimeError, FloatingPointError)
    return run_command(build_parser(), argv, errors, "lib25d")


if __name__ == "__main__":
    sys.exit(main())
