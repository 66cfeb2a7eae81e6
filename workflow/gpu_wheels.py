"""The wheels a GPU machine lacks for lib25d's GPU check: fetched here, installed there beside its
own PyTorch, with no package registry and without replacing anything it has.

    python workflow/gpu_wheels.py download [--dest wheels]                   # make wheels (pip reaches PyPI)
    python3 workflow/gpu_wheels.py install --wheels wheels --target .gpu-site  # on the GPU machine

``download`` resolves what lib25d and the check need (pyproject.toml: the package, its ``study`` extra
without the book builder and the SLURM plugin, pytest) for CPython 3.12 on manylinux x86_64, against
the versions the machine is known to have, and keeps only the distributions that the machine lacks:
``workflow/gpu_box.txt`` lists what it has; NO_DEPS, LEFT_OUT and PROVIDED_BY below say what else is
spared and why. Packages published as source only (acsconv, grad-cam) are built into wheels here.
``install`` puts the wheels into a folder of their own (``pip install --target``; put it first on
PYTHONPATH), never into the machine's environment: a ``venv --system-site-packages`` made from the
machine's python3 would not see its PyTorch, which lives in a venv itself (/opt/torch/.venv). Then
it checks that every requirement of every installed wheel is met by the two together.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOX = REPO / "workflow" / "gpu_box.txt"
PYTHON_VERSION = "3.12"  # the GPU machines' python3 (KINDS.md: 3.12.3)
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(17, 40)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]
# not needed by the check: the book build (jupyter-book, Sphinx and its themes, MathJax), the SLURM executor and
# the linters; their code paths are the CPU suite's
SKIPPED = ("jupyter-book", "snakemake-executor-plugin-slurm", "django-static-mathjax", "ruff", "import-linter")
# taken without their dependencies: the notebooks use only myst_nb.glue, which needs IPython, nbformat
# and docutils (there through ipykernel, papermill and snakemake); the rest of myst-nb's closure
# (Sphinx, Babel, jupyter-cache: 16 MiB) is its book parser's
NO_DEPS = ("myst-nb",)
# requirements left out on purpose: snakemake imports pulp only for its ILP scheduler and, without
# it, schedules greedily (16 MiB spared); grad-cam's opencv-python is met by opencv-python-headless
# (the same module cv2), which the machine has (60 MiB spared)
LEFT_OUT = ("pulp",)
PROVIDED_BY = {"opencv-python": "opencv-python-headless"}
MARKER_ROUNDS = 4


class Refusal(RuntimeError):
    """A one-line reason why the wheels cannot be fetched or installed, naming the fix."""


def normalize(name: str) -> str:
    """PEP 503 name: ``PyYAML`` and ``pyyaml``, ``grad_cam`` and ``grad-cam`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def box_packages(path: Path = BOX) -> dict[str, str | None]:
    """What the GPU machine has: name -> version (None where KINDS.md names no version)."""
    out: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[normalize(name)] = version or None
    return out


def requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """lib25d's requirements for the check: the package, its study extra and dev's test runners,
    without SKIPPED and without lib25d itself (it runs from the checkout)."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project["optional-dependencies"]
    reqs = [*project["dependencies"], *extras["study"], *extras["dev"]]
    return [r for r in reqs if normalize(Requirement(r).name) not in {"lib25d", *SKIPPED}]


def split_no_deps(reqs: list[str]) -> tuple[list[str], list[str]]:
    """(requirements resolved with their dependencies, those of NO_DEPS taken alone)."""
    from packaging.requirements import Requirement

    alone = [r for r in reqs if normalize(Requirement(r).name) in NO_DEPS]
    return [r for r in reqs if r not in alone], alone


def _pip(*args: str, quiet: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", *args, *(["--quiet"] if quiet else [])]
    return subprocess.run(cmd, capture_output=True, text=True)


def _target_flags() -> list[str]:
    flags = ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp"]
    for platform in PLATFORMS:
        flags += ["--platform", platform]
    return flags


def _report(reqs: list[str], *flags: str) -> list[dict]:
    """What ``pip install reqs`` would install into an empty environment (pip's JSON report)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        done = _pip("install", "--dry-run", "--ignore-installed", "--report", str(report), *flags, *reqs)
        if done.returncode != 0:
            raise Refusal(f"pip could not resolve lib25d's requirements: {_last_error(done.stderr)}")
        return json.loads(report.read_text())["install"]


def resolve(reqs: list[str], box: dict[str, str | None], built: Path) -> list[dict]:
    """pip's resolution for the GPU machine (CPython 3.12, manylinux, wheels only), the machine's
    known versions as constraints. pip resolves for another platform from wheels alone, so the
    releases published as source only are found first, by a resolution for this interpreter (without
    the machine's versions, which need not exist for it), and built into wheels in ``built``. pip
    evaluates environment markers for the Python it runs on, so requirements that hold on 3.12 only
    (papermill: aiohttp) are added by name until none is missing."""
    with tempfile.TemporaryDirectory() as tmp:
        for item in _report(reqs):
            if not item["download_info"]["url"].endswith(".whl"):
                _build_wheel(f"{item['metadata']['name']}=={item['metadata']['version']}", built)
        constraints = Path(tmp) / "box-constraints.txt"
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in box.items() if v))
        reqs = list(reqs)
        for _ in range(MARKER_ROUNDS):
            resolved = _report(
                reqs,
                "-c",
                str(constraints),
                *_target_flags(),
                "--target",
                str(Path(tmp) / "target"),
                "--find-links",
                str(built),
            )
            missing = _missing_on_target(resolved)
            if not missing:
                return resolved
            reqs += missing
    raise Refusal(f"the resolution for Python {PYTHON_VERSION} still misses {', '.join(missing)}")


def _missing_on_target(resolved: list[dict]) -> list[str]:
    """Requirements of resolved distributions that hold on the GPU machine's Python but were not
    resolved (their markers were false here), as plain requirements without the marker."""
    from packaging.requirements import Requirement

    found = {normalize(i["metadata"]["name"]) for i in resolved}
    out = []
    for item in resolved:
        for req in map(Requirement, item["metadata"].get("requires_dist") or []):
            if _applies(req) and normalize(req.name) not in found | set(PROVIDED_BY) | set(LEFT_OUT):
                extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
                out.append(f"{req.name}{extras}{req.specifier}")
    return sorted(set(out))


def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip().startswith("ERROR")]
    return lines[-1] if lines else " ".join(stderr.split())[-300:]


def _build_wheel(requirement: str, built: Path) -> Path:
    """A wheel from a source-only release; refused unless it is pure Python (it must run there)."""
    before = set(built.glob("*.whl"))
    done = _pip("wheel", "--no-deps", "--wheel-dir", str(built), requirement)
    new = sorted(set(built.glob("*.whl")) - before)
    if done.returncode != 0 or not new:
        raise Refusal(
            f"{requirement} has no wheel for Python {PYTHON_VERSION} and did not build here: {_last_error(done.stderr)}"
        )
    if not new[0].name.endswith("-none-any.whl"):
        raise Refusal(
            f"{requirement} has no manylinux wheel and builds here only as {new[0].name}: "
            "build it on a machine like the GPU one"
        )
    return new[0]


def _applies(req) -> bool:
    """Whether a requirement holds on the GPU machine's Python (extras not asked for are out)."""
    env = {"python_version": PYTHON_VERSION, "python_full_version": f"{PYTHON_VERSION}.3", "extra": ""}
    return req.marker is None or req.marker.evaluate(env)


def lacking(resolved: list[dict], box: dict[str, str | None]) -> list[tuple[str, str]]:
    """(name, version) of what the check needs and the machine lacks. Also carried: a package the
    machine has in an unknown version that a carried one caps from above (snakemake: packaging<26),
    at the resolved version, so the cap holds whatever version the machine has."""
    from packaging.requirements import Requirement

    found = {normalize(i["metadata"]["name"]): i["metadata"] for i in resolved}
    carried = {n for n in found if n not in {*box, *PROVIDED_BY, *LEFT_OUT}}
    capped = {
        normalize(r.name)
        for n in carried
        for r in map(Requirement, found[n].get("requires_dist") or [])
        if _applies(r)
        and normalize(r.name) in found
        and normalize(r.name) in box
        and not box[normalize(r.name)]
        and any(spec.operator in ("<", "<=", "==", "~=", "===") for spec in r.specifier)
    }
    return sorted((found[n]["name"], found[n]["version"]) for n in carried | capped)


def download(dest: Path) -> list[Path]:
    """Fill ``dest`` with exactly the wheels the GPU machine lacks (earlier wheels removed)."""
    box = box_packages()
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(tmp)
        with_deps, alone = split_no_deps(requirements())
        pins = lacking(resolve(with_deps, box, built), box)
        local = {normalize(p.name.split("-")[0]): p for p in built.glob("*.whl")}
        for name, _ in pins:
            if normalize(name) in local:
                shutil.copy2(local[normalize(name)], dest)
        remote = [f"{n}=={v}" for n, v in pins if normalize(n) not in local] + alone
        done = _pip("download", "--no-deps", *_target_flags(), "--dest", str(dest), *remote)
        if done.returncode != 0:
            raise Refusal(f"pip could not download the wheels: {_last_error(done.stderr)}")
    return sorted(dest.glob("*.whl"))


# -- on the GPU machine -----------------------------------------------------------------------------
def wheel_names(wheels: Path) -> list[str]:
    """Distribution names of the wheels in a folder (PEP 427 file names)."""
    return sorted(normalize(p.name.split("-")[0]) for p in wheels.glob("*.whl"))


def unmet(target: Path) -> list[str]:
    """Requirements of the distributions in ``target`` that neither ``target`` nor this Python's
    environment meets: 'grad-cam needs ttach' (markers evaluated here, extras not asked for skipped)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    here: dict[str, str] = {}
    for d in md.distributions(path=[str(target), *sys.path]):  # the first on the path is the one imported
        here.setdefault(normalize(d.metadata["Name"]), d.version)
    for wanted, provider in PROVIDED_BY.items():
        if provider in here:
            here.setdefault(wanted, here[provider])
    problems = []
    for dist in md.distributions(path=[str(target)]):
        if normalize(dist.metadata["Name"]) in NO_DEPS:
            continue
        for text in dist.requires or []:
            req = Requirement(text)
            if normalize(req.name) in LEFT_OUT or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
                continue  # markers of this very Python
            have = here.get(normalize(req.name))
            if have is None:
                problems.append(f"{dist.metadata['Name']} needs {req}, which is missing")
            elif req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{dist.metadata['Name']} needs {req}, this machine has {have}")
    return problems


def install(wheels: Path, target: Path) -> int:
    """Install every wheel of ``wheels`` into ``target`` (skipped when it holds this very set), then
    check requirements; the number of wheels. Refusals name the fix in one line."""
    if not wheels.is_dir() or not any(wheels.glob("*.whl")):
        raise Refusal(f"no wheels in {wheels}: run 'make wheels' where pip reaches PyPI and bring the folder along")
    files = sorted(p.name for p in wheels.glob("*.whl"))
    names = wheel_names(wheels)
    doubles = sorted({n for n in names if names.count(n) > 1})
    if doubles:
        raise Refusal(f"{wheels} holds two versions of {', '.join(doubles)}: run 'make wheels' again (it empties it)")
    stamp = target / ".wheels"
    if not (stamp.is_file() and stamp.read_text().split() == files):
        shutil.rmtree(target, ignore_errors=True)
        done = _pip(
            "install",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--no-cache-dir",
            "--target",
            str(target),
            *map(str, sorted(wheels.glob("*.whl"))),
        )
        if done.returncode != 0:
            raise Refusal(f"pip could not install the wheels of {wheels}: {_last_error(done.stderr)}")
        stamp.write_text("\n".join(files) + "\n")
    problems = unmet(target)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise Refusal(
            f"{wheels} lacks a package: {problems[0]}{more}; run 'make wheels' again where pip reaches "
            "PyPI, or add the package to it"
        )
    return len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("download", help="fill a folder with the wheels the GPU machine lacks (needs PyPI)")
    p.add_argument("--dest", type=Path, default=REPO / "wheels", help="folder (default wheels/, emptied first)")
    p = sub.add_parser("install", help="install a wheels folder beside this Python's own packages")
    p.add_argument("--wheels", type=Path, default=REPO / "wheels", help="folder of wheels (default wheels/)")
    p.add_argument("--target", type=Path, default=REPO / ".gpu-site", help="where they go (default .gpu-site/)")
    args = parser.parse_args(argv)
    try:
        if args.action == "download":
            files = download(args.dest)
            size = sum(p.stat().st_size for p in files)
            for p in files:
                print(f"{p.stat().st_size / 2**20:7.2f} MiB  {p.name}")
            print(f"{len(files)} wheels, {size / 2**20:.1f} MiB in {args.dest}")
        else:
            count = install(args.wheels, args.target)
            print(f"{count} wheels installed in {args.target}; put it first on PYTHONPATH")
    except Refusal as err:
        print(f"gpu_wheels {args.action}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
