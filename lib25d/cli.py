"""The command line: ``lib25d params | train | evaluate | explain | bench | profile``."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .config import RunConfig


def _optional(kind: type):
    return lambda text: None if text.lower() in ("none", "null") else kind(text)


TYPES = {"int": int, "float": float, "int | None": _optional(int), "float | None": _optional(float)}


def add_options(parser: argparse.ArgumentParser, settings: type, groups: dict[str, str] | None = None) -> None:
    """One option per field of a settings dataclass (RunConfig, explain's Settings): --name value,
    --flag / --no-flag for booleans, several values for lists, --option KEY=VALUE for a dict."""
    groups = {k: parser.add_argument_group(v) for k, v in (groups or {}).items()}
    for f in dataclasses.fields(settings):
        group, default = groups.get(f.metadata["kind"], parser), getattr(settings(), f.name)
        help = f"{f.metadata['help']} (default {' '.join(map(str, default)) if isinstance(default, list) else default})"
        help, flag = help.replace("%", "%%"), "--" + f.name.replace("_", "-")  # argparse formats help with %
        if f.type.startswith("dict"):
            group.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help=help)
        elif f.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help)
        elif f.type.startswith("list"):
            group.add_argument(flag, nargs="+", type=TYPES[f.type[5:-1]], default=default, help=help)
        else:
            group.add_argument(flag, type=TYPES.get(f.type, str), default=default, help=help)


def settings_from_args(settings: type, args: argparse.Namespace):
    """The settings an ``add_options`` parser read (a dict field from its --option KEY=VALUE pairs)."""
    return settings(**{f.name: _dataset_options(args.option) if f.type.startswith("dict") else getattr(args, f.name)
                        for f in dataclasses.fields(settings)})


def _dataset_options(pairs: list[str]) -> dict:
    import yaml
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"dataset option {pair!r} is not KEY=VALUE, e.g. --option n_train=128")
        key, value = pair.split("=", 1)
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str) and "," in parsed:  # window=-150,250
            parsed = tuple(yaml.safe_load(v) for v in parsed.split(","))
        out[key] = tuple(parsed) if isinstance(parsed, list) else parsed
    return out


def _params(args: argparse.Namespace) -> int:
    from .models import METHODS, build_model, count_parameters
    print(f"{'method':12s} {'trainable':>12s}  (backbone {args.backbone}, {args.in_channels} channel(s), "
          f"{args.num_classes} classes)")
    for name, method in METHODS.items():
        try:
            model = build_model(name, backbone=args.backbone, in_channels=args.in_channels, num_classes=args.num_classes)
        except ValueError:
            if method.family != "volume":
                raise
            print(f"{name:12s} {'—':>12s}  (converts torchvision ResNets only)")  # timm backbones: 2.5D only
            continue
        print(f"{name:12s} {count_parameters(model) / 1e6:10.2f} M")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .train import train
    result = train(settings_from_args(RunConfig, args), args.out, resume=args.resume, quiet=args.quiet)
    for which, m in result["metrics"].items():
        print(f"{which:9s} model (epoch {m['epoch']:3d}): test AUROC {m['test']['auc']:.4f}  "
              f"ACC {m['test']['acc']:.4f}")
    print(f"result: {Path(args.out) / 'result.json'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .runinfo import resolve_device
    from .train import evaluate, load_run, loss_function, split_of
    run = load_run(args.run, args.which, args.device)
    data = split_of(run.config, args.split)
    m = evaluate(run.model, data, run.config, resolve_device(args.device), loss_function(data.info.num_classes))
    print(f"{args.run} [{args.which} model, {args.split}]: AUROC {m['auc']:.4f}  ACC {m['acc']:.4f}"
          f"  loss {m['loss']:.4f}  (n={len(data)})")
    return 0


def _profile(args: argparse.Namespace) -> int:
    from .profiles import load_profile, summary
    profile = load_profile(args.name)
    if args.action == "runs":
        print("\n".join(r.run_id for r in profile.runs()))
        return 0
    if args.action == "tables":
        from .tables import study_text
        print(study_text(profile), end="")
        return 0
    print(f"{profile.name}: {len(profile.runs())} runs, results in {profile.results}")
    for key, value in summary(profile).items():
        print(f"  {key}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lib25d", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("params", help="trainable parameters of every method (the paper's Table 2, first column)")
    p.add_argument("--backbone", default="resnet18", help="torchvision name or timm:<name> (default resnet18)")
    p.add_argument("--in-channels", type=int, default=1, help="input channels (default 1)")
    p.add_argument("--num-classes", type=int, default=2, help="classes; 2 means one logit (default 2)")
    p.set_defaults(func=_params)

    p = sub.add_parser("train", help="train and test one run; writes checkpoints and result.json into --out",
                       description="Train one run with the authors' protocol (NAdam, warm-up, per-epoch "
                                   "checkpoints) and test the final and the best-validation model.")
    add_options(p, RunConfig, {"run": "run settings", "runtime": "where and how it runs",
                               "speed": "speed switches (same numbers, other speed and memory)"})
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

    p = sub.add_parser("profile", help="what a study profile (config/<name>.yaml) runs")
    p.add_argument("action", choices=["check", "runs", "tables"],
                   help="check: validate and summarise; runs: list run ids; tables: the numbers of Tables 1 and 3 "
                        "from its results folder, as text to diff against another (e.g. a cluster's)")
    p.add_argument("name", help="profile name (smoke, cpu, paper) or file")
    p.set_defaults(func=_profile)

    from .bench import register as register_bench
    from .explain.cli import register as register_explain
    register_explain(sub)
    register_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a result file records as its command
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, FloatingPointError) as err:
        print(f"lib25d {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
