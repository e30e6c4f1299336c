"""A cohort's state is its own: the README's commands walked across demo, demo-rubrics and
demo-search (the real ``daydream`` command, a fresh data root, the offline simulator) with
template edits in between. Running or compiling one cohort never rewrites another's membership or
search record, orphans are only what no cohort's state names, and the walk ends with ``check``
clean."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DAYDREAM = [sys.executable, "-m", "pipeline.cli"]


def _project(tmp_path: Path) -> Path:
    d = tmp_path / "project"
    shutil.copytree(REPO / "data" / "1_raw", d / "data" / "1_raw")
    for spec in (REPO / "data" / "cohorts").glob("*/spec"):
        shutil.copytree(spec, d / "data" / "cohorts" / spec.parent.name / "spec")
    shutil.copy(REPO / "luigi.cfg", d / "luigi.cfg")
    return d


def daydream(project: Path, *args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DAYDREAM_DATA_ROOT", "LUIGI_CONFIG_PATH")}
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run([*DAYDREAM, *args], cwd=project, capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode in ok, (args, r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    return r


def membership(project: Path, cohort: str) -> set[tuple[str, str]]:
    with open(project / "data" / "cohorts" / cohort / "membership.csv", newline="") as fh:
        return {(r["stage"], r["gen_id"]) for r in csv.DictReader(fh)}


def cohort_state(project: Path, cohort: str) -> dict[str, bytes]:
    """The files that are a cohort's own state."""
    d = project / "data" / "cohorts" / cohort
    return {name: (d / name).read_bytes() for name in ("membership.csv", "manifest.json", "search.json")
            if (d / name).exists()}


def store(project: Path) -> set[tuple[str, str]]:
    gens = project / "data" / "gens"
    return {(st.name, g.name) for st in gens.iterdir() if st.is_dir() for g in st.iterdir()}


def cohorts_lists(project: Path) -> dict[tuple[str, str], list[str]]:
    gens = project / "data" / "gens"
    return {(st.name, g.name): json.loads((g / "metadata.json").read_text())["cohorts"]
            for st in gens.iterdir() if st.is_dir() for g in st.iterdir()}


def report_states(project: Path, cohort: str) -> dict[str, str]:
    with open(project / "data" / "cohorts" / cohort / "reports" / "generations.csv", newline="") as fh:
        return {r["gen_id"]: r["status"] for r in csv.DictReader(fh)}


def classifier_states(project: Path, cohorts: list[str]) -> dict[str, dict[str, str]]:
    """Per cohort, each generation's state as `daydream status` counts it (the one classifier, in
    a fresh process); blocked is the reports' pending."""
    code = ("import json, sys; from pipeline import config; from pipeline.run.generation import runtime, state_of;"
            "from pipeline.run.run_plan import membership; p = config.data_paths(); rt, memo = runtime(), {};"
            "print(json.dumps({c: {r['gen_id']: state_of(rt, r['stage'], r['gen_id'], memo).kind "
            "for r in membership(p, c)} for c in sys.argv[1:]}))")
    env = {k: v for k, v in os.environ.items() if k not in ("DAYDREAM_DATA_ROOT", "LUIGI_CONFIG_PATH")}
    r = subprocess.run([sys.executable, "-c", code, *cohorts], cwd=project, capture_output=True, text=True,
                       timeout=120, env=dict(env, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr
    return {c: {g: "pending" if k == "blocked" else k for g, k in states.items()}
            for c, states in json.loads(r.stdout).items()}


def check(project: Path) -> tuple[int, dict[str, int]]:
    r = daydream(project, "check", "--list", ok=(0, 1))
    kinds: dict[str, int] = {}
    for line in r.stdout.splitlines()[1:]:
        kind = line.split("\t")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return r.returncode, kinds


@pytest.mark.slow
def test_cohorts_never_damage_each_other(tmp_path):
    project = _project(tmp_path)
    for cohort in ("demo", "demo-rubrics", "demo-search"):
        daydream(project, "run", cohort)
    search_before = cohort_state(project, "demo-search")
    rubrics_before = cohort_state(project, "demo-rubrics")
    searched = membership(project, "demo-search")
    assert len(searched) > 405  # round 0 is 405 generations: the search went on from there
    # every generation's cohort list holds exactly the cohorts whose membership holds it
    lists = cohorts_lists(project)
    for cohort in ("demo", "demo-rubrics", "demo-search"):
        for key in membership(project, cohort):
            assert cohort in lists[key], (cohort, key)
    shared = membership(project, "demo") & searched
    assert shared, "demo and demo-search share drafts (the test's premise)"

    # a draft template both demo and demo-search use is edited; only demo runs
    template = project / "data" / "1_raw" / "templates" / "draft" / "essay-block-v1.txt"
    template.write_text(template.read_text() + "Write with care.\n")
    daydream(project, "run", "demo")
    assert cohort_state(project, "demo-search") == search_before
    assert cohort_state(project, "demo-rubrics") == rubrics_before
    assert all("demo-search" in cohorts_lists(project)[key] for key in searched)
    rc, kinds = check(project)
    assert rc == 1 and set(kinds) == {"stale"}, kinds  # demo-search is stale, not orphaned
    # one state everywhere: the reports (rebuilt by demo's run, for the site) say what the
    # classifier says, generation by generation; stale scores count in no mean
    cohorts = ["demo", "demo-rubrics", "demo-search"]
    for cohort, states in classifier_states(project, cohorts).items():
        assert report_states(project, cohort) == states, cohort
    assert set(report_states(project, "demo-search").values()) == {"done", "stale"}
    scores = list(csv.DictReader(open(project / "data" / "cohorts" / "demo-search" / "reports" / "scores.csv")))
    assert all(r["score"] == "" for r in scores if r["status"] == "stale")
    status = daydream(project, "status", "demo-search", ok=(1,))  # 1: something is not done
    assert "stale" in status.stdout

    # compiling the search cohort itself falls back to round 0 (its record is from another
    # catalog) but its search.json still names every round: nothing becomes an orphan
    daydream(project, "compile", "demo-search")
    assert (project / "data" / "cohorts" / "demo-search" / "search.json").read_bytes() == search_before["search.json"]
    assert "would remove 0 orphaned" in daydream(project, "purge", "--orphans").stdout

    # running it derives the search again over the regenerated scores; what the new search no
    # longer names (and nothing else does) is an orphan, and only that is purged
    daydream(project, "run", "demo-search")
    daydream(project, "run", "demo-rubrics")  # its essays' drafts were regenerated
    before = store(project)
    r = daydream(project, "purge", "--orphans", "--yes")
    removed = before - store(project)
    assert f"removed {len(removed)} orphaned" in r.stdout
    named = set().union(*(membership(project, c) for c in ("demo", "demo-rubrics", "demo-search")))
    assert not removed & named
    assert removed <= searched  # only generations of the earlier search path
    assert check(project) == (0, {})
