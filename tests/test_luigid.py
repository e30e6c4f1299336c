"""The central scheduler: a real luigid on a free loopback port, driven through its HTTP API."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.luigid


def daydream(*args, root, env_extra=None, timeout=300):
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(root), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def membership(root, cohort):
    with open(root / "cohorts" / cohort / "membership.csv") as fh:
        return list(csv.DictReader(fh))


def done_gen_ids(luigid) -> set[str]:
    tasks = luigid.api("task_list", status="DONE", upstream_status="", search="")
    ids = set()
    for t in tasks.values():
        if "gen_id" in t["params"]:
            ids.update(t["params"]["gen_id"].split(","))
    return ids


def test_demo_cohort_through_luigid(luigid, demo_root):
    r = daydream("run", "demo", "--scheduler-url", luigid.url, root=demo_root)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = membership(demo_root, "demo")
    assert len(rows) == 90
    assert {row["gen_id"] for row in rows} <= done_gen_ids(luigid)
    tasks = luigid.api("task_list", status="DONE", upstream_status="", search="RunCohort")
    (run,) = [t for t in tasks.values() if t["name"] == "RunCohort"]
    assert run["status_message"] == "done 90, failed 0, not run 0, remaining 0 of 90"
    assert run["progress_percentage"] == 100
    # each generation task's message in the README's form, stage · template · model · outcome: a
    # batch's message (which Luigi shows on each member) has its members' template and model line
    by_id = {row["gen_id"]: row for row in rows}
    for family, stage in (("DraftGeneration", "draft"), ("EssayGeneration", "essay"),
                          ("EvaluationGeneration", "evaluation")):
        gens = luigid.api("task_list", status="DONE", upstream_status="", search=family).values()
        assert gens
        for t in gens:
            message = t["status_message"] or ""
            for g in t["params"]["gen_id"].split("@batch-")[0].split(","):
                line = f"{stage} · {by_id[g]['template_id']} · {by_id[g]['llm_model_id'] or 'copy'} · "
                assert any(x.startswith(line) and "done" in x and "running" not in x
                           for x in message.splitlines()), (g, message)
    # the status file of the process that ran the calls (its loop on a thread: no calls ahead
    # against luigid) was written during the run and went with it
    assert (demo_root / "runs").is_dir() and not list((demo_root / "runs").iterdir())
    site = luigid.api("task_list", status="DONE", upstream_status="", search="ReportSite")
    assert site, "the report site task ran through luigid too"
    # the state and log directories are the fixture's own
    assert (luigid.log_dir / "luigid.log").exists()
