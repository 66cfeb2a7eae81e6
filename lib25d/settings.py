"""Settings dataclasses (``RunConfig``, explain's ``Settings``) and the command-line options made from them.

Each field is declared once with :func:`setting`: its default, its help text and its kind. ``lib25d train``'s
and ``lib25d explain``'s options are generated from those fields (:func:`add_options`), so a new setting reaches
the command line, its ``--help`` and the run notebook's parameters without being written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

import yaml


def setting(default: Any, help: str, kind: str = "run") -> Any:
    """A settings field with its help text and kind, from which :func:`add_options` makes an option."""
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, "kind": kind})
    return dataclasses.field(default=default, metadata={"help": help, "kind": kind})


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
    return settings(
        **{
            f.name: _dataset_options(args.option) if f.type.startswith("dict") else getattr(args, f.name)
            for f in dataclasses.fields(settings)
        }
    )


def _dataset_options(pairs: list[str]) -> dict:
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


def run_command(
    parser: argparse.ArgumentParser, argv: list[str] | None, errors: tuple[type[Exception], ...], prog: str
) -> int:
    """Parse ``argv`` and run the chosen command: an expected error is one line on stderr and exit code 2,
    not a traceback (``lib25d`` and ``python -m study`` share this)."""
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a result file records as its command
    try:
        return args.func(args)
    except errors as err:
        print(f"{prog} {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
