"""The study workflow as the tests run it: in a copy of the checkout (what a clean clone holds), through
Snakemake's command line, and its built book read back. conftest's session fixture ``study`` runs the
smoke profile once with these; the workflow and cluster tests run further profiles and executors in the
same copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple

from study.profiles import Profile

REPO = Path(__file__).resolve().parents[1]


class Study(NamedTuple):
    """The smoke study, finished: the checkout copy it ran in, the environment it ran with, its profile."""

    repo: Path
    env: dict[str, str]
    profile: Profile


def copy_checkout(dest: Path, git: bool = True) -> Path:
    """Tracked and untracked-but-not-ignored files (no .venv, no wheels) plus, with ``git``, .git: what a clean
    clone would hold."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    if not git:
        return dest
    if (REPO / ".git").is_dir():
        shutil.copytree(REPO / ".git", dest / ".git")
    else:  # a worktree's .git is a file naming the main repository: a clone at the same commit instead
        subprocess.run(["git", "clone", "-q", "--no-checkout", "--shared", str(REPO), str(dest / "clone")], check=True)
        (dest / "clone" / ".git").rename(dest / ".git")
        (dest / "clone").rmdir()
        subprocess.run(["git", "reset", "-q"], cwd=dest, check=True)  # the index of HEAD, the files as copied
    return dest


def study_env(data_root: Path, **extra: str) -> dict[str, str]:
    """The environment the README's book command runs in: the data folder, and this interpreter's bin/ first
    on PATH (the rules call jupyter-book and papermill from there)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "LIB25D_DATA_ROOT": str(data_root), "PATH": path, **extra}


def snakemake(cwd: Path, *args: str, env: dict[str, str], timeout: int = 1500) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", "workflow/Snakefile", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


class Page(HTMLParser):
    """Table rows (cell texts) and image sources of one HTML page."""

    def __init__(self, path: Path):
        super().__init__()
        self.rows: list[list[str]] = []
        self.images: list[str] = []
        self._cell: list[str] | None = None
        self.text = path.read_text()
        self.feed(self.text)

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def html_dir(profile: Profile) -> Path:
    """Where a profile's book is built."""
    return profile.results / "book" / "_build" / "html"
