"""Shared pytest fixtures. Keep each fixture in its own clearly marked section."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Luigi's process lock lets one identical command line run at a time per lock directory (by
# default the temp dir's luigi/). Tests on two xdist workers run the same `luigi ... --cohort-id
# t1` line on different data roots, so each worker's commands get a temp dir of their own.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _own_tmp = tempfile.mkdtemp(prefix=f"daydream-{os.environ['PYTEST_XDIST_WORKER']}-")
    os.environ["TMPDIR"] = _own_tmp
    atexit.register(shutil.rmtree, _own_tmp, ignore_errors=True)

# -- LLM test server (tests/llm_server.py) ------------------------------------------------------------


@pytest.fixture
def llm_server():
    """A real OpenAI-compatible server on 127.0.0.1 with fault injection; stopped after the test."""
    from llm_server import LLMServer

    with LLMServer() as server:
        yield server


# -- A project: data root + luigi config pointing provider "testsrv" at the test LLM server -------


class Project:
    def __init__(self, root, server, cohort="t1"):
        from pipeline.store import DataPaths

        self.root, self.server, self.cohort = root, server, cohort
        self.paths = DataPaths(root)

    def run(self, workers: int = 1) -> bool:
        """Run the cohort in-process with the local scheduler; True when everything succeeded."""
        from pipeline.run.running import run_cohort

        reset_luigi_state()
        return run_cohort(self.cohort, workers=workers) == 0

    def membership(self, stage=None):
        from pipeline.design.cohort import read_membership

        return [r for r in read_membership(self.paths, self.cohort) if stage is None or r["stage"] == stage]

    def read(self, stage, gen_id, name):
        return self.paths.gen_file(stage, gen_id, name).read_text()

    def json(self, stage, gen_id, name):
        import json

        return json.loads(self.read(stage, gen_id, name))


@pytest.fixture(autouse=True)
def no_batch_mode_left_behind():
    """``--batch`` sets ``[daydream] batch`` in the process's Luigi config, where the workers it
    forks read it: a test that ran one in this process must not leave batch mode to the next."""
    import luigi.configuration

    cfg = luigi.configuration.get_config()
    before = cfg.get("daydream", "batch") if cfg.has_option("daydream", "batch") else None
    yield
    if before is not None:
        cfg.set("daydream", "batch", before)
    elif cfg.has_option("daydream", "batch"):
        cfg.remove_option("daydream", "batch")


def reset_luigi_state():
    """Luigi caches task instances per process and our runtime caches the catalog: start clean."""
    import luigi.task_register

    from pipeline.run import generation

    luigi.task_register.Register.clear_instance_cache()
    generation.forget_runtimes()


def most_calls_after_a_kill(project: Project, llm_generations: int, answered: int, whole, slots: int = 4) -> int:
    """The most successful calls ``project``'s cohort, of ``llm_generations``, may take in all when
    a run is killed (``answered``: the server's successes by then; ``whole``: the gen_ids whole
    after it) and run again: one each, and one more for each answer not durable at the kill, whether
    answered and still being written (a call gives its slot back as it answers) or in flight
    (``slots``, whose answers may count after the kill)."""
    durable = {r["gen_id"] for r in project.membership() if r["mode"] == "llm"} & set(whole)
    return llm_generations + (answered - len(durable)) + slots


def server_cfg(path: Path, server, daydream: dict | None = None, **provider) -> Path:
    """A luigi.cfg layer (for ``LUIGI_CONFIG_PATH``) pointing provider ``testsrv`` at ``server``: 4
    calls at a time, its ``[resources]`` to match, ``provider`` settings (None leaves one out) and
    ``[daydream]`` settings; returns ``path``."""
    settings = {"base_url": server.base_url, "api_key_env": "", "concurrency": 4, **provider}
    lines = ["[llm.testsrv]", *(f"{k} = {v}" for k, v in settings.items() if v is not None),
             "[resources]", "llm_testsrv = 4"]
    if daydream:
        lines += ["[daydream]", *(f"{k} = {v}" for k, v in daydream.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


TEST_PROVIDER = {
    "api_key_env": "", "concurrency": "4", "timeout": "1.5", "max_attempts": "3",
    "backoff_base": "0.05", "backoff_max": "1.5",
}


@pytest.fixture
def project(tmp_path, llm_server, monkeypatch):
    import luigi.configuration

    from datafactory import make_data_root, responder

    root = make_data_root(tmp_path / "data")
    monkeypatch.setenv("DAYDREAM_DATA_ROOT", str(root))
    cfg = luigi.configuration.get_config()
    if not cfg.has_section("llm.testsrv"):
        cfg.add_section("llm.testsrv")
    cfg.set("llm.testsrv", "base_url", llm_server.base_url)
    for k, v in TEST_PROVIDER.items():
        cfg.set("llm.testsrv", k, v)
    if not cfg.has_section("resources"):
        cfg.add_section("resources")
    cfg.set("resources", "llm_testsrv", "4")
    llm_server.responder = responder
    reset_luigi_state()
    yield Project(root, llm_server)
    cfg.remove_section("llm.testsrv")
    reset_luigi_state()


# -- A real luigid on a free loopback port, with its own state and log directories ------------------


class Luigid:
    def __init__(self, base):
        import socket

        self.base = base
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.state_dir, self.log_dir = base / "state", base / "logs"
        self.state_dir.mkdir(parents=True)
        self.log_dir.mkdir()
        # luigid reads luigi.cfg from its working directory: resources as in the project's file,
        # and a short disconnect delay so a killed worker's tasks are released quickly.
        # The project's own luigi.cfg (as the README starts luigid), with test overrides.
        import configparser

        cfg = configparser.ConfigParser()
        cfg.read(REPO / "luigi.cfg")
        cfg.read_dict({"scheduler": {"worker_disconnect_delay": "4", "retry_delay": "1", "remove_delay": "600",
                                     "prune_on_get_work": "true"},
                       "resources": {"llm_offline": "64", "llm_testsrv": "4"}})
        with open(base / "luigi.cfg", "w") as fh:
            cfg.write(fh)

    def start(self):
        import shutil
        import subprocess
        import time
        import urllib.request

        luigid = shutil.which("luigid") or str(Path(sys.executable).parent / "luigid")
        self.log = open(self.log_dir / "luigid.log", "wb")
        self.proc = subprocess.Popen(
            [luigid, "--address", "127.0.0.1", "--port", str(self.port),
             "--state-path", str(self.state_dir / "luigi-state.pickle")],
            cwd=self.base, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url + "api/task_list?data=%7B%7D", timeout=1).read()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError((self.log_dir / "luigid.log").read_text())
                time.sleep(0.1)
        raise RuntimeError("luigid did not start")

    def api(self, method: str, **data) -> dict:
        import json
        import urllib.parse
        import urllib.request

        q = urllib.parse.quote(json.dumps(data))
        with urllib.request.urlopen(f"{self.url}api/{method}?data={q}", timeout=10) as r:
            return json.loads(r.read())["response"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def luigid(tmp_path):
    server = Luigid(tmp_path / "luigid").start()
    yield server
    server.stop()


@pytest.fixture
def demo_root(tmp_path):
    """A copy of the project's catalogs and demo cohort specs in a fresh data root."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(REPO / "data" / "1_raw", root / "1_raw")
    for spec in (REPO / "data" / "cohorts").glob("*/spec"):
        shutil.copytree(spec, root / "cohorts" / spec.parent.name / "spec")
    return root


# ---------------------------------------------------------------------------------------------
# A lock held by another process


def assert_lock_wait_is_bounded(lock: Path, locked, monkeypatch, module) -> None:
    """Another process holds ``lock`` (an ``fcntl`` lock, as the store takes it): entering
    ``locked()`` waits ``module.LOCK_TIMEOUT_S`` (set to 0.3 s) and fails with one ``store`` error
    naming the file; once the holder dies, the next ``locked()`` gets the lock at once."""
    import subprocess
    import time

    from pipeline.errors import DaydreamError

    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, os, time
fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(module, "LOCK_TIMEOUT_S", 0.3)
        t0 = time.monotonic()
        with pytest.raises(DaydreamError) as info:
            with locked():
                pass
        assert info.value.code == "store" and str(lock) in info.value.message
        assert 0.3 <= time.monotonic() - t0 < 5
        holder.kill()  # a holder that dies lets go at once
        holder.wait(10)
        with locked():
            pass
    finally:
        holder.kill()
        holder.wait(10)
