"""Several drivers (as on several machines sharing the data root) run one cohort against one luigid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from datafactory import SPEC
from conftest import server_cfg

pytestmark = [pytest.mark.luigid, pytest.mark.slow]

BIG_SPEC = SPEC.replace("  evaluation_llm: [srv-b]\n", "  evaluation_llm: [srv-b]\n  evaluation_replicate: 4\n")
N_LLM = 3 + 3 + 6 * 2 * 4  # drafts, llm essays, evaluations


def start_driver(project, luigid, cfg, workers=2, *extra):
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(project.root), LUIGI_CONFIG_PATH=str(cfg))
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", "t1", "--scheduler-url", luigid.url, "--workers", str(workers), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


@pytest.fixture
def big_project(project, tmp_path):
    (project.root / "cohorts" / "t1" / "spec" / "config.yaml").write_text(BIG_SPEC)
    cfg = server_cfg(tmp_path / "workers.cfg", project.server, {"batch_size": 2, "chunk_size": 20},
                     timeout=5, max_attempts=3, backoff_base=0.05)
    project.server.latency = 0.15
    return project, cfg


def assert_store_intact(project):
    rows = project.membership()
    for row in rows:
        d = project.paths.gen_dir(row["stage"], row["gen_id"])
        pm = json.loads((d / "parsed_metadata.json").read_text())
        assert pm["success"] is True, (row, pm)
        import hashlib

        assert hashlib.sha256((d / "parsed.txt").read_bytes()).hexdigest() == pm["parsed_sha256"]
        json.loads((d / "raw_metadata.json").read_text())
    assert not list(project.root.rglob("*.tmp")), "no temporary file survives"


def test_three_drivers_share_the_work(big_project, luigid):
    project, cfg = big_project
    drivers = [start_driver(project, luigid, cfg) for _ in range(3)]
    outputs = [d.communicate(timeout=240) for d in drivers]
    for d, (out, err) in zip(drivers, outputs):
        assert d.returncode == 0, err[-3000:]
    assert_store_intact(project)
    assert project.server.successes == N_LLM  # exactly one successful request per generation
    assert len(project.membership()) == 3 + 6 + 48


def test_killing_a_driver_loses_nothing(big_project, luigid):
    project, cfg = big_project
    drivers = [start_driver(project, luigid, cfg) for _ in range(3)]
    deadline = time.time() + 60
    while project.server.successes < 15 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(drivers[0].pid, signal.SIGKILL)
    killed_at = {r["gen_id"]: project.json(r["stage"], r["gen_id"], "parsed_metadata.json")["finished_at"]
                 for r in project.membership()
                 # parsed_metadata.json is written last: the other drivers may be between the two files
                 if project.paths.gen_file(r["stage"], r["gen_id"], "parsed_metadata.json").exists()}
    assert killed_at, "some generations finished before the kill"
    for d in drivers[1:]:
        d.communicate(timeout=240)
    # a re-run finishes whatever is left, without redoing finished work
    rerun = start_driver(project, luigid, cfg)
    out, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err[-3000:]
    assert_store_intact(project)
    for gen_id, finished in killed_at.items():
        row = next(r for r in project.membership() if r["gen_id"] == gen_id)
        assert project.json(row["stage"], gen_id, "parsed_metadata.json")["finished_at"] == finished
    # only calls in flight at the kill may have been repeated
    assert N_LLM <= project.server.successes <= N_LLM + 4 * 2
