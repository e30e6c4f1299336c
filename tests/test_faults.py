"""Faults survived, nothing lost: kills, a misbehaving provider, a full disk, a read-only root,
and the API key kept out of every file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from conftest import most_calls_after_a_kill, server_cfg

N_LLM = 3 + 3 + 12


def completions(server):
    return [r for r in server.requests if r["path"].endswith("/chat/completions")]


def cli(project, *args, cfg=None, preexec=None, env_extra=None, **popen):
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(project.root), **(env_extra or {}))
    if cfg:
        env["LUIGI_CONFIG_PATH"] = str(cfg)
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], env=env, preexec_fn=preexec,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.fixture
def cfg(project, tmp_path):
    return server_cfg(tmp_path / "srv.cfg", project.server, {"batch_size": 2},
                      timeout=1.5, max_attempts=3, backoff_base=0.05, backoff_max=1)


def intact(project) -> dict[str, str]:
    """Every finished generation is whole; returns gen_id → finished_at.

    A kill between writing parsed.txt and its commit marker (parsed_metadata.json) may leave an
    uncommitted parsed.txt; it is never taken as complete (no marker, or a hash that differs)."""
    from pipeline.run.generation import runtime, state_of

    finished = {}
    for row in project.membership():
        d = project.paths.gen_dir(row["stage"], row["gen_id"])
        pm_path = d / "parsed_metadata.json"
        if not pm_path.exists():
            assert state_of(runtime(), row["stage"], row["gen_id"]).kind != "done"
            continue
        pm = json.loads(pm_path.read_text())
        json.loads((d / "metadata.json").read_text())
        if pm["success"]:
            assert hashlib.sha256((d / "parsed.txt").read_bytes()).hexdigest() == pm["parsed_sha256"]
            finished[row["gen_id"]] = pm["finished_at"]
    return finished


@pytest.mark.parametrize("kill_after", [4, 11])
def test_kill_9_mid_cohort_then_rerun(project, cfg, kill_after):
    project.server.latency = 0.2  # kills land during LLM calls and during writes
    p = cli(project, "run", "t1", cfg=cfg, start_new_session=True)
    deadline = time.time() + 60
    gens = project.root / "gens"
    while time.time() < deadline and not (project.server.successes >= kill_after and any(gens.rglob("parsed.txt"))):
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    answered = project.server.successes  # before the kill (those in flight may still count after it)
    before = intact(project)
    assert 0 < len(before) < 21
    project.server.latency = 0
    r = cli(project, "run", "t1", cfg=cfg)
    out, err = r.communicate(timeout=120)
    assert r.returncode == 0, err[-2000:]
    after = intact(project)
    assert len(after) == 21
    assert all(after[g] == t for g, t in before.items()), "finished work is reused, not redone"
    assert project.server.successes <= most_calls_after_a_kill(project, N_LLM, answered, before)
    assert not list(project.root.joinpath("gens").rglob("*.tmp"))


def _children(pid: int) -> list[int]:
    from pathlib import Path

    return [int(c) for t in Path(f"/proc/{pid}/task").glob("*/children") for c in t.read_text().split()]


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_the_executor_process_ends_with_the_process_that_drives_it(project, cfg):
    # calls started ahead run in a process forked from the driver; killing the driver alone must
    # not leave it calling on (or holding the store) behind it
    project.server.latency = 0.5
    p = cli(project, "run", "t1", cfg=cfg, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and project.server.in_flight < 2:
            time.sleep(0.01)
        executors = _children(p.pid)
        assert len(executors) == 1, "the calls run in one child process of the driver"
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        deadline = time.time() + 10
        while time.time() < deadline and _running(executors[0]):
            time.sleep(0.05)
        assert not _running(executors[0]), "the executor's process outlived its driver"
        calls = len(completions(project.server))
        time.sleep(1.0)
        assert len(completions(project.server)) == calls  # nothing calls on behind the dead driver
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
    project.server.latency = 0
    r = cli(project, "run", "t1", cfg=cfg)
    out, err = r.communicate(timeout=120)
    assert r.returncode == 0, err[-2000:]
    assert len(intact(project)) == 21
    assert not list(project.root.joinpath("gens").rglob("*.tmp"))


FAULTS = {
    # mode pushed for every evaluation request → expected outcome
    "429": "success", "429-noretry-after": "success", "500": "success", "502": "success",
    "503": "success", "timeout": "success", "drop": "success", "malformed": "success",
    "empty_choices": "success", "null_content": "success",
    "hang": "failure", "truncated": "failure", "400": "failure",
}


@pytest.mark.parametrize("mode", sorted(FAULTS))
def test_provider_misbehaviour_ends_in_success_or_a_recorded_failure(project, mode):
    """Success modes fault once per evaluation (then a retry succeeds); failure modes always."""
    seen = set()

    def rule(body):
        prompt = body["messages"][0]["content"]
        if not prompt.startswith("TASK:EVAL"):
            return None
        if FAULTS[mode] == "failure" or prompt not in seen:
            seen.add(prompt)
            return mode
        return None

    project.server.rule = rule
    project.server.timeout_delay = 2.0
    started = time.time()
    ok = project.run()
    assert time.time() - started < 60, "never hangs"
    assert ok == (FAULTS[mode] == "success")
    for row in project.membership("evaluation"):
        pm = project.json("evaluation", row["gen_id"], "parsed_metadata.json")
        parsed = project.paths.gen_file("evaluation", row["gen_id"], "parsed.txt")
        if FAULTS[mode] == "success":
            assert pm["success"] and 0 <= float(parsed.read_text()) <= 10
        else:
            assert pm["success"] is False and pm["error"] and not parsed.exists()


def test_disk_full_is_a_clear_error_and_nothing_is_half_written(project, cfg):
    from pipeline.design.cohort import compile_cohort

    compile_cohort(project.paths, "t1")

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))  # files above 300 bytes fail: EFBIG

    p = cli(project, "run", "t1", cfg=cfg, preexec=limit_file_size)
    out, err = p.communicate(timeout=120)
    assert p.returncode != 0
    assert "Traceback" not in err
    intact(project)
    phase_files = ("prompt.txt", "raw.txt", "raw_metadata.json", "parsed.txt", "parsed_metadata.json")
    for f in project.root.joinpath("gens").rglob("*"):
        if f.name in phase_files:
            assert f.stat().st_size <= 300, f  # a larger write failed as a whole
    assert "File too large" in err
    assert not list(project.root.joinpath("gens").rglob("*.tmp"))
    # with space again, a re-run completes
    r = cli(project, "run", "t1", cfg=cfg)
    assert r.wait(timeout=120) == 0 and len(intact(project)) == 21


def _read_only(path, on: bool):
    """Make a tree read-only for this user; root ignores permission bits, so it uses the
    immutable attribute (chattr) instead."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-R", "+i" if on else "-i", str(path)], check=True)
    else:
        for p in [path, *path.rglob("*")]:
            p.chmod((0o555 if p.is_dir() else 0o444) if on else (0o755 if p.is_dir() else 0o644))


def test_read_only_data_root_is_a_clear_error(project, cfg):
    from pipeline.design.cohort import compile_cohort

    compile_cohort(project.paths, "t1")
    _read_only(project.root, True)
    try:
        p = cli(project, "compile", "t1", cfg=cfg)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err  # an unchanged compile writes nothing, so it still works
        p = cli(project, "run", "t1", cfg=cfg)
        out, err = p.communicate(timeout=60)
    finally:
        _read_only(project.root, False)
    assert p.returncode != 0 and "Traceback" not in err
    assert "cannot write" in out + err
    assert not list(project.root.joinpath("gens").rglob("parsed.txt"))
    assert not list(project.root.joinpath("gens").rglob("*.tmp"))


def test_api_key_never_written_or_logged(project, tmp_path):
    key = "sk-test-" + hashlib.sha256(b"secret").hexdigest()[:32]
    path = tmp_path / "keyed.cfg"
    path.write_text(f"[llm.testsrv]\nbase_url = {project.server.base_url}\napi_key_env = DAYDREAM_TEST_KEY\n"
                    "max_attempts = 2\nbackoff_base = 0.05\n[resources]\nllm_testsrv = 4\n")
    project.server.push_faults("401", "500")  # error bodies echo the Authorization header back
    p = cli(project, "run", "t1", "--verbose", cfg=path, env_extra={"DAYDREAM_TEST_KEY": key})
    out, err = p.communicate(timeout=120)
    assert any(key in r["headers"].get("authorization", "") for r in project.server.requests), "the key was used"
    assert key not in out and key not in err
    for f in project.root.rglob("*"):
        if f.is_file():
            assert key.encode() not in f.read_bytes(), f
