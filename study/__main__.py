"""The study's command line: ``python -m study profile check|runs|tables NAME`` (what a profile runs, its numbers) and
``python -m study bench`` (Table 2 and the race against the authors' design: ``--help``)."""

from __future__ import annotations

import argparse
import sys

from lib25d.settings import run_command

from .bench.cli import register as register_bench
from .profiles import ProfileError, load_profile, summary
from .tables import study_text


def _profile(args: argparse.Namespace) -> int:
    profile = load_profile(args.name)
    if args.action == "runs":
        print("\n".join(r.run_id for r in profile.runs()))
        return 0
    if args.action == "tables":
        print(study_text(profile), end="")
        return 0
    print(f"{profile.name}: {len(profile.runs())} runs, results in {profile.results}")
    for key, value in summary(profile).items():
        print(f"  {key}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m study", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("profile", help="what a study profile (config/<name>.yaml) runs")
    p.add_argument(
        "action",
        choices=["check", "runs", "tables"],
        help="check: validate and summarise; runs: list run ids; tables: the numbers of Tables 1 and 3 "
        "from its results folder, as text to diff against another (e.g. a cluster's)",
    )
    p.add_argument("name", help="profile name (smoke, cpu, paper) or file")
    p.set_defaults(func=_profile)
    register_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(
        build_parser(), argv, (ProfileError, ValueError, FileNotFoundError, RuntimeError), "python -m study"
    )


if __name__ == "__main__":
    sys.exit(main())
