"""Profiles (the grid written once) and result collection, with fake result files: no training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest
import yaml

from lib25d.run import RunConfig
from study import published
from study import results as R
from study import tables as T
from study.profiles import NOTEBOOKS, Profile, ProfileError, from_dict, list_profiles, load_profile, run_id, summary

REPO = Path(__file__).resolve().parents[1]
SMALL = {
    "profile": "tiny",
    "defaults": {"epochs": 2, "weights": None},
    "datasets": {"adrenal": {"dataset_options": {"subset": 8}}, "organ": {}},
    "seeds": [0, 1],
    "table1": ["3d", "attention"],
    "table3": ["attention", "mean"],
}


def tiny(tmp_path: Path, **changes) -> Profile:
    return from_dict({**SMALL, "results": str(tmp_path / "results"), **changes}, root=tmp_path)


def fake_result(profile, run, auc: float, acc: float = 0.7, predictions: dict | None = None) -> None:
    """A result.json with the fields the study layer reads (what lib25d.run.train writes)."""
    folder = profile.run_dir(run.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    history = [{"epoch": 1, "phase": "warm-up", "seconds": 2.0}, {"epoch": 2, "phase": "full", "seconds": 4.0}]
    result = {
        "config": run.config.to_dict(),
        "data": {
            "identity": {"dataset": "adrenalmnist3d", "size": 28, "subset": 8},
            "samples": {"train": 8, "val": 8, "test": 8},
        },
        "metrics": {
            "final": {"epoch": 2, "test": {"auc": auc, "acc": acc, "loss": 0.5}},
            "best_val": {"epoch": 1, "test": {"auc": auc - 0.1, "acc": acc, "loss": 0.6}},
        },
        "history": history,
        "timing": {"mean_epoch_seconds": 3.0, "mean_full_epoch_seconds": 4.0, "total_train_seconds": 6.0},
        "memory": {"bytes": 3 * 2**30, "kind": "process_peak_rss"},
        "parameters": {"total": 12_000_000},
        "environment": {
            "device": "cpu (x86_64, 1 threads)",
            "git": {"revision": "abc123def456", "dirty": False},
            "versions": {"torch": "2.14.1"},
        },
        "started": "2026-01-01T00:00:00+00:00",
        "finished": "2026-01-01T00:01:00+00:00",
        **({"predictions": predictions} if predictions else {}),
    }
    (folder / R.RESULT).write_text(json.dumps(result))
    (folder / R.STATUS).write_text(json.dumps({"run_id": run.run_id, "status": "ok", "exit_code": 0}))


# -- profiles ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["smoke", "cpu", "paper"])
def test_repository_profiles_load_and_make_valid_runs(name):
    profile = load_profile(name, start=REPO)
    runs = profile.runs()
    assert runs and len({r.run_id for r in runs}) == len(runs)
    assert profile.results == (REPO / "results" / name).resolve()
    assert all(isinstance(r.config, RunConfig) for r in runs)
    assert set(profile.table1) == {"3d", "acs", "attention"}
    assert set(profile.table3) == {"attention", "mean", "max", "lstm", "transformer", "gated", "spatial"}


def test_profiles_match_the_issue():
    assert list_profiles(REPO / "config") == ["cpu", "paper", "smoke"]
    smoke, paper = load_profile("smoke", start=REPO), load_profile("paper", start=REPO)
    assert set(smoke.datasets) == {"synthetic", "adrenal"} and all(r.config.weights is None for r in smoke.runs())
    assert list(paper.datasets) == ["organ", "nodule", "fracture", "adrenal", "vessel", "synapse"]
    assert len(paper.runs()) == 6 * 9 * 5  # the paper's seven methods, gated and spatial
    assert {r.config.epochs for r in paper.runs()} == {50} and {r.config.weights for r in paper.runs()} == {"imagenet"}
    cpu = load_profile("cpu", start=REPO)
    assert {"organ", "nodule", "fracture", "adrenal", "vessel", "synapse"} <= set(cpu.datasets) and len(cpu.seeds) == 3
    medmnist = [r for r in cpu.runs() if r.label != "synthetic"]  # #12: full splits, never a subset
    assert all(not (r.config.dataset_options or {}).get("subset") for r in medmnist)
    assert all(r.config.batch_size == 64 and r.config.warmup_epochs == 3 for r in medmnist)
    assert len(cpu.runs(methods=cpu.table1)) == 7 * 3 * 3 and cpu.table3_seeds == [0]
    # Figure 3 explains the synthetic runs (masks) and tests deletion on real Adrenal attention runs
    assert (
        smoke.notebooks["fig3"]["dataset"] == "synthetic" and smoke.notebooks["fig3"]["deletion_dataset"] == "adrenal"
    )
    assert paper.notebooks["fig3"]["dataset"] == "adrenal"


def test_run_ids_settings_and_filters(tmp_path):
    p = tiny(tmp_path)
    assert [r.run_id for r in p.runs(datasets=["adrenal"], seeds=[0])] == [
        "adrenal-3d-s0",
        "adrenal-attention-s0",
        "adrenal-mean-s0",
    ]
    run = p.run("adrenal-mean-s1")
    assert run.config.method == "mean" and run.config.seed == 1 and run.config.dataset == "adrenal"
    assert run.config.dataset_options == {"subset": 8} and run.config.epochs == 2 and run.config.weights is None
    assert len(p.runs(methods=p.table1)) == 2 * 2 * 2 and len(p.runs(methods=p.table3)) == 2 * 2 * 2
    assert run_id("adrenal", "3d", 4) == "adrenal-3d-s4"


def test_dataset_options_merge_and_label_names_the_run(tmp_path):
    p = tiny(
        tmp_path,
        defaults={"dataset_options": {"subset": 16}, "weights": None},
        datasets={"mine": {"dataset": "synthetic", "size": 16, "dataset_options": {"n_train": 8}}},
    )
    config = p.runs()[0].config
    assert p.runs()[0].run_id.startswith("mine-")
    assert config.dataset == "synthetic" and config.dataset_options == {"subset": 16, "n_train": 8}


@pytest.mark.parametrize(
    "values, words",
    [
        ({"profil": "x"}, ["profil", "valid:", "datasets"]),
        ({"defaults": {"epoch": 3}}, ["epoch", "valid:", "epochs"]),
        ({"table1": ["3d", "unet"]}, ["unet", "valid:", "attention"]),
        ({"datasets": {"my-data": {}}}, ["my-data", "letters"]),
        ({"notebooks": {"table9": {}}}, ["table9", "valid:", "fig3"]),
        ({"seeds": []}, ["seeds"]),
    ],
)
def test_profile_errors_name_the_problem_and_the_fix(tmp_path, values, words):
    with pytest.raises(ProfileError) as err:
        tiny(tmp_path, **values)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(ProfileError, match="valid: cpu, paper, smoke"):
        load_profile("gpu", start=REPO)


def test_overrides_and_resolved_profile_round_trip(tmp_path):
    p = load_profile("smoke", overrides={"seeds": [0, 1], "results": str(tmp_path / "r")}, start=REPO)
    assert p.seeds == [0, 1] and p.results == tmp_path / "r"
    again = load_profile(p.save(tmp_path / "r" / "profile.yaml"))
    assert again.to_dict() == p.to_dict()


# -- notebooks: parameters documented, settings valid -----------------------------------------------
@pytest.mark.parametrize("name", ["run", *NOTEBOOKS])
def test_notebooks_have_typed_commented_parameters(name):
    path = REPO / "notebooks" / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    params = papermill.inspect_notebook(str(path))
    assert params, f"{name}: no parameters found by papermill"
    lines = [x for x in tagged[0].source.splitlines() if x.strip() and not x.startswith(("from ", "import "))]
    assert len(params) == len(lines), f"{name}: some parameter lines are not understood by papermill"
    for p in params.values():
        assert p["inferred_type_name"] != "None" and p["help"], f"{name}: {p['name']} needs a type and a comment"
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        f"{name}: commit notebooks without outputs"
    )
    if name != "run":
        assert "profile" in params


@pytest.mark.parametrize("name", ["smoke", "cpu", "paper"])
def test_profile_notebook_settings_are_notebook_parameters(name):
    profile = load_profile(name, start=REPO)
    for notebook, settings in profile.notebooks.items():
        params = papermill.inspect_notebook(str(REPO / "notebooks" / f"{notebook}.ipynb"))
        assert set(settings) <= set(params), f"{name}: {notebook} has no parameter(s) {set(settings) - set(params)}"


def test_run_notebook_takes_the_runconfig_fields_flat():
    """The run notebook's parameters are RunConfig's fields (documented once, in lib25d.run.config), then where
    the run writes and its threads: what the Snakefile passes."""
    params = papermill.inspect_notebook(str(REPO / "notebooks" / "run.ipynb"))
    assert set(params) == set(RunConfig.__dataclass_fields__) | {"out", "threads", "run_id"}
    assert RunConfig.from_dict({k: eval(params[k]["default"]) for k in RunConfig.__dataclass_fields__}) == RunConfig()


# -- results: one row per expected run ------------------------------------------------------------
def test_collect_has_a_row_per_expected_run_with_status_and_reason(tmp_path):
    p = tiny(tmp_path)
    runs = {r.run_id: r for r in p.runs()}
    fake_result(p, runs["adrenal-attention-s0"], 0.80)
    fake_result(p, runs["adrenal-attention-s1"], 0.90)
    fake_result(p, runs["adrenal-3d-s0"], 0.70)
    failed = p.run_dir("organ-3d-s0")
    failed.mkdir(parents=True)
    (failed / R.STATUS).write_text(
        json.dumps(
            {
                "status": "failed",
                "error": "FileNotFoundError: organmnist3d.npz not found in /data: point LIB25D_DATA_ROOT at it",
                "reason": "organmnist3d.npz not found in /data",
            }
        )
    )
    frame = R.collect(p)
    assert len(frame) == len(p.runs()) and list(frame.run_id) == [r.run_id for r in p.runs()]
    by_id = frame.set_index("run_id")
    assert by_id.loc["adrenal-attention-s0", "status"] == "ok" and by_id.loc["adrenal-attention-s0", "auc"] == 0.8
    assert by_id.loc["organ-3d-s0", "status"] == "failed"
    assert by_id.loc["organ-3d-s0", "reason"] == "organmnist3d.npz not found in /data"
    assert by_id.loc["organ-attention-s0", "status"] == "missing"
    assert R.collect(p, which="best").set_index("run_id").loc["adrenal-attention-s0", "auc"] == pytest.approx(0.7)


def test_summary_and_comparison_show_missing_cells_and_paper_numbers(tmp_path):
    p = tiny(tmp_path)
    runs = {r.run_id: r for r in p.runs()}
    fake_result(p, runs["adrenal-attention-s0"], 0.80, 0.70)
    fake_result(p, runs["adrenal-attention-s1"], 0.90, 0.80)
    fake_result(p, runs["adrenal-3d-s0"], 0.70)
    folder = p.run_dir("organ-3d-s0")
    folder.mkdir(parents=True)
    (folder / R.STATUS).write_text(json.dumps({"status": "failed", "error": "exit code 1", "reason": "exit code 1"}))
    frame = R.collect(p, p.runs(methods=p.table1))
    summary = T.summarise(frame)
    table = T.compare(summary, "table1").reset_index()
    assert len(table) == 4 and set(zip(table.dataset, table.method)) == {
        (d, m) for d in ("adrenal", "organ") for m in ("3d", "attention")
    }
    row = table.set_index(["dataset", "method"])
    assert row.loc[("adrenal", "attention"), "AUROC ours"] == "85.0 ± 7.1"
    assert row.loc[("adrenal", "attention"), "AUROC paper"] == "80.9"
    assert row.loc[("adrenal", "3d"), "AUROC ours"].startswith("70.0 (1/2 runs; not run yet")
    assert row.loc[("organ", "3d"), "AUROC ours"].startswith("missing (")
    assert row.loc[("organ", "attention"), "ACC ours"] == "missing"
    assert row.loc[("organ", "3d"), "AUROC paper"] == "96.5"
    assert row.loc[("adrenal", "attention"), "AUROC v2 scratch"] == "71.8"  # MedMNIST v2's 2.5D row
    assert row.loc[("adrenal", "3d"), "ACC v2 scratch"] == "72.1"
    html = T.to_html(table)
    assert html.count("<tr") == 5 and "missing (" in html and html.startswith("<div")
    assert "adrenal: attention (85.0), paper attention (80.9)" in T.winners(summary, p.table1)
    assert set(T.gaps(frame).status) == {"failed", "missing"}


def test_study_text_differs_exactly_where_a_number_does(tmp_path, capsys):
    """The text two results folders are compared by (a laptop's and a cluster's): full precision, times left out."""
    from study.__main__ import main

    texts = []
    for name, auc, started in (("a", 0.8, "2026-01-01"), ("b", 0.8, "2027-02-02"), ("c", 0.8 + 1e-12, "2026-01-01")):
        p = tiny(tmp_path / name)
        for run in p.runs(datasets=["adrenal"]):
            fake_result(p, run, auc, predictions={"labels": [0, 1], "final": [0.25, 0.75]})
            result = json.loads((p.run_dir(run.run_id) / R.RESULT).read_text())
            (p.run_dir(run.run_id) / R.RESULT).write_text(json.dumps({**result, "started": started}))
        texts.append(T.study_text(p))
    assert texts[0] == texts[1] and texts[0] != texts[2]  # another start time: same; 1e-12 of AUROC: not
    assert "# table1: runs (final model)" in texts[0] and "# table3: as in the book" in texts[0]
    assert "adrenal-attention-s0,ok,,0.8," in texts[0] and "organ-attention-s0,missing,not run yet" in texts[0]
    p = tiny(tmp_path / "a")
    p.save(tmp_path / "a.yaml")
    assert main(["profile", "tables", str(tmp_path / "a.yaml")]) == 0 and capsys.readouterr().out == texts[0]


def test_cells_carry_an_interval_and_chance_is_marked_never_a_winner(tmp_path):
    """The interval is a bootstrap over test volumes of the seed-mean AUROC: a ranking that
    knows the labels excludes 0.5, a coin flip does not and is marked, not presented."""
    p = tiny(tmp_path)
    runs = {r.run_id: r for r in p.runs()}
    labels = [0, 1] * 30
    rng = np.random.default_rng(0)
    good = [[0.2 + 0.6 * y + 0.3 * rng.random()] for y in labels]
    fake_result(p, runs["adrenal-attention-s0"], 0.9, predictions={"labels": labels, "final": good, "best_val": good})
    fake_result(p, runs["adrenal-attention-s1"], 0.9, predictions={"labels": labels, "final": good, "best_val": good})
    coin = [[rng.random()] for _ in labels]
    fake_result(p, runs["adrenal-3d-s0"], 0.95, predictions={"labels": labels, "final": coin, "best_val": coin})
    inverted = [[1 - s[0]] for s in good]  # a ranking that learned the labels backwards
    fake_result(
        p, runs["organ-attention-s0"], 0.1, predictions={"labels": labels, "final": inverted, "best_val": inverted}
    )
    summary = T.summarise(R.collect(p, p.runs(methods=p.table1)))
    row = summary.set_index(["dataset", "method"])
    assert row.loc[("adrenal", "attention"), "auc_lo"] > 0.5 and row.loc[("adrenal", "attention"), "result"]
    assert not row.loc[("adrenal", "3d"), "result"] and not row.loc[("organ", "attention"), "result"]
    table = T.compare(summary, "table1")
    assert re.fullmatch(r"90\.0 ± 0\.0 \[\d+\.\d, \d+\.\d\]", table.loc[("adrenal", "attention"), "AUROC ours"])
    assert table.loc[("adrenal", "3d"), "AUROC ours"].startswith("not distinguishable from chance (95.0 [")
    assert table.loc[("organ", "attention"), "AUROC ours"].startswith("below chance (10.0 [")
    assert "[" not in table.loc[("adrenal", "3d"), "ACC ours"]  # the interval is the AUROC's
    assert table.loc[("organ", "3d"), "AUROC ours"] == "missing (not run yet)"
    assert table.loc[("organ", "3d"), "ACC ours"] == "missing"  # the reason is said once, in the first column
    words = T.winners(summary, p.table1)
    assert "adrenal: attention (90.0)" in words and "organ: none above chance" in words


def test_table3_seeds_trim_the_reducers_only(tmp_path):
    p = tiny(tmp_path, seeds=[0, 1, 2], table3_seeds=[0], table1=["3d", "attention"], table3=["attention", "mean"])
    ids = {r.run_id for r in p.runs(datasets=["adrenal"])}
    assert ids == {f"adrenal-{m}-s{s}" for m in ("3d", "attention") for s in (0, 1, 2)} | {"adrenal-mean-s0"}
    table3 = p.runs(methods=p.table3, seeds=p.table3_seeds)  # what the Table 3 notebook reads
    assert {r.run_id for r in table3 if r.label == "adrenal"} == {"adrenal-attention-s0", "adrenal-mean-s0"}
    with pytest.raises(ProfileError, match="table3_seeds"):
        tiny(tmp_path, seeds=[0], table3_seeds=[3])


def test_every_seed_keeps_chosen_methods_on_every_seed_in_table3(tmp_path):
    """cpu: Table 3's reducers on seed 0, but spatial (beyond the paper) and attention on all three seeds."""
    p = tiny(
        tmp_path, seeds=[0, 1, 2], table3_seeds=[0], table3=["attention", "mean", "spatial"], every_seed=["spatial"]
    )
    ids = {r.run_id for r in p.table3_runs() if r.label == "adrenal"}
    assert ids == {"adrenal-attention-s0", "adrenal-mean-s0"} | {f"adrenal-spatial-s{s}" for s in (0, 1, 2)}
    assert "spatial: every seed" in summary(p)["seeds"]
    assert p.to_dict()["every_seed"] == ["spatial"] and "every_seed" not in tiny(tmp_path).to_dict()
    with pytest.raises(ProfileError, match="every_seed names method\\(s\\) gated that table3 does not list"):
        tiny(tmp_path, every_seed=["gated"])
    with pytest.raises(ProfileError, match="unknown method\\(s\\) spatiall"):
        tiny(tmp_path, table3=["attention"], every_seed=["spatiall"])
    cpu = load_profile("cpu", start=REPO)
    assert {r.seed for r in cpu.table3_runs() if r.method in ("attention", "spatial")} == {0, 1, 2}


def test_gated_is_marked_beyond_the_paper_in_table3(tmp_path):
    p = tiny(tmp_path, table3=["attention", "gated"], seeds=[0])
    for run in p.runs(methods=p.table3, datasets=["adrenal"]):
        fake_result(p, run, 0.8)
    table = T.compare(T.summarise(R.collect(p, p.runs(methods=p.table3))), "table3")
    assert table.loc[("adrenal", "gated"), "AUROC paper"] == published.BEYOND == "beyond the paper"
    assert table.loc[("adrenal", "gated"), "ACC paper"] == "beyond the paper"
    assert table.loc[("adrenal", "attention"), "AUROC paper"] == "80.9"  # the paper's appendix number
    assert (
        table.loc[("adrenal", "gated"), "AUROC v2 scratch"] == table.loc[("adrenal", "attention"), "AUROC v2 scratch"]
    )


def test_setting_line_reports_what_the_runs_did(tmp_path):
    """The workflow retrains a run whose settings changed; a table read in between reports what was run."""
    p = tiny(tmp_path)
    fake_result(p, p.run("adrenal-attention-s0"), 0.8)
    changed = tiny(tmp_path, defaults={"epochs": 3, "weights": None})
    row = R.collect(changed).set_index("run_id").loc["adrenal-attention-s0"]
    assert row.status == "ok" and row.epochs == 2 and set(R.collect(changed).epochs) == {2, 3}


def test_setting_line_names_profile_data_weights_device(tmp_path):
    p = tiny(tmp_path)
    fake_result(p, p.run("adrenal-attention-s0"), 0.8)
    text = T.setting(p, R.collect(p))
    for words in (
        "Profile tiny",
        "adrenalmnist3d 28, subset 8 (8/8/8)",
        "none (random init)",
        "cpu (x86_64",
        "epochs: 2",
        "seeds: 0, 1",
        "runs finished: 1 of 12",
    ):
        assert words in text, text


def test_compute_table_pools_full_epochs_and_keeps_missing_rows(tmp_path):
    p = tiny(tmp_path)
    fake_result(p, p.run("adrenal-attention-s0"), 0.8)
    table = T.compute(R.collect(p, p.runs(methods=p.table1))).set_index(["dataset", "method"])
    assert table.loc[("adrenal", "attention"), "s / epoch"] == "4.0"
    assert table.loc[("adrenal", "attention"), "params (M)"] == "12.0"
    assert table.loc[("organ", "3d"), "s / epoch"].startswith("missing")


def test_paper_numbers_cover_tables_1_2_3_and_medmnist_v2():
    paper = published.paper_results()
    assert set(paper.table) == {"table1", "table2", "table3", "medmnist_v2"}
    v2 = paper[paper.table == "medmnist_v2"]
    assert len(v2) == 3 * 6 * 2 and set(v2.method) == {"2.5d", "3d", "acs"} and v2.value.between(0, 1).all()
    t1 = paper[
        (paper.table == "table1") & paper.dataset.isin(["organ", "nodule", "fracture", "adrenal", "vessel", "synapse"])
    ]
    assert len(t1) == 3 * 6 * 2
    assert len(paper[paper.table == "table3"]) == 5 * 6 * 2
    value = paper.set_index(["table", "method", "dataset", "metric"])["value"]
    assert value[("table1", "attention", "synapse", "auc")] == pytest.approx(0.743)
    assert value[("table3", "mean", "adrenal", "auc")] == pytest.approx(0.870)
    assert value[("table2", "3d", "pdac", "params_millions")] == pytest.approx(33.2)
    assert value[("medmnist_v2", "acs", "vessel", "auc")] == pytest.approx(0.930)  # as in the project's notes


def test_environment_yml_follows_pyproject():
    """Conda users get Python from conda and every other package from pyproject.toml's extras."""
    import tomllib

    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    env = yaml.safe_load((REPO / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert Version(python.split("=", 1)[1]) in SpecifierSet(project["requires-python"])
    assert "-e .[dev]" in pip and "dev" in project["optional-dependencies"]


def test_reference_numbers_ship_with_the_package():
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["study"]
    assert "data/*.csv" in data and (REPO / "study" / "data" / "paper_results.csv").is_file()
