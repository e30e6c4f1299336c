"""Runs that share a data root share its work: a generation's claim (``pipeline/store/claims.py``)
lets one process at a time call for it, whatever scheduler each run uses."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import reset_luigi_state, server_cfg
from test_distributed import BIG_SPEC, N_LLM, assert_store_intact

pytestmark = pytest.mark.slow


def daydream(project, cfg, *args, **popen):
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(project.root), LUIGI_CONFIG_PATH=str(cfg))
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **popen)


def calls_per_prompt(server) -> collections.Counter:
    return collections.Counter(r["body"]["messages"][-1]["content"] for r in server.requests
                               if isinstance(r["body"], dict))


def prompts_of(project) -> collections.Counter:
    """How many generations have each prompt (replicates share one): one call each."""
    return collections.Counter(project.read(r["stage"], r["gen_id"], "prompt.txt")
                               for r in project.membership() if r["mode"] == "llm")


@pytest.fixture
def shared(project, tmp_path):
    (project.root / "cohorts" / "t1" / "spec" / "config.yaml").write_text(BIG_SPEC)
    cfg = server_cfg(tmp_path / "runs.cfg", project.server, {"chunk_size": 20}, timeout=5, max_attempts=3,
                     backoff_base=0.05)
    project.server.latency = 0.1
    return project, cfg


def test_two_runs_of_one_cohort_make_each_call_once(shared):
    project, cfg = shared
    runs = [daydream(project, cfg, "run", "t1", "--workers", str(w)) for w in (1, 2)]
    for run in runs:
        out, err = run.communicate(timeout=180)
        assert run.returncode == 0, err[-3000:]
    assert_store_intact(project)
    assert calls_per_prompt(project.server) == prompts_of(project)
    assert project.server.successes == len(project.server.requests) == N_LLM
    assert not list(project.root.rglob("claim.json")), "every claim is removed once its outcome is written"
    check = daydream(project, cfg, "check")
    out, err = check.communicate(timeout=60)
    assert check.returncode == 0, out + err


def _plant_claim(path, *, host, pid, heartbeat):
    path.write_text(json.dumps({"owner": f"{host}:{pid}:x", "host": host, "pid": pid, "run": "x",
                                "started_at": heartbeat, "heartbeat_at": heartbeat}))


def test_claims_left_by_a_kill_are_taken_over_reported_and_swept(project):
    from pipeline.store import claims
    from pipeline.design.cohort import compile_cohort
    from pipeline.run.generation import runtime, state_of
    from pipeline.ops.maintenance import check_store

    compile_cohort(project.paths, "t1")
    dead = subprocess.Popen(["true"])
    dead.wait()  # a process id that is gone
    draft = project.membership("draft")[0]["gen_id"]
    _plant_claim((project.paths.gen_dir("draft", draft) / "claim.json"), host=claims.HOST, pid=dead.pid,
                 heartbeat="2099-01-01T00:00:00.000+00:00")
    started = time.monotonic()
    assert project.run()
    assert time.monotonic() - started < 20, "a dead process's claim is taken over at once, not after the timeout"
    assert not (project.paths.gen_dir("draft", draft) / "claim.json").exists()

    # a claim on a finished generation (killed between the outcome and the unlink): not a state,
    # a problem for `check`, and swept by the next run of its cohort
    essay = project.membership("essay")[0]["gen_id"]
    _plant_claim((project.paths.gen_dir("essay", essay) / "claim.json"), host="elsewhere", pid=1,
                 heartbeat="2000-01-01T00:00:00.000+00:00")
    assert state_of(runtime(), "essay", essay).kind == "done"
    problems, _ = check_store(project.paths)
    assert [(p.kind, p.gen_id) for p in problems] == [("stale_claim", essay)]
    assert project.run()
    assert check_store(project.paths)[0] == []
    assert not list(project.root.rglob("claim.json"))


def test_a_live_claim_is_waited_for_not_called(project):
    from pipeline.store import claims
    from pipeline.design.cohort import compile_cohort
    from pipeline.run.generation import runtime
    from pipeline.run.executor import run_generation

    compile_cohort(project.paths, "t1")
    draft = project.membership("draft")[0]["gen_id"]
    owner = subprocess.Popen(["sleep", "30"])
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime())
    _plant_claim((project.paths.gen_dir("draft", draft) / "claim.json"), host=claims.HOST, pid=owner.pid, heartbeat=now)
    def owner_dies():  # without an outcome: its claim is then taken over
        owner.kill()
        owner.wait()  # reaped: a zombie still has its process id

    threading.Timer(1.0, owner_dies).start()
    seen = []
    started = time.monotonic()
    st = run_generation(runtime(), "draft", draft, since="s", status=seen.append)
    assert st.kind == "done" and 0.9 <= time.monotonic() - started < 10
    assert any("waiting" in m and f":{owner.pid}:" in m for m in seen), seen
    assert len(project.server.requests) == 1


def test_a_failed_site_build_fails_the_run(project, capsys):
    import shutil

    assert project.run()
    site = project.paths.site_dir
    (site / "_inputs.json").unlink()  # the site is to be rebuilt ...
    shutil.rmtree(site / "docs")
    (site / "docs").write_text("not a directory")  # ... and its build fails
    from pipeline.cli import main

    capsys.readouterr()
    reset_luigi_state()
    assert main(["run", project.cohort]) == 2  # a store the build cannot write: the user's to fix
    err = capsys.readouterr().err
    assert f"{site / 'docs'}" in err and "Not a directory" in err and "Traceback" not in err
    assert (site / "build" / "index.html").is_file(), "the site built before is still there"
