"""Study profiles: one YAML file per way of running the whole study (``config/<name>.yaml``).

A profile describes the grid once: run settings shared by every run (``defaults``, any
:class:`~lib25d.run.RunConfig` field), datasets with their overrides, seeds, the methods of
Tables 1 and 3, the aggregate notebooks' settings. The Snakefile, the notebooks and the tests
all enumerate runs through :meth:`Profile.runs`. A dataset key is a label that names the run
(``adrenal-attention-s0``) and the dataset unless the entry sets ``dataset``
(``myct: {dataset: "nifti:scans.csv"}``). See ``config/smoke.yaml`` for a commented example.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lib25d.run import RunConfig

from .bench.options import OPTIONS as BENCH_OPTIONS
from .profile_checks import ProfileError, datasets, known, mapping, methods, scalar

CONFIG_DIR = "config"
NOTEBOOKS = ("table1", "fig2", "table3", "table2", "fig1", "fig3", "tutorial", "provenance")


@dataclass(frozen=True)
class Run:
    """One cell of the grid: a dataset label, a method, a seed and the full run settings."""

    run_id: str
    label: str
    method: str
    seed: int
    config: RunConfig


@dataclass(kw_only=True)
class Profile:
    """A validated profile; its fields are the file's keys (``name`` is ``profile:``), in file order."""

    name: str
    description: str = ""  # one line shown on every results page
    results: Path  # results folder (default results/<profile>), made absolute so every consumer agrees
    strict: bool = False  # true: a failed run fails the workflow; false: it is recorded and shown as missing
    download: bool = True  # try to download missing MedMNIST files and ImageNet weights before the runs
    threads: int = 1  # CPU threads per training run
    gpus: int = 0  # GPUs per training run (a Snakemake resource named gpu)
    defaults: dict[str, Any]  # RunConfig fields shared by every run
    datasets: dict[str, dict[str, Any]]  # label -> RunConfig overrides for that dataset
    seeds: list[int]  # every run of Table 1 and the figures
    table1: list[str]  # methods of Table 1 / Figure 2 / Table 2 (3D vs ACS vs attention)
    table3: list[str]  # reducers of Table 3
    table3_seeds: list[int]  # seeds of Table 3's reducers, a subset of seeds (default: all of them)
    every_seed: list[str] = field(default_factory=list)  # Table 3's methods run and shown on every seed regardless
    notebooks: dict[str, dict[str, Any]] = field(default_factory=dict)  # aggregate notebooks' settings, by name
    bench: dict[str, Any] | None = None  # options of `python -m study bench --table2` (omit: the runs' timings)
    source: Path | None = None

    @property
    def methods(self) -> list[str]:
        """Every method of the profile, Table 1's first, without repeats."""
        return list(dict.fromkeys([*self.table1, *self.table3]))

    def config_for(self, label: str, method: str, seed: int) -> RunConfig:
        """Run settings: RunConfig defaults < profile defaults < dataset overrides < cell."""
        if label not in self.datasets:
            raise ProfileError(f"dataset {label!r} is not in profile {self.name!r}; valid: {', '.join(self.datasets)}")
        values = merge(self.defaults, self.datasets[label])
        values.setdefault("dataset", label)
        return RunConfig.from_dict({**values, "method": method, "seed": int(seed)})

    def runs(
        self,
        methods: Iterable[str] | None = None,
        datasets: Iterable[str] | None = None,
        seeds: Iterable[int] | None = None,
    ) -> list[Run]:
        """Expected runs (dataset-major, then method, then seed), optionally filtered; Table 1's
        methods (attention among them) and ``every_seed``'s run every seed, Table 3's others ``table3_seeds``."""
        methods = self.methods if methods is None else [m for m in self.methods if m in set(methods)]
        labels = list(self.datasets) if datasets is None else [d for d in self.datasets if d in set(datasets)]
        keep = set(self.seeds if seeds is None else seeds)
        return [
            Run(run_id(label, method, seed), label, method, seed, self.config_for(label, method, seed))
            for label in labels
            for method in methods
            for seed in (self.seeds if method in (*self.table1, *self.every_seed) else self.table3_seeds)
            if seed in keep
        ]

    def table3_runs(self) -> list[Run]:
        """Table 3's runs: its methods at ``table3_seeds``, those of ``every_seed`` at every seed."""
        return [r for r in self.runs(methods=self.table3) if r.seed in self.table3_seeds or r.method in self.every_seed]

    def run(self, rid: str) -> Run:
        """The expected run named ``rid``."""
        for r in self.runs():
            if r.run_id == rid:
                return r
        raise ProfileError(
            f"run {rid!r} is not in profile {self.name!r}; ids look like "
            f"{run_id(next(iter(self.datasets)), self.methods[0], self.seeds[0])}"
        )

    def run_dir(self, rid: str) -> Path:
        return self.results / "runs" / rid

    @property
    def notebook_dir(self) -> Path:
        return self.results / "notebooks"

    def to_dict(self) -> dict[str, Any]:
        """The profile file's mapping; ``table3_seeds`` and ``bench`` only where they say something."""
        values = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "source"}
        values["results"] = str(self.results)
        if self.table3_seeds == self.seeds:
            del values["table3_seeds"]
        if not self.every_seed:
            del values["every_seed"]
        if self.bench is None:
            del values["bench"]
        return {"profile": values.pop("name"), **values}

    def save(self, path: str | Path) -> Path:
        """Write the resolved profile (overrides applied, absolute results folder)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def summary(profile: Profile) -> dict[str, str]:
    """What a profile runs, in words read from the profile itself: the reproduce page's table."""
    groups: dict[str, list[str]] = {}
    for label in profile.datasets:
        c = profile.config_for(label, profile.methods[0], profile.seeds[0])
        options = c.dataset_options or {}
        sizes = "/".join(str(options[k]) for k in ("n_train", "n_val", "n_test") if k in options)
        what = (
            f"{options['subset']}-volume subsets"
            if options.get("subset")
            else f"{sizes} volumes"
            if sizes
            else "full splits"
        )
        groups.setdefault(f"{c.size}³, {what}", []).append(label)
    d = RunConfig.from_dict({**profile.defaults, "dataset": "synthetic"})
    seeds = ", ".join(map(str, profile.seeds)) + (
        f" (Table 3: {', '.join(map(str, profile.table3_seeds))}"
        + (f"; {' and '.join(profile.every_seed)}: every seed" if profile.every_seed else "")
        + ")"
        if profile.table3_seeds != profile.seeds
        else ""
    )
    data = "; ".join(f"{', '.join(labels)} ({what})" for what, labels in groups.items())
    return {
        "profile": profile.name,
        "data": data,
        "training": f"{d.epochs} epochs ({d.warmup_epochs} head-only), batch {d.batch_size}, "
        f"lr {d.lr:g}, weights: {d.weights or 'random init'}",
        "seeds": seeds,
        "runs": str(len(profile.runs())),
        "meant for": profile.description,
    }


def run_id(label: str, method: str, seed: int) -> str:
    """Stable run name: ``<dataset label>-<method>-s<seed>``, e.g. ``adrenal-attention-s0``."""
    return f"{label}-{method}-s{int(seed)}"


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of two mappings (``dataset_options`` of a dataset extend the defaults')."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def from_dict(values: Mapping[str, Any], root: str | Path | None = None, source: Path | None = None) -> Profile:
    """Validate a profile mapping; relative ``results`` are resolved against ``root`` (the project)."""
    keys = ["profile", *(f.name for f in fields(Profile) if f.name not in ("name", "source"))]
    known(values, keys, "unknown profile key(s) {}")
    if not values.get("profile"):
        raise ProfileError("a profile needs `profile: <name>` (its file is config/<name>.yaml)")
    name = str(values["profile"])
    seeds = values.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ProfileError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    table3_seeds = values.get("table3_seeds") or seeds
    if not isinstance(table3_seeds, list) or not set(table3_seeds) <= set(seeds):
        raise ProfileError(f"table3_seeds must be a list of seeds taken from seeds {seeds}, got {table3_seeds!r}")
    notebooks = mapping(values.get("notebooks"), "notebooks", "{fig1: {dataset: adrenal}}")
    known(notebooks, NOTEBOOKS, "unknown notebook(s) {} under notebooks")
    bench = values.get("bench")
    if bench is not None:
        bench = mapping(bench, "bench", "{sizes: [28], repeats: 2}")
        known(bench, BENCH_OPTIONS, "unknown bench setting(s) {}")
    results = Path(values.get("results") or f"results/{name}").expanduser()
    profile = Profile(
        name=name,
        results=(results if results.is_absolute() else Path(root or Path.cwd()) / results).resolve(),
        defaults=mapping(values.get("defaults"), "defaults", "{epochs: 2, weights: null}"),
        datasets=datasets(values.get("datasets")),
        seeds=[int(s) for s in seeds],
        table1=methods(values.get("table1", ["3d", "acs", "attention"]), "table1"),
        table3=methods(values.get("table3", ["attention", "mean", "max", "lstm", "transformer"]), "table3"),
        table3_seeds=[int(s) for s in table3_seeds],
        every_seed=methods(values["every_seed"], "every_seed") if values.get("every_seed") else [],
        notebooks={k: mapping(v, f"notebooks.{k}", "{dataset: adrenal}") for k, v in notebooks.items()},
        description=str(values.get("description", "")),
        strict=scalar(values, "strict", bool, False),
        download=scalar(values, "download", bool, True),
        threads=scalar(values, "threads", int, 1),
        gpus=scalar(values, "gpus", int, 0),
        bench=bench,
        source=source,
    )
    if not set(profile.every_seed) <= set(profile.table3):
        outside = ", ".join(m for m in profile.every_seed if m not in profile.table3)
        raise ProfileError(f"every_seed names method(s) {outside} that table3 does not list; add them to table3")
    try:
        profile.runs()  # every cell must make a valid RunConfig
    except (ValueError, TypeError) as err:
        raise ProfileError(f"profile {name!r}: {err}") from None
    return profile


# -- files -------------------------------------------------------------------------------------------
def project_root(start: str | Path | None = None) -> Path:
    """The nearest folder (from ``start``, else the working directory, upwards) holding ``config/``."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_DIR).is_dir():
            return folder
    raise ProfileError(
        f"no {CONFIG_DIR}/ folder in {here} or above: run from the lib25d checkout, or pass the path of a profile file"
    )


def list_profiles(folder: str | Path | None = None) -> list[str]:
    """Names of the profiles in ``folder`` (default: the project's ``config/``)."""
    folder = Path(folder) if folder is not None else project_root() / CONFIG_DIR
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_profile(
    name: str | Path, overrides: Mapping[str, Any] | None = None, start: str | Path | None = None
) -> Profile:
    """Load and validate ``config/<name>.yaml`` or a file path, optionally deep-merging overrides;
    any problem with the file is one ProfileError naming it."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ProfileError(f"profile file {path} does not exist")
        path = path.resolve()
    else:
        folder = project_root(start) / CONFIG_DIR
        path = folder / f"{name}.yaml"
        if not path.is_file():
            raise ProfileError(f"no profile {str(name)!r} in {folder}; valid: {', '.join(list_profiles(folder))}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        problem = "it is not UTF-8 text" if isinstance(err, UnicodeDecodeError) else (err.strerror or str(err))
        raise ProfileError(f"profile file {path} cannot be read ({problem}): give a YAML text file") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise ProfileError(
            f"profile file {path} is not valid YAML ({problem}{where}): fix the syntax there "
            "(often an indentation, a missing ':' or an unclosed bracket)"
        ) from None
    if values is not None and not isinstance(values, Mapping):
        raise ProfileError(
            f"profile file {path} must hold a YAML mapping (profile:, defaults:, datasets:, ...), "
            f"not a {type(values).__name__}"
        )
    root = path.parent.parent if path.parent.name == CONFIG_DIR else Path.cwd()
    try:
        return from_dict(merge(dict(values or {}), overrides or {}), root=root, source=path)
    except ProfileError as err:
        raise ProfileError(f"profile file {path}: {err}") from None
