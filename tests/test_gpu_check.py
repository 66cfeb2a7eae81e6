"""``make gpu-check`` (workflow/gpu_check.py) and ``make wheels`` (workflow/gpu_wheels.py): the
reduced check runs here on the CPU through the same steps as on a GPU and writes both reports;
each refusal is one line; the runner reports every step, a failing or hanging one included; the
wheel set is what the GPU machine lacks; the tests' device switch defaults to CPU float64."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
import gpu_check  # noqa: E402
import gpu_wheels  # noqa: E402
from numerics import Numerics, from_environment  # noqa: E402
from studyrun import copy_checkout  # noqa: E402

from lib25d.models import METHODS  # noqa: E402


def refusal(capsys, argv: list[str]) -> str:
    """gpu_check's refusal for ``argv``: exit code 2 and exactly one line on stderr."""
    assert gpu_check.main(argv) == 2
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("gpu-check refused: ")
    return err


def test_refusals_are_one_line(tmp_path, capsys, medmnist_root, monkeypatch):
    base = ["--out", str(tmp_path / "out"), "--device", "cpu"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "adrenalmnist3d.npz, adrenalmnist3d_64.npz" in refusal(capsys, [*base, "--data", str(empty)])
    ok = [*base, "--data", str(medmnist_root)]
    assert "no wheels in" in refusal(capsys, [*ok, "--wheels", str(tmp_path / "none")])
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("someone's files")
    assert "holds files of something else" in refusal(capsys, [*ok, "--no-install", "--work", str(tmp_path / "theirs")])
    if not torch.cuda.is_available():
        assert "no CUDA device" in refusal(capsys, [*base, "--device", "cuda", "--data", str(medmnist_root)])
    monkeypatch.setattr(gpu_check, "requirement_of", lambda name: f"{name}>=99")
    assert "older than lib25d supports (torch>=99)" in refusal(capsys, [*ok, "--no-install"])


def fake_wheel(folder: Path, name: str, requires: list[str]) -> Path:
    """A minimal valid wheel of an empty package ``name`` 0.1 with these requirements."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    files = {
        f"{name}/__init__.py": "",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: {}\nVersion: 0.1\n{}".format(
            name, "".join(f"Requires-Dist: {r}\n" for r in requires)
        ),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as z:
        for arcname, text in files.items():
            z.writestr(arcname, text)
    return path


def test_wheels_lacking_a_requirement_are_refused_in_one_line(tmp_path, capsys, medmnist_root):
    wheels = tmp_path / "wheels"
    fake_wheel(
        wheels,
        "lib25d_probe",
        ["numpy>=1", "not-a-package-lib25d>=1", "pulp>=2", "opencv-python", "colorama; sys_platform == 'win32'"],
    )
    err = refusal(
        capsys,
        [
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--data",
            str(medmnist_root),
            "--wheels",
            str(wheels),
            "--target",
            str(tmp_path / "site"),
        ],
    )
    assert "lacks a package: lib25d_probe needs not-a-package-lib25d>=1, which is missing" in err
    assert "(and" not in err  # numpy is here, pulp is left out on purpose, the rest does not apply here
    assert (tmp_path / "site" / "lib25d_probe" / "__init__.py").is_file()  # installed into the target only
    fake_wheel(wheels, "lib25d_probe2", [])
    (wheels / "lib25d_probe2-0.1-py3-none-any.whl").rename(wheels / "lib25d_probe-0.2-py3-none-any.whl")
    with pytest.raises(gpu_wheels.Refusal, match="two versions of lib25d-probe"):
        gpu_wheels.install(wheels, tmp_path / "site")


def test_the_wheel_set_is_what_the_machine_lacks():
    box = gpu_wheels.box_packages()
    assert box["torch"] == "2.11.0" and box["numpy"] == "2.5.2" and "pytest" in box and box["pytest"] is None
    reqs = gpu_wheels.requirements()
    names = {gpu_wheels.normalize(Requirement(r).name) for r in reqs}
    assert {"torch", "medmnist", "acsconv", "papermill", "snakemake", "pytest", "myst-nb"} <= names
    assert not names & {"lib25d", "jupyter-book", "snakemake-executor-plugin-slurm"}
    with_deps, alone = gpu_wheels.split_no_deps(reqs)
    assert [r.startswith("myst-nb") for r in alone] == [True] and not any(r.startswith("myst-nb") for r in with_deps)
    resolved = [
        {"metadata": {"name": n, "version": v, "requires_dist": d}}
        for n, v, d in [
            ("snakemake", "9.0", ["packaging<26,>=24", "pulp<3.4", "jinja2>=3", "pyyaml; python_version < '3.8'"]),
            ("packaging", "25.0", []),
            ("jinja2", "3.1", []),
            ("pulp", "3.3", []),
            ("numpy", "2.5.2", []),
            ("grad_cam", "1.5.7", ["opencv-python", "numpy<3"]),
            ("opencv-python", "5.0", []),
            ("pyyaml", "6.0", []),
        ]
    ]
    box = {"packaging": None, "jinja2": None, "numpy": "2.5.2", "opencv-python-headless": None, "pyyaml": None}
    # packaging: capped by a carried package, version there unknown; numpy: capped but its version is known
    assert gpu_wheels.lacking(resolved, box) == [("grad_cam", "1.5.7"), ("packaging", "25.0"), ("snakemake", "9.0")]


def test_the_runner_reports_every_step(tmp_path):
    """A failing step, a hanging one and one past the budget are reported; the others still run."""
    py = sys.executable
    steps = [
        gpu_check.Step("fails", [py, "-c", "print('boom'); raise SystemExit(3)"], timeout=30),
        gpu_check.Step("hangs", [py, "-c", "import time; time.sleep(60)"], timeout=1),
        gpu_check.Step("passes", [py, "-c", "print('fine')"], timeout=30, figures=lambda rc: (None, {"answer": 42})),
    ]
    out = gpu_check.run_all(steps, {"PATH": ""}, tmp_path, jobs=2, budget=60)
    assert [o["name"] for o in out] == ["fails", "hangs", "passes"]
    assert [o["status"] for o in out] == ["failed", "failed", "ok"]
    assert out[0]["reason"] == "exit code 3" and out[0]["log_tail"] == ["boom"]
    assert out[1]["reason"] == "timed out after 1 s" and out[1]["seconds"] < 30
    assert out[2]["figures"] == {"answer": 42} and "log_tail" not in out[2]
    late = gpu_check.run_all(steps[2:], {"PATH": ""}, tmp_path, jobs=1, budget=0)
    assert late[0]["status"] == "failed" and late[0]["reason"].startswith("not started")


def test_the_device_switch_defaults_to_cpu_float64():
    numerics = from_environment({})
    assert numerics == Numerics(torch.device("cpu"), "float64") and numerics.default
    assert numerics.run_settings() == {"device": "cpu"} and numerics.dtype == torch.float64
    truth = torch.tensor([1.0, -2.0, 0.0, 3.0], dtype=torch.float64)
    off = truth + torch.tensor([0.0, 0.0, 1e-3, 0.0], dtype=torch.float64)  # 0.03% of the norm, elementwise far
    with pytest.raises(AssertionError, match="b: "):  # float64: the written tolerance, tensor by tensor
        numerics.close_all([("a", truth, truth), ("b", off, truth)], rtol=1e-9, atol=1e-12)
    bf16 = from_environment({"LIB25D_TEST_PRECISION": "bf16"})
    assert bf16.run_settings() == {"device": "cpu", "bf16_cpu": True} and bf16.dtype == torch.float32
    bf16.close_all([("a", truth, truth), ("b", off, truth)], rtol=1e-9, atol=1e-12)  # within the norm-wise floor
    with pytest.raises(AssertionError, match="norm-wise relative error 0.2"):
        bf16.close(truth * 1.2, truth, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="not one of float64, float32, bf16"):
        from_environment({"LIB25D_TEST_PRECISION": "fp16"})
    with pytest.raises(ValueError, match="not a device"):
        from_environment({"LIB25D_TEST_DEVICE": "gpu"})


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_reduced_check_on_cpu_writes_both_reports(tmp_path_factory, medmnist_root):
    """The whole check, reduced, in a copy of the checkout: every step passes and both reports say so."""
    repo = copy_checkout(tmp_path_factory.mktemp("clone"), git=False)  # what a GPU box is given: no .git
    out = tmp_path_factory.mktemp("report")
    done = subprocess.run(
        [
            sys.executable,
            "workflow/gpu_check.py",
            "--out",
            str(out),
            "--data",
            str(medmnist_root),
            "--device",
            "cpu",
            "--reduced",
            "--no-install",
            "--jobs",
            "2",
            "--budget",
            "1000",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=1150,
    )
    report = json.loads((out / "gpu-check.json").read_text())
    failed = {s["name"]: (s["reason"], s.get("log_tail", [])[-8:]) for s in report["steps"] if s["status"] != "ok"}
    assert done.returncode == 0 and report["passed"] and not failed, (failed, done.stdout[-2000:], done.stderr[-2000:])
    assert report["schema"] == gpu_check.SCHEMA and report["mode"] == "reduced"
    assert report["environment"]["device"] == "cpu" and report["environment"]["torch"] == torch.__version__
    steps = {s["name"]: s for s in report["steps"]}
    expected = {
        "bench-table2",
        "bench-compare",
        "rehearsal-paper",
        "tests-float32",
        "tests-bf16",
        "train-64-attention",
        *(f"train-28-{m}" for m in METHODS),
    }
    assert set(steps) == expected
    for step in steps.values():
        assert step["seconds"] > 0 and step["figures"] and step["command"] and Path(step["log"]).is_file()
    for precision in ("float32", "bf16"):
        assert steps[f"tests-{precision}"]["figures"]["passed"] >= 4
        assert steps[f"tests-{precision}"]["figures"]["failed"] == 0
    assert 0 <= steps["train-28-acs"]["figures"]["test_auc"] <= 1
    assert steps["rehearsal-paper"]["figures"]["adrenal_runs_ok"] == "1/1"
    assert steps["rehearsal-paper"]["figures"]["other_runs_shown_missing"] == "5/5"  # five datasets not here
    assert set(steps["bench-table2"]["figures"]) == {
        f"{m}@{s}" for m in ("attention", "3d", "acs") for s in ("16", "10x16x16")
    }
    assert steps["bench-compare"]["figures"]["identical_predictions"] is True
    page = (out / "gpu-check.md").read_text()
    assert "**PASSED**" in page and f"{len(expected)}/{len(expected)} steps ok" in page
    for name in expected:
        assert f"| {name} | ok |" in page
