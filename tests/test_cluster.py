"""The smoke study through a real SLURM scheduler, and the same numbers as on one machine.

workflow/cluster/local-slurm.sh brings up a one-node cluster (munged, slurmctld, slurmd); Snakemake
submits every run and aggregate notebook with ``--executor slurm`` (workflow/profiles/slurm, then
workflow/profiles/local-slurm for this cluster) in the copy of the checkout where conftest's ``study``
ran the same profile locally; the book builds, and Tables 1 and 3 hold the local run's numbers exactly
(same seeds, same threads); then the cluster goes down (unless it was up before the test).

Where the cluster cannot start (not root, or no Slurm/MUNGE and no apt-get to install them) the test
skips and says why; with LIB25D_REQUIRE_CLUSTER=1, as CI's .ci/run sets it, it fails instead, so CI
cannot pass without it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest
from studyrun import REPO, Page, html_dir, snakemake

from study.profiles import NOTEBOOKS, load_profile
from study.tables import TABLE_RUNS, study_runs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
REQUIRE = "LIB25D_REQUIRE_CLUSTER"
SCRIPT = REPO / "workflow" / "cluster" / "local-slurm.sh"
SLURM_RESULTS = "results/smoke-slurm"


def unavailable() -> str | None:
    """Why the local cluster cannot start on this machine; None where it can."""
    if not sys.platform.startswith("linux"):
        return f"workflow/cluster/local-slurm.sh needs Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return "not root: slurmd starts jobs as their users, so the local cluster needs root"
    installed = all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged"))
    if not installed and not shutil.which("apt-get"):
        return "Slurm and MUNGE are not installed and there is no apt-get to install them"
    return None


def skip_or_fail(why: str | None, required: bool) -> None:
    """Skip a test the machine cannot run, saying why; fail instead where the run requires it."""
    if why and required:
        pytest.fail(f"{REQUIRE}=1 but the local SLURM cluster cannot run here: {why}", pytrace=False)
    if why:
        pytest.skip(f"{why} (set {REQUIRE}=1 to make this a failure)")


def test_skip_turns_into_a_failure_where_the_cluster_is_required():
    with pytest.raises(pytest.fail.Exception, match="cannot run here: not root"):
        skip_or_fail("not root", required=True)
    with pytest.raises(pytest.skip.Exception, match="not root"):
        skip_or_fail("not root", required=False)
    skip_or_fail(None, required=True)  # nothing to say: the test runs


class Cluster(NamedTuple):
    dir: Path  # its scratch folder ($LIB25D_SLURM_DIR)
    env: dict[str, str]  # the study's environment, with SLURM_CONF


@pytest.fixture(scope="module")
def cluster(study):
    """The local cluster, up for this module: started here (and stopped after) unless it was up already."""
    skip_or_fail(unavailable(), os.environ.get(REQUIRE) == "1")
    was_up = subprocess.run([str(SCRIPT), "status"], capture_output=True, text=True).returncode == 0
    up = subprocess.run([str(SCRIPT), "up"], capture_output=True, text=True, timeout=900)
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    exported = subprocess.run([str(SCRIPT), "env"], capture_output=True, text=True, check=True).stdout
    conf = Path(exported.split("=", 1)[1].strip())  # export SLURM_CONF=...
    yield Cluster(conf.parent, {**study.env, "SLURM_CONF": str(conf)})
    if not was_up:
        down = subprocess.run([str(SCRIPT), "down"], capture_output=True, text=True, timeout=300)
        assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-2000:]


def test_the_script_refuses_in_one_line():
    done = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr == f"local-slurm.sh: usage: {SCRIPT} up|down|status|env (got 'start')\n"


def test_up_again_changes_nothing(cluster):
    pids = {p: p.read_text() for p in (cluster.dir / "run").glob("*.pid")}
    again = subprocess.run([str(SCRIPT), "up"], env=cluster.env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and re.search(r"\b(idle|mix|alloc)\b", again.stdout), again.stdout + again.stderr
    assert len(pids) == 2 and {p: p.read_text() for p in pids} == pids  # the same slurmctld and slurmd


@pytest.fixture(scope="module")
def slurm_study(study, cluster):
    """The smoke profile again, every job through sbatch, into its own results folder of the same copy."""
    done = snakemake(
        study.repo,
        "--configfile",
        "config/smoke.yaml",
        "--profile",
        "workflow/profiles/slurm",
        "--profile",
        "workflow/profiles/local-slurm",
        "--config",
        f"results={SLURM_RESULTS}",
        env=cluster.env,
        timeout=2100,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return load_profile(study.repo / "config" / "smoke.yaml", overrides={"results": SLURM_RESULTS})


def slurm_logs(repo: Path, rule: str) -> dict[str, list[Path]]:
    """SLURM job logs kept by the executor (slurm-keep-successful-logs), per wildcard value of one rule."""
    folder = repo / ".snakemake" / "slurm_logs" / f"rule_{rule}"
    return {
        (p.parent.name if p.parent != folder else ""): sorted(p.parent.glob("*.log")) for p in folder.rglob("*.log")
    }


def test_every_run_and_aggregate_notebook_was_a_slurm_job(study, slurm_study):
    runs, notebooks = slurm_logs(study.repo, "run"), slurm_logs(study.repo, "notebook")
    assert set(runs) == {r.run_id for r in slurm_study.runs()}, sorted(runs)
    assert set(notebooks) == set(NOTEBOOKS) - {"provenance"}, sorted(notebooks)
    assert slurm_logs(study.repo, "provenance") and slurm_logs(study.repo, "bench")
    for logs in [*runs.values(), *notebooks.values()]:
        assert all(log.stem.isdigit() for log in logs), logs  # named by their SLURM job id
    # inside the job the rule ran with the interpreter that started Snakemake (the project's .venv)
    assert f"{sys.executable} -m papermill notebooks/run.ipynb" in runs["adrenal-attention-s0"][-1].read_text()
    assert (slurm_study.results / "book" / "_build" / "html" / "index.html").is_file()


@pytest.mark.parametrize("table", ["table1", "table3"])
def test_tables_hold_the_local_runs_numbers(study, slurm_study, table):
    """Every run's test metrics and predictions at full precision, then the book's table as rendered."""
    local, cluster = study_runs(study.profile)[table], study_runs(slurm_study)[table]
    assert len(local) and (local.status == "ok").all(), local  # numbers to compare, not gaps
    pd.testing.assert_frame_equal(local, cluster, check_exact=True)
    rows = [Page(html_dir(p) / "book" / f"{table}.html").rows for p in (study.profile, slurm_study)]
    assert {(r.label, r.method) for r in TABLE_RUNS[table](study.profile)} <= {tuple(r[:2]) for r in rows[0]}
    assert rows[0] == rows[1]
