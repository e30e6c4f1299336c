"""A run is observable while it goes: the status file its executor's process refreshes every
second (calls in flight per provider, the oldest call's age), read by ``daydream status``; a file
left by a killed run is shown stale, never live; a batch task's status message in the README's
``stage · template · model · outcome`` form."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import assert_lock_wait_is_bounded, server_cfg
from pipeline.run import run_status
from pipeline.store.state import State

LUIGI = str(Path(sys.executable).parent / "luigi")


def start_run(project, cfg, command="luigi"):
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(project.root), LUIGI_CONFIG_PATH=str(cfg))
    args = ([LUIGI, "--module", "pipeline.tasks", "RunCohort", "--cohort-id", "t1", "--local-scheduler"]
            if command == "luigi" else [sys.executable, "-m", "pipeline.cli", "run", "t1"])
    return subprocess.Popen(args, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def status(project, cfg) -> subprocess.CompletedProcess:
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(project.root), LUIGI_CONFIG_PATH=str(cfg))
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "status", "t1"], env=env, capture_output=True,
                          text=True, timeout=60)


def status_here() -> str:
    """``daydream status t1`` in this process (the ``project`` fixture set the data root)."""
    import contextlib
    import io

    from pipeline.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["status", "t1"])
    return out.getvalue()


def files(project) -> list[Path]:
    return sorted((project.root / "runs").glob("*.json")) if (project.root / "runs").exists() else []


def wait_for_calls(project, proc, within=60.0) -> tuple[Path, dict]:
    """The first status file showing a call in flight to the test server."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and proc.poll() is None:
        for path in files(project):
            try:
                body = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if body.get("providers", {}).get("testsrv", {}).get("in_flight", 0) > 0:
                return path, body
        time.sleep(0.1)
    raise AssertionError(f"no status file showed a call in flight: {proc.poll()}, {files(project)}")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.fixture
def cfg(project, tmp_path):
    project.server.latency = 2.0  # calls slow enough to be seen in flight, even on a loaded machine
    return server_cfg(tmp_path / "srv.cfg", project.server, timeout=10, max_attempts=2, backoff_base=0.05)


def test_status_file_shows_calls_in_flight_while_the_run_goes_and_goes_with_it(project, cfg):
    proc = start_run(project, cfg, "daydream")
    try:
        path, body = wait_for_calls(project, proc)
        # written by the executor's own process, forked from daydream run's
        assert body["pid"] != proc.pid and parent_of(body["pid"]) == proc.pid
        assert path.name == f"{body['host']}-{body['pid']}.json"
        assert [r["cohorts"] for r in body["runs"]] == [["t1"]]
        calls = body["providers"]["testsrv"]
        assert 1 <= calls["in_flight"] <= calls["concurrency"] == 4
        assert 0 <= calls["oldest_call_s"] < 30  # seconds, of a call made a moment ago
        assert body["generations"]["under_way"] >= calls["in_flight"]
        seen = status_here()  # in this process: a new one would take a while to start, the run may end
        assert "runs: 1 running" in seen, seen
        assert f"{body['host']}:{body['pid']}" in seen
        assert "testsrv" in seen and "calls in flight" in seen and "oldest call" in seen
        first, deadline = body["updated_at"], time.monotonic() + 10
        while json.loads(path.read_text())["updated_at"] == first and time.monotonic() < deadline:
            time.sleep(0.2)
        assert json.loads(path.read_text())["updated_at"] > first, "refreshed every second"
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "calls in flight" in err, "the progress bar shows them"
    assert files(project) == [], "removed when the run ends"
    after = status(project, cfg)
    assert "runs: none running for t1" in after.stdout, after.stdout
    assert after.returncode == 0


def test_a_killed_runs_status_file_is_stale_never_live(project, cfg):
    proc = start_run(project, cfg)
    try:
        path, body = wait_for_calls(project, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    deadline = time.monotonic() + 10  # the executor's process notices its driver gone
    while Path(f"/proc/{body['pid']}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.exists(), "a kill leaves the file"
    seen = status(project, cfg)
    assert "runs: none running for t1" in seen.stdout, seen.stdout
    assert "stale status file, its process is gone" in seen.stdout
    assert run_status.sweep(path.parent) == 1 and not path.exists()


def stamp(seconds_ago: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).isoformat(timespec="milliseconds")


def test_a_status_file_is_live_only_while_refreshed_and_its_process_is_there():
    now = time.time()
    me = {"host": run_status.HOST, "pid": os.getpid()}
    assert run_status.judge({**me, "updated_at": stamp(1)}, now)["live"]
    old = run_status.judge({**me, "updated_at": stamp(run_status.STALE_AFTER_S + 5)}, now)
    assert not old["live"] and "not refreshed" in old["stale"]
    # another machine's process cannot be looked at: its refresh time decides
    assert run_status.judge({"host": "elsewhere", "pid": 1, "updated_at": stamp(1)}, now)["live"]
    assert not run_status.judge({"host": "elsewhere", "pid": 1, "updated_at": stamp(60)}, now)["live"]
    assert not run_status.judge({**me}, now)["live"]


def test_a_batch_message_has_one_line_per_template_and_model_and_names_failures():
    members = [("d1", "t-a", "m-x"), ("d2", "t-a", "m-x"), ("d3", "t-b", "m-x"), ("d4", "t-b", "m-y")]
    states = {"d2": State("done"), "d3": State("failed", "parse error: no score")}
    lines = run_status.batch_message("draft", members, states, "not run: budget reached").splitlines()
    assert lines == [
        "draft batch of 4: 1 done, 1 failed, 2 running",
        "draft · t-a · m-x · 1 done, 0 failed, 1 running",
        "draft · t-b · m-x · 0 done, 1 failed",
        "draft · t-b · m-y · 0 done, 0 failed, 1 running",
        "d3 · failed: parse error: no score",
    ]


def test_the_spend_ledgers_lock_waits_a_bounded_time_for_a_live_holder(tmp_path, monkeypatch):
    from pipeline import store
    from pipeline.store import ledger

    paths = store.DataPaths(tmp_path)
    assert_lock_wait_is_bounded(ledger.ledger_path(paths, "c1").with_name("spend.lock"),
                                lambda: ledger.locked(paths, "c1"), monkeypatch, store)


def test_a_silent_loop_shows_in_the_file_and_a_writer_sweeps_this_hosts_dead_runs(tmp_path):
    from pipeline.store import DataPaths

    paths = DataPaths(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    left = run_status.status_path(paths, pid=dead.pid)
    left.parent.mkdir(parents=True)
    left.write_text(json.dumps({"host": run_status.HOST, "pid": dead.pid, "updated_at": stamp(0), "runs": []}))
    half = left.with_name(f".{left.name}.{dead.pid}-0.tmp")  # the atomic writer's, killed mid-write
    half.write_text("{")
    answers = iter([{"providers": {"p": {"in_flight": 2}}, "runs": []}])
    writer = run_status.Writer(paths, lambda: next(answers, None))  # the loop answers once, then never
    try:
        deadline = time.monotonic() + 10
        body = {}
        while time.monotonic() < deadline and "loop_silent_s" not in body:
            time.sleep(0.2)
            try:
                body = json.loads(writer.path.read_text())
            except (OSError, ValueError):
                pass
        assert body["loop_silent_s"] >= 0.5 and body["providers"] == {"p": {"in_flight": 2}}, body
        assert body["pid"] == os.getpid() and run_status.judge(body, time.time())["live"]
        assert not left.exists() and not half.exists(), "the dead run's files were swept"
        shown = run_status.format_runs([{**body, **run_status.judge(body, time.time())}], "t1")
        assert "runs: 1 running" in shown and "its event loop has not answered for" in shown, shown
    finally:
        writer.stop()
    assert not writer.path.exists()


def test_a_run_with_nothing_to_call_sweeps_the_status_files_killed_runs_left(project, tmp_path):
    """A run killed as its status file was refreshed leaves the file and the atomic writer's
    temporary; an executor's writer sweeps them as it starts, but a run of a finished cohort starts
    no executor: the run itself sweeps them, through either command. A live process's file stays."""
    cfg = server_cfg(tmp_path / "srv.cfg", project.server, timeout=10, max_attempts=2, backoff_base=0.05)
    first = start_run(project, cfg, command="daydream")
    _, err = first.communicate(timeout=120)  # read as it goes: a full pipe would stall the run
    assert first.returncode == 0, err
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    runs = run_status.runs_dir(project.paths)
    runs.mkdir(parents=True, exist_ok=True)
    mine = run_status.status_path(project.paths)  # this process: alive
    for command in ("luigi", "daydream"):
        left = run_status.status_path(project.paths, pid=dead.pid)
        half = left.with_name(f".{left.name}.{dead.pid}-7.tmp")
        for path, pid in ((left, dead.pid), (half, dead.pid), (mine, os.getpid())):
            path.write_text(json.dumps({"host": run_status.HOST, "pid": pid, "updated_at": stamp(0), "runs": []}))
        calls = len(project.server.requests)
        proc = start_run(project, cfg, command=command)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert len(project.server.requests) == calls, "the cohort was finished: nothing to call"
        assert not left.exists() and not half.exists(), command
        assert mine.exists(), command
