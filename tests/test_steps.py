"""The workflow's own steps (study/steps.py): status records, set-aside, fetch, stage, and the
helpers the Snakefile builds its graph with. No training: fake run folders and notebooks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from lib25d.run import RunConfig
from study import steps
from study.__main__ import build_parser
from study.profiles import ProfileError, from_dict, load_profile

REPO = Path(__file__).resolve().parents[1]
SMALL = {
    "profile": "tiny",
    "defaults": {"epochs": 2, "weights": None},
    "datasets": {"adrenal": {"dataset_options": {"subset": 8}}, "organ": {}},
    "seeds": [0, 1],
    "table1": ["3d", "attention"],
    "table3": ["attention", "mean"],
}


def tiny(tmp_path: Path, **changes):
    return from_dict({**SMALL, "results": str(tmp_path / "results"), **changes}, root=tmp_path)


def one_error_line(args: list[str], cwd: Path, prefix: str, *parts: str) -> None:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[0].startswith(prefix) and all(p in lines[0] for p in parts), lines[0]


# -- status of one attempt -------------------------------------------------------------------------
def test_failed_run_status_takes_the_error_from_the_notebook(tmp_path):
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "x",
                outputs=[
                    nbformat.v4.new_output(
                        "error",
                        ename="FileNotFoundError",
                        evalue="\x1b[31morganmnist3d.npz not found in /d\x1b[0m: point "
                        "LIB25D_DATA_ROOT (or --data-root) at the folder",
                        traceback=[],
                    )
                ],
            )
        ]
    )
    nbformat.write(nb, tmp_path / "run.ipynb")
    status = steps.record_status(tmp_path / "organ-3d-s0", 1, tmp_path / "run.ipynb")
    saved = json.loads((tmp_path / "organ-3d-s0" / "status.json").read_text())
    assert saved == status and status["status"] == "failed"
    assert status["error"].startswith("FileNotFoundError: organmnist3d.npz not found in /d: point")
    assert status["reason"] == "organmnist3d.npz not found in /d"


def test_failed_run_without_notebook_gets_a_stub_and_strict_exit_code(tmp_path):
    log = tmp_path / "log"
    log.write_text("Executing\nNoSuchKernel: No such kernel named python3\n")
    nb = tmp_path / "run" / "run.ipynb"
    assert (
        steps.main(["status", str(tmp_path / "run"), "--exit-code", "1", "--notebook", str(nb), "--log", str(log)]) == 0
    )
    assert "No such kernel" in nbformat.read(nb, as_version=4).cells[0].source
    assert steps.main(["status", str(tmp_path / "run"), "--exit-code", "1", "--log", str(log), "--strict"]) == 1


def test_ok_needs_a_result_file(tmp_path):
    assert steps.record_status(tmp_path / "a", 0)["status"] == "failed"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "result.json").write_text("{}")
    assert steps.record_status(tmp_path / "b", 0)["status"] == "ok"


def test_failed_runs_are_found_by_the_documented_forcerun_command(tmp_path):
    """README: snakemake ... --forcerun $(grep -l '"failed"' results/<profile>/runs/*/status.json)"""
    p = tiny(tmp_path)
    steps.record_status(p.run_dir("organ-3d-s1"), 2)
    (p.run_dir("adrenal-3d-s0")).mkdir(parents=True)
    (p.run_dir("adrenal-3d-s0") / "result.json").write_text("{}")
    steps.record_status(p.run_dir("adrenal-3d-s0"), 0)
    found = subprocess.run(
        f"grep -l '\"failed\"' {p.results}/runs/*/status.json", shell=True, capture_output=True, text=True
    ).stdout.split()
    assert found == [str(p.run_dir("organ-3d-s1") / "status.json")]


def test_short_reasons_fit_a_table_cell():
    assert (
        steps.short_reason("FileNotFoundError: x.npz not found in /d: point LIB25D_DATA_ROOT")
        == "x.npz not found in /d"
    )
    assert (
        steps.short_reason("RuntimeError: ImageNet weights for resnet18 are not in the cache (/root/x) and could not")
        == "ImageNet weights for resnet18 are not in the cache"
    )
    assert len(steps.short_reason("ValueError: " + "a" * 200)) == steps.REASON_CHARS


def test_a_failed_benchmark_leaves_its_reason(tmp_path):
    (tmp_path / "log").write_text("case 1\nRuntimeError: CUDA out of memory\n")
    assert steps.main(["bench-failed", str(tmp_path / "b" / "t.json"), str(tmp_path / "log")]) == 0
    assert json.loads((tmp_path / "b" / "t.json").read_text())["error"] == "RuntimeError: CUDA out of memory"


# -- set-aside, stage ----------------------------------------------------------------------------------
def test_changed_settings_set_the_old_run_aside(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    config = RunConfig(dataset="synthetic", weights=None, epochs=2)
    (out / "result.json").write_text(json.dumps({"config": config.to_dict(), "history": [{}, {}]}))
    assert steps.set_aside(out, config.replace(epochs=5).to_dict()) is None  # more epochs: the trainer extends
    assert steps.set_aside(out, config.replace(channels_last=False).to_dict()) is None  # a speed switch
    assert steps.set_aside(out, config.replace(lr=1e-3).to_dict()) == out / "previous"
    assert (out / "previous" / "result.json").is_file() and not (out / "result.json").exists()


def test_damaged_checkpoint_is_named_when_setting_runs_aside(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 killed while saving")
    config = json.dumps(RunConfig(dataset="synthetic", weights=None).to_dict())
    one_error_line(
        ["-m", "study.steps", "set-aside", str(out), config],
        tmp_path,
        "python -m study.steps set-aside: error: ",
        f"checkpoint {out / 'checkpoint.pt'} cannot be read",
        "move it away",
    )


def test_stage_copies_and_titles_run_notebooks(tmp_path):
    p = tiny(tmp_path)
    p.notebook_dir.mkdir(parents=True)
    nbformat.write(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Table 1")]), p.notebook_dir / "table1.ipynb"
    )
    run_nb = p.run_dir("adrenal-3d-s0") / "run.ipynb"
    run_nb.parent.mkdir(parents=True)
    nbformat.write(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# One training run\n\ntext")]), run_nb
    )
    dest = tmp_path / "book" / "_generated"
    (dest / "stale").mkdir(parents=True)
    written = steps.stage(p.save(tmp_path / "profile.yaml"), dest, ["table1"])
    assert sorted(x.relative_to(dest).as_posix() for x in written) == [
        "notebooks/table1.ipynb",
        "runs/adrenal-3d-s0.ipynb",
    ]
    assert not (dest / "stale").exists()
    assert (
        nbformat.read(dest / "runs" / "adrenal-3d-s0.ipynb", as_version=4).cells[0].source
        == "# Run adrenal-3d-s0\n\ntext"
    )


def test_stage_with_a_bad_profile_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(["not", "a", "mapping"]))
    one_error_line(
        ["-m", "study.steps", "stage", str(path), str(tmp_path / "d"), "table1"],
        tmp_path,
        "python -m study.steps stage: error: ",
        f"profile file {path}",
        "not a list",
    )


# -- fetch --------------------------------------------------------------------------------------------
def test_a_run_whose_input_was_not_fetched_is_recorded_without_starting(tmp_path):
    outcome = steps.fetch("medmnist-organ-28", download=False, root=str(tmp_path / "empty"))
    assert outcome["status"] == "missing" and outcome["error"].startswith(
        "FileNotFoundError: organmnist3d.npz not found"
    )
    (tmp_path / "fetch").mkdir()
    (tmp_path / "fetch" / "medmnist-organ-28.json").write_text(json.dumps(outcome))
    nb = tmp_path / "organ-3d-s0" / "run.ipynb"
    status = steps.record_status(nb.parent, 3, nb, fetched=[tmp_path / "fetch" / "medmnist-organ-28.json"])
    assert status["status"] == "failed" and status["error"] == outcome["error"]
    assert status["reason"].startswith("organmnist3d.npz not found in /")
    assert "organmnist3d.npz not found" in nbformat.read(nb, as_version=4).cells[0].source


@pytest.mark.parametrize("linked", [False, True])
def test_fetch_finds_the_shared_adrenal_file_and_rejects_unknown_items(medmnist_root, linked, tmp_path):
    """Also through a symbolic link to the data folder (../shared is one on some machines)."""
    root = medmnist_root
    if linked:
        root = tmp_path / "linked"
        root.symlink_to(medmnist_root.resolve(), target_is_directory=True)
    found = steps.fetch("medmnist-adrenal-28", download=False, root=str(root))
    assert found["status"] == "ok" and Path(found["where"]).samefile(medmnist_root / "adrenalmnist3d.npz")
    with pytest.raises(SystemExit, match="unknown fetch item"):
        steps.fetch("kaggle-x", download=False)


def test_imagenet_weights_are_found_in_the_cache_or_named_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    missing = steps.fetch("imagenet-resnet18", download=False)
    assert missing["status"] == "missing" and "resnet18-f37072fd.pth not found" in missing["error"]
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(b"x")
    assert steps.fetch("imagenet-resnet18", download=False)["status"] == "ok"


# -- what the Snakefile builds its graph with ------------------------------------------------------------
def test_snakemake_config_strings_get_their_yaml_types_back():
    """`--config seeds=[0,1] 'defaults={epochs: 2, lr: 1e-3}'` reaches the Snakefile as strings."""
    raw = {
        "seeds": ["0", "1"],
        "defaults": {
            "epochs": "2",
            "lr": "1e-3",
            "amp": "false",
            "weights": "null",
            "dataset": "nifti:scans.csv",
            "backbone": "resnet18",
        },
        "datasets": {"myct": {"dataset_options": {"window": ["-150", "250.5"]}}},
        "results": "results/x",
    }
    assert steps.typed(raw) == {
        "seeds": [0, 1],
        "defaults": {
            "epochs": 2,
            "lr": 1e-3,
            "amp": False,
            "weights": None,
            "dataset": "nifti:scans.csv",
            "backbone": "resnet18",
        },
        "datasets": {"myct": {"dataset_options": {"window": [-150, 250.5]}}},
        "results": "results/x",
    }


def test_fetch_items_name_what_a_run_downloads(tmp_path):
    p = tiny(tmp_path, defaults={"weights": "imagenet"})
    assert steps.fetch_items(p.run("organ-3d-s0").config) == ["medmnist-organ-28", "imagenet-resnet18"]
    assert steps.fetch_items(RunConfig(dataset="synthetic", weights=None)) == []
    # timm weights come from a local file: nothing to fetch; such a run fails alone, saying how to get one
    assert steps.fetch_items(RunConfig(dataset="synthetic", backbone="timm:convnext_atto")) == []


def test_bench_settings_become_the_study_bench_arguments(tmp_path):
    p = tiny(tmp_path, bench={"sizes": [16, "8x16x16"], "repeats": 1, "in_process": True, "no_inference": True})
    assert steps.bench_args(p, "t.json") == [
        "bench",
        "--table2",
        "--methods",
        "3d",
        "attention",
        "--json",
        "t.json",
        "--sizes",
        "16",
        "8x16x16",
        "--repeats",
        "1",
        "--in-process",
        "--no-inference",
    ]
    with pytest.raises(ProfileError, match="unknown bench setting.*size.*valid: sizes"):
        tiny(tmp_path, bench={"size": [16]})
    args = build_parser().parse_args(steps.bench_args(load_profile("smoke", start=REPO), "t.json"))
    assert args.table2 and args.sizes == ["16"] and args.in_process
