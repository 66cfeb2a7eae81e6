"""Command line: ``lib25d params | train | evaluate | explain | bench``."""
from __future__ import annotations

import argparse
import sys


def _params(args: argparse.Namespace) -> int:
    from .models import METHODS, build_model, count_parameters
    print(f"{'method':12s} {'trainable':>12s}  (backbone {args.backbone}, {args.in_channels} channel(s), "
          f"{args.num_classes} classes)")
    for name in METHODS:
        model = build_model(name, backbone=args.backbone, in_channels=args.in_channels,
                            num_classes=args.num_classes)
        print(f"{name:12s} {count_parameters(model) / 1e6:10.2f} M")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lib25d", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("params", help="trainable parameters of every method (paper Table 2, first column)")
    p.add_argument("--backbone", default="resnet18", help="torchvision backbone name (default resnet18)")
    p.add_argument("--in-channels", type=int, default=1, help="input channels (default 1)")
    p.add_argument("--num-classes", type=int, default=2, help="classes; 2 means one logit (default 2)")
    p.set_defaults(func=_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"lib25d {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
