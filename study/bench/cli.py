"""``python -m study bench``: measure, merge into the results JSON (other sections and rows kept, each with the
command that measured it), print the tables."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from lib25d.run import resolve_device
from lib25d.run.environment import device_name, environment
from lib25d.run.folder import write_json

from . import __doc__ as DOC
from .compare import compare, compare_frame
from .options import OPTIONS
from .table2 import table2, table2_frame

SCHEMA = "lib25d.bench/v2"


def write(path: Path, name: str, section: dict[str, Any], device: torch.device, command: str) -> None:
    """Merge ``section`` into the JSON file: other sections, Table 2 rows of other (method, size)
    pairs and compare parts not measured now are kept, each with the command that measured it."""
    try:
        data = json.loads(Path(path).read_text())
        data = data if data.get("schema") == SCHEMA else {}
    except (OSError, ValueError):
        data = {}
    stamp = {"measured": datetime.now(UTC).isoformat(timespec="seconds"), "command": command}
    old = data.get(name, {})
    if name == "table2":
        new = {(r["method"], r["size"]) for r in section["rows"]}
        rows = [r for r in old.get("rows", []) if (r.get("method"), r.get("size")) not in new]
        section = {**section, "rows": rows + [{**stamp, **r} for r in section["rows"]]}
    else:
        section = {
            **{k: v for k, v in old.items() if isinstance(v, dict)},
            **{k: {**v, **stamp} if isinstance(v, dict) and k != "settings" else v for k, v in section.items()},
        }
    data[name] = {**section, "environment": environment(device), "created": stamp["measured"]}
    write_json(Path(path), {**data, "schema": SCHEMA})


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help="Table 2 on this machine (--table2) and lib25d vs the authors' design (--compare)",
        description=DOC.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=DOC.split("\n\n", 1)[1],
    )
    p.add_argument("--table2", action="store_true", help="measure Table 2")
    p.add_argument("--compare", action="store_true", help="compare with the authors' design")
    for name, kwargs in OPTIONS.items():
        p.add_argument("--" + name.replace("_", "-"), **kwargs)
    p.set_defaults(func=_bench)
    return p


def _bench(args: argparse.Namespace) -> int:
    if not (args.table2 or args.compare):
        raise ValueError("say what to measure: --table2, --compare, or both")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = Path(args.json or Path("results") / "bench" / f"{device.type}.json")
    command = "python -m study " + " ".join(getattr(args, "argv", ["bench"]))
    print(f"python -m study bench on {device_name(device)}", flush=True)
    if args.table2:
        table2(args, lambda s: write(path, "table2", s, device, command))
        print(table2_frame(path).to_string(index=False), flush=True)
    if args.compare:
        compare(args, lambda s: write(path, "compare", s, device, command))
        print(compare_frame(path)[["figure", "value", "target", "met"]].to_string(index=False), flush=True)
    print(f"results: {path}")
    return 0
