"""The layout is checked by tools, not by memory: import-linter's contracts (pyproject.toml), ruff (lint and
format), every late import saying why, planning and steps of the workflow without torch, every lazily exported
name resolving, no file over 300 lines, and a package that imports
and trains where POSIX-only modules do not exist (Windows, the OS of many course laptops)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("lib25d", "study")
SOURCES = sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))
BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_import_contracts_hold():
    """The library never imports the study; its layers point one way; no sibling modules import each other."""
    done = run(str(BIN / "lint-imports"), "--no-cache")
    assert done.returncode == 0 and "3 kept, 0 broken" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]


@pytest.mark.parametrize("command", [("check",), ("format", "--check")])
def test_ruff_finds_nothing(command):
    done = run(str(BIN / "ruff"), *command, "lib25d", "study", "tests", "workflow")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def imports_inside_functions(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import statement inside a function body."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found += [(inner.lineno, alias.name) for alias in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    found.append((inner.lineno, "." * inner.level + (inner.module or "")))
    return found


def test_every_late_import_says_why():
    """An import inside a function defers a cost (torch, medmnist: seconds of CPU in each of a study's hundreds of
    small workflow processes) or an optional dependency; its comment says which. import-linter reads function
    bodies too, so the contracts above still see every such dependency."""
    silent = []
    for path in SOURCES:
        lines = path.read_text().splitlines()
        for line, module in imports_inside_functions(path):
            if "#" not in lines[line - 1] and not lines[line - 2].strip().startswith("#"):
                silent.append(f"{path.relative_to(REPO)}:{line} {module}")
    assert not silent, f"late imports without a comment saying why: {silent}"


def test_the_workflow_plans_and_steps_without_torch():
    """Snakemake's planning (study.profiles, study.steps) and the status, set-aside and stage steps run once per
    job or more: they import neither torch nor medmnist (lib25d's packages load those on first use)."""
    code = (
        "import sys, lib25d, lib25d.settings, study.profiles, study.steps\n"
        "from lib25d.models import METHODS\nfrom lib25d.data import MEDMNIST\nfrom lib25d.run import RunConfig\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'medmnist', 'sklearn') if m in sys.modules))"
    )
    done = run(sys.executable, "-c", code)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


@pytest.mark.parametrize("package", ["lib25d", "lib25d.data", "lib25d.models", "lib25d.run"])
def test_every_lazily_exported_name_resolves(package):
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing and sorted(dir(module)) == sorted(module.__all__), missing


def test_no_file_is_over_300_lines():
    long = {str(p.relative_to(REPO)): n for p in SOURCES if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long


HIDDEN = """
import sys
sys.modules["fcntl"] = None      # as on Windows: importing them raises ImportError
sys.modules["resource"] = None
import lib25d, lib25d.cli, lib25d.explain
from lib25d.run import RunConfig, train
config = RunConfig(dataset="synthetic", size=8, weights=None, epochs=1, warmup_epochs=0, batch_size=4, device="cpu",
                   dataset_options={"n_train": 4, "n_val": 4, "n_test": 4})
result = train(config, sys.argv[1], quiet=True)
print("trained", result["metrics"]["final"]["epoch"], result["memory"]["kind"])
"""


def test_the_package_imports_and_trains_without_posix_only_modules(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", HIDDEN, str(tmp_path / "run")], capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert done.returncode == 0 and "trained 1 process_peak_rss" in done.stdout, done.stderr[-3000:]


def test_device_auto_picks_cuda_then_mps_then_cpu(monkeypatch):
    import torch

    from lib25d.run import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'mps' requested but Apple's MPS is not available here"):
        resolve_device("mps")
