"""The whole study end to end: the smoke workflow in a copy of the checkout (conftest's session fixture
``study``), the built book (tables with a row per dataset and method, figures present, provenance
filled), a failed run shown as missing, strict mode, and a SLURM dry run of the paper profile (the paper
profile's rehearsal is tests/test_rehearsal.py).

Slow (a few minutes on 2 cores) but part of `make test`: it is the issue's definition of done.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from studyrun import Page, html_dir, snakemake

from study.profiles import load_profile

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_every_run_finished(study):
    repo, _, profile = study
    for run in profile.runs():
        status = json.loads((profile.run_dir(run.run_id) / "status.json").read_text())
        assert status["status"] == "ok", status
        assert (profile.run_dir(run.run_id) / "result.json").is_file()


@pytest.mark.parametrize("page, table", [("table1", "table1"), ("table3", "table3"), ("compute", "table2")])
def test_tables_have_a_row_for_every_dataset_and_method(study, page, table):
    _, _, profile = study
    html = Page(html_dir(profile) / "book" / f"{page}.html")
    pairs = {tuple(row[:2]) for row in html.rows}
    methods = profile.table3 if table == "table3" else profile.table1
    expected = {(r.label, r.method) for r in profile.runs(methods=methods)}
    assert expected <= pairs, f"{page}: rows missing for {expected - pairs}"
    assert "Profile smoke" in html.text and "none (random init)" in html.text and "device: cpu" in html.text


@pytest.mark.parametrize("page, least", [("fig1", 1), ("fig2", 1), ("interpretability", 3)])
def test_figures_are_non_empty_pngs(study, page, least):
    _, _, profile = study
    path = html_dir(profile) / "book" / f"{page}.html"
    images = [src for src in Page(path).images if not src.startswith(("http", "data:")) and "logo" not in src]
    assert len(images) >= least, f"{page}: {images}"
    for src in images:
        image = (path.parent / src).resolve()
        assert image.is_file() and image.stat().st_size > 1000, image
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image


def test_every_voxel_map_is_measured_on_the_interpretability_page(study):
    """Spatial attention's own map and HiResCAM of its encoder beside the other methods' maps and chance, each
    with a pointing interval and its runs' AUROC; the alignment table for the spatial run."""
    _, _, profile = study
    html = Page(html_dir(profile) / "book" / "interpretability.html")
    rows = {tuple(row[:2]): row for row in html.rows}
    for key in [("spatial", "voxel map"), ("spatial", "hirescam"), ("attention", "voxel sum"), ("3d", "hirescam")]:
        assert key in rows and "[" in rows[key][3] and rows[key][-1] != "—", (key, rows.get(key))
    assert ("random", "random map") in rows
    assert any(row[:2] == ["spatial", "spearman_within"] for row in html.rows), html.rows


def test_table2_has_the_benchmark_of_every_method(study):
    _, _, profile = study
    html = Page(html_dir(profile) / "book" / "compute.html")
    sizes = [str(s) for s in profile.bench["sizes"]]
    assert {(m, s) for m in profile.table1 for s in sizes} <= {tuple(row[:2]) for row in html.rows}
    assert "python -m study bench on cpu" in html.text


def test_provenance_names_revision_versions_and_times(study):
    repo, _, profile = study
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    html = Page(html_dir(profile) / "book" / "provenance.html")
    assert revision and revision in html.text
    import torch

    versions = {row[0]: row[1] for row in html.rows if len(row) == 2}
    assert versions.get("torch") == torch.__version__.split("+")[0] and versions.get("lib25d")
    timed = [row for row in html.rows if row and row[0] in {r.run_id for r in profile.runs()} | {"table1", "fig3"}]
    assert len(timed) >= len(profile.runs()) + 2


def test_every_run_has_its_page_and_the_tutorial_ran(study):
    _, _, profile = study
    for run in profile.runs():
        page = html_dir(profile) / "book" / "_generated" / "runs" / f"{run.run_id}.html"
        assert f"Run {run.run_id}" in page.read_text()
    tutorial = (html_dir(profile) / "book" / "_generated" / "notebooks" / "tutorial.html").read_text()
    assert "Exercises" in tutorial and "Traceback" not in tutorial


def test_formulas_render_from_a_local_mathjax(study):
    """The method page's and Table 3's formulas: MathJax is served with the book, not fetched from a CDN."""
    _, _, profile = study
    for page in ("method", "table3"):
        html = (html_dir(profile) / "book" / f"{page}.html").read_text()
        assert "_static/mathjax/tex-chtml.js" in html and "cdn.jsdelivr" not in html and "\\(" in html, page
    assert (html_dir(profile) / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 500_000
    assert (html_dir(profile) / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_rerun_skips_finished_work(study):
    repo, env, _ = study
    dry = snakemake(repo, "--configfile", "config/smoke.yaml", "--cores", "2", "-n", env=env, timeout=300)
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-2000:]


MISSING = """profile: missing
results: results/missing
defaults: {epochs: 1, warmup_epochs: 0, batch_size: 8, weights: null, device: cpu}
datasets: {nodule: {}}
seeds: [0]
table1: [attention]
table3: [attention]
"""


def test_a_failed_run_is_shown_as_missing_not_dropped(study):
    repo, env, _ = study
    (repo / "config" / "missing.yaml").write_text(MISSING)
    profile = load_profile(repo / "config" / "missing.yaml")
    target = str(profile.notebook_dir / "table1.ipynb")
    done = snakemake(
        repo, "--configfile", "config/missing.yaml", "--cores", "2", "--keep-going", target, env=env, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    status = json.loads((profile.run_dir("nodule-attention-s0") / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith("FileNotFoundError: nodulemnist3d.npz not found")
    cells = [c for c in json.loads(Path(target).read_text())["cells"] if c["cell_type"] == "code"]
    outputs = json.dumps([c.get("outputs", []) for c in cells])
    assert "nodule" in outputs and "missing (nodulemnist3d.npz not found" in outputs
    failed = subprocess.run(
        f"grep -l '\"failed\"' {profile.results}/runs/*/status.json",
        shell=True,
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )  # the README's --forcerun list
    assert failed.stdout.strip() == str(profile.run_dir("nodule-attention-s0") / "status.json")


SCANS = """profile: scans
results: results/scans
defaults: {{epochs: 1, warmup_epochs: 0, batch_size: 4, weights: null, device: cpu}}
datasets:
  pdac: {{dataset: "nifti:{ct}", dataset_options: {{recipe: pdac-ct, target_shape: [16, 24, 24]}}}}
  glioma: {{dataset: "nifti:{mr}", dataset_options: {{recipe: glioma-mri, crop: [16, 16, 16]}}}}
seeds: [0]
table1: [attention]
table3: [attention]
"""


def test_both_recipes_run_through_the_workflow(study, tmp_path):
    """A profile whose datasets are phantom cohorts as hospitals store them (DICOM series and NIfTI, random
    storage orders and voxel sizes), one per recipe at a laptop's size, through the Snakefile to Table 1."""
    from study.phantoms import ct_like_cohort, glioma_like_cohort

    repo, env, _ = study
    ct, mr = ct_like_cohort(tmp_path / "ct", n=(4, 2, 2)), glioma_like_cohort(tmp_path / "mr", n=(4, 2, 2))
    (repo / "config" / "scans.yaml").write_text(SCANS.format(ct=ct, mr=mr))
    profile = load_profile(repo / "config" / "scans.yaml")
    target = str(profile.notebook_dir / "table1.ipynb")
    done = snakemake(repo, "--configfile", "config/scans.yaml", "--cores", "2", target, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for label, recipe in (("pdac", "pdac-ct"), ("glioma", "glioma-mri")):
        run = profile.run_dir(f"{label}-attention-s0")
        assert json.loads((run / "status.json").read_text())["status"] == "ok"
        identity = json.loads((run / "result.json").read_text())["data"]["identity"]
        assert identity["preprocess"]["recipe"] == recipe and identity["preprocess"]["orientation"] == "RAS"
    outputs = json.dumps([c.get("outputs", []) for c in json.loads(Path(target).read_text())["cells"]])
    assert (
        "recipe pdac-ct, orientation RAS" in outputs
        and "recipe glioma-mri, orientation RAS, spacing 1x1x1 mm" in outputs
        and "Bal. ACC ours" in outputs
        and "recall per class ours" in outputs
    )


def test_strict_mode_passes_strict_to_the_status_recorder(study):
    """strict=true: the run job exits 1 when its run failed (the recorder's exit code is unit-tested)."""
    repo, env, _ = study
    dry = snakemake(
        repo,
        "--configfile",
        "config/smoke.yaml",
        "--config",
        "strict=true",
        "results=results/strict",
        "--cores",
        "1",
        "-n",
        "-p",
        "--forcerun",
        "run",
        env=env,
        timeout=300,
    )
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    runs = len(load_profile(repo / "config" / "smoke.yaml").runs())
    assert dry.stdout.count("-m study.steps status") == runs and dry.stdout.count("--strict") == runs


def test_slurm_dry_run_of_the_paper_profile(study):
    repo, env, _ = study
    dry = snakemake(
        repo, "--configfile", "config/paper.yaml", "--profile", "workflow/profiles/slurm", "-n", env=env, timeout=300
    )
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    out = dry.stdout + dry.stderr
    assert re.search(r"^run\s+270$", out, re.M), out[-2000:]  # the paper's 210, 30 gated, 30 spatial
    assert "gpu=1" in out and "slurm_partition=gpu" in out
