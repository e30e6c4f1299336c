"""The ``luigi`` command fails as cleanly as ``daydream``: one line naming the mistake, no
traceback, ``[retcode] unhandled_exception`` (40), apart from a failed generation (30); an
unreachable or misconfigured luigid is named within seconds; a re-run right after a kill says
what it waits for, then finishes; every run writes a log file named in its summary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import server_cfg
from test_distributed import assert_store_intact

pytestmark = pytest.mark.slow
LUIGI = str(Path(sys.executable).parent / "luigi")
CONFIG_ERROR = 40  # [retcode] unhandled_exception in luigi.cfg
FAILED = 30


def luigi_cmd(project, cfg, *args, env_extra=None, **popen):
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(project.root), LUIGI_CONFIG_PATH=str(cfg), **(env_extra or {}))
    return subprocess.Popen([LUIGI, "--module", "pipeline.tasks", "RunCohort", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **popen)


def one_line(proc, *needles, code=CONFIG_ERROR, within=None):
    started = time.monotonic()
    out, err = proc.communicate(timeout=120)
    text = out + err
    assert proc.returncode == code, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if "error[" in line]
    assert len(errors) == 1, text[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    if within is not None:
        assert time.monotonic() - started < within
    return errors[0]


@pytest.fixture
def cfg(project, tmp_path):
    return server_cfg(tmp_path / "srv.cfg", project.server, {"batch_size": 2},
                      timeout=1.5, max_attempts=3, backoff_base=0.05, backoff_max=1)


def test_mistakes_are_one_line_with_their_own_exit_status(project, cfg, tmp_path):
    local = ("--local-scheduler",)
    one_line(luigi_cmd(project, cfg, "--cohort-id", "nope", *local), "nope")
    one_line(luigi_cmd(project, cfg, "--cohort-id", "t1", "--max-cost", "abc", *local), "--max-cost", "abc")
    one_line(luigi_cmd(project, cfg, "--cohort-id", "t1", "--max-cost", "-5", *local), "--max-cost")
    one_line(luigi_cmd(project, cfg, "--cohort-id", "t1", "--workers", "0", *local), "--workers")
    keyed = server_cfg(tmp_path / "keyed.cfg", project.server, api_key_env="DAYDREAM_TEST_MISSING_KEY")
    one_line(luigi_cmd(project, keyed, "--cohort-id", "t1", *local), "DAYDREAM_TEST_MISSING_KEY")
    one_line(luigi_cmd(project, tmp_path / "absent.cfg", "--cohort-id", "t1", *local), "LUIGI_CONFIG_PATH",
             "absent.cfg")
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(project.root), LUIGI_CONFIG_PATH=str(tmp_path / "absent.cfg"))
    status = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", "t1"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 2 and "absent.cfg" in status.stderr and "Traceback" not in status.stderr
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    one_line(luigi_cmd(project, cfg, "--cohort-id", "t1", "--scheduler-url", f"http://127.0.0.1:{port}/"),
             f"http://127.0.0.1:{port}/", within=10)
    assert not list(project.root.joinpath("gens").rglob("raw.txt")), "no call before the mistake is reported"


def test_a_run_logs_at_info_to_a_file_named_in_its_summary(project, cfg):
    proc = luigi_cmd(project, cfg, "--cohort-id", "t1", "--local-scheduler")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "DEBUG" not in err
    summary = next(line for line in err.splitlines() if "generations:" in line and "log: " in line)
    log = Path(summary.split("log: ")[1].strip())
    assert log.parent == project.root / "logs" and log.is_file()
    assert "Informed scheduler" in log.read_text()
    # the run's own tasks at INFO, not a line per generation (those are DEBUG)
    for text in (err, log.read_text()):
        assert "RunCohort" in text and "Informed scheduler that task   DraftGeneration" not in text
        assert "running   EvaluationGeneration" not in text


def test_generation_lines_are_logged_at_debug_and_shown_on_request():
    import logging

    from pipeline.run.luigi_command import LOGGER, install_filter

    install_filter()
    log = logging.getLogger(LOGGER)
    seen = {logging.INFO: [], logging.DEBUG: []}

    class Keep(logging.Handler):
        def emit(self, record):
            seen[self.level].append(record.getMessage())

    handlers = [Keep(logging.INFO), Keep(logging.DEBUG)]
    level = log.level
    log.setLevel(logging.DEBUG)
    for h in handlers:
        log.addHandler(h)
    try:
        log.info("Informed scheduler that task   %s   has status   %s", "DraftGeneration_d_1_abc", "DONE")
        log.info("Informed scheduler that task   %s   has status   %s", "RunCohort_demo_abc", "DONE")
        log.warning("[pid %s] Worker %s failed    %s", 1, "w", "EssayGeneration(gen_id=e_1)")
    finally:
        for h in handlers:
            log.removeHandler(h)
        log.setLevel(level)
    assert seen[logging.INFO] == ["Informed scheduler that task   RunCohort_demo_abc   has status   DONE",
                                  "[pid 1] Worker w failed    EssayGeneration(gen_id=e_1)"]
    assert len(seen[logging.DEBUG]) == 3


def test_luigid_without_the_providers_resource_is_named(project, cfg, tmp_path):
    from conftest import Luigid

    server = Luigid(tmp_path / "bare")
    (server.base / "luigi.cfg").write_text("[scheduler]\nworker_disconnect_delay = 4\n")
    server.start()
    try:
        one_line(luigi_cmd(project, cfg, "--cohort-id", "t1", "--scheduler-url", server.url), "llm_testsrv",
                 server.url, within=15)
    finally:
        server.stop()


def test_a_rerun_right_after_a_kill_waits_for_luigid_then_finishes(project, tmp_path, luigid):
    cfg = server_cfg(tmp_path / "w.cfg", project.server, {"batch_size": 1}, timeout=5, max_attempts=3,
                     backoff_base=0.05)
    project.server.latency = 0.3
    first = luigi_cmd(project, cfg, "--cohort-id", "t1", "--scheduler-url", luigid.url, "--workers", "2")
    deadline = time.time() + 60
    while project.server.successes < 3 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    rerun = luigi_cmd(project, cfg, "--cohort-id", "t1", "--scheduler-url", luigid.url, "--workers", "2")
    out, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err[-3000:]
    assert "waiting up to" in err and "worker_disconnect_delay" in err
    assert_store_intact(project)
