"""Every command the README shows, run as written (from a copy of the project directory, with the
project's own ``.venv`` and ``luigi.cfg``), each under a timeout.

The README is parsed, so a command added to it without a test here fails
``test_every_readme_command_is_run``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DEMO_GENERATIONS = 90

LOCAL = ".venv/bin/luigi --module pipeline.tasks RunCohort --cohort-id demo --local-scheduler --workers 4"
LUIGID_START = ("mkdir -p luigi-state/logs",
                ".venv/bin/luigid --address 127.0.0.1 --port 8082 --state-path luigi-state/state.pickle "
                "--background --pidfile luigi-state/luigid.pid --logdir luigi-state/logs")
DAYDREAM_LUIGID = ".venv/bin/daydream run demo --scheduler-url http://127.0.0.1:8082/ --workers 4"
LUIGI_LUIGID = ".venv/bin/luigi --module pipeline.tasks RunCohort --cohort-id demo --workers 4"
LUIGID_STOP = 'kill "$(cat luigi-state/luigid.pid)"'
DAY_TWO = (
    ".venv/bin/daydream status demo",
    ".venv/bin/daydream check --list",
    ".venv/bin/daydream invalidate --cohort demo --template rigor-v1 --dry-run --list",
    ".venv/bin/daydream purge demo-rubrics",
    ".venv/bin/daydream purge demo-rubrics --yes",
)
SPEND = (
    ".venv/bin/daydream estimate demo",
    ".venv/bin/daydream run demo --max-cost 5",
)
# `make test` is the command that runs this suite (CI runs it on a fresh clone).
RUN_HERE = {"make demo", LOCAL, *LUIGID_START, DAYDREAM_LUIGID, LUIGI_LUIGID, LUIGID_STOP, *DAY_TWO, *SPEND}
RUN_BY_CI = {"make test"}


def readme_commands() -> list[str]:
    """Command lines of the README's bash blocks: continuations joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            line = re.sub(r"\s+", " ", line)
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_every_readme_command_is_run():
    assert set(readme_commands()) == RUN_HERE | RUN_BY_CI


@pytest.fixture
def workdir(tmp_path):
    """A copy of the project directory as a new user has it: catalogs, demo specs, luigi.cfg, and
    the project's virtualenv (linked)."""
    d = tmp_path / "project"
    d.mkdir()
    shutil.copytree(REPO / "data" / "1_raw", d / "data" / "1_raw")
    for spec in (REPO / "data" / "cohorts").glob("*/spec"):
        shutil.copytree(spec, d / "data" / "cohorts" / spec.parent.name / "spec")
    shutil.copy(REPO / "luigi.cfg", d / "luigi.cfg")
    (d / ".venv").symlink_to(Path(sys.prefix))
    return d


def sh(workdir: Path, command: str, timeout: float = 240, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DAYDREAM_DATA_ROOT", "LUIGI_CONFIG_PATH")}
    return subprocess.run(["bash", "-c", command], cwd=workdir, capture_output=True, text=True,
                          timeout=timeout, env={**clean, **env})


def states(workdir: Path, cohort: str = "demo") -> dict:
    """Generations per state, from the classifier (in a subprocess: a fresh catalog)."""
    code = ("import json; from pipeline.run.run_plan import cohort_counts, membership; from pipeline import config;"
            f"p = config.data_paths(); counts = cohort_counts(p, membership(p, {cohort!r}));"
            "print(json.dumps({s: dict(c) for s, c in counts.by_stage.items()}))")
    env = {k: v for k, v in os.environ.items() if k not in ("DAYDREAM_DATA_ROOT", "LUIGI_CONFIG_PATH")}
    r = subprocess.run([str(workdir / ".venv" / "bin" / "python"), "-c", code], cwd=workdir, capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    total = {}
    for c in json.loads(r.stdout).values():
        for k, n in c.items():
            total[k] = total.get(k, 0) + n
    return total


def assert_demo_done(workdir: Path) -> None:
    assert states(workdir)["done"] == DEMO_GENERATIONS
    assert (workdir / "data" / "site" / "build" / "index.html").exists()
    assert not list((workdir / "data").rglob("*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_luigi_command_local_scheduler(workdir, workers):
    command = LOCAL.replace("--workers 4", f"--workers {workers}")
    r = sh(workdir, command)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_demo_done(workdir)
    again = sh(workdir, command)  # a second run finds everything done
    assert again.returncode == 0 and "complete ones were encountered" in again.stderr
    assert_demo_done(workdir)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
@pytest.mark.luigid
def test_luigid_commands_twice_and_after_invalidate(workdir):
    if not _port_free(8082):
        pytest.fail("port 8082 (the README's luigid port) is taken on this machine")
    for command in LUIGID_START:
        r = sh(workdir, command, timeout=30)
        assert r.returncode == 0, r.stderr
    try:
        deadline = time.time() + 20
        while _port_free(8082) and time.time() < deadline:
            time.sleep(0.1)
        r = sh(workdir, DAYDREAM_LUIGID)
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"{DEMO_GENERATIONS} generations: {DEMO_GENERATIONS} done" in r.stderr
        assert_demo_done(workdir)
        r = sh(workdir, LUIGI_LUIGID)
        assert r.returncode == 0, r.stderr[-3000:]
        # run again at once after invalidating the essays (and their evaluations): the scheduler
        # must not hold on to the earlier run's tasks
        r = sh(workdir, ".venv/bin/daydream invalidate --cohort demo --stage essay")
        assert r.returncode == 0 and "84 generations" in r.stdout, r.stdout + r.stderr
        t0 = time.time()
        r = sh(workdir, LUIGI_LUIGID, timeout=60)
        assert r.returncode == 0, r.stderr[-3000:]
        assert time.time() - t0 < 60
        assert_demo_done(workdir)
        log = "".join(p.read_text() for p in (workdir / "luigi-state" / "logs").glob("*"))
        assert "disconnected worker" not in log
    finally:
        r = sh(workdir, LUIGID_STOP, timeout=30)
    assert r.returncode == 0, r.stderr
    deadline = time.time() + 10
    while not _port_free(8082) and time.time() < deadline:
        time.sleep(0.1)
    assert _port_free(8082)


@pytest.mark.slow
def test_make_demo_then_day_two_commands(workdir):
    (workdir / "Makefile").symlink_to(REPO / "Makefile")
    (workdir / "pyproject.toml").symlink_to(REPO / "pyproject.toml")
    installed = workdir / ".venv" / "bin" / ".installed"
    if not installed.exists():
        pytest.fail("the project's .venv was not made by `make` (run the tests with `make test`)")
    r = sh(workdir, "make demo")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "report site:" in r.stdout
    assert_demo_done(workdir)
    estimate = sh(workdir, SPEND[0])
    assert estimate.returncode == 0 and "no model calls left to make" in estimate.stdout, estimate.stdout
    capped = sh(workdir, SPEND[1])  # the simulator is free: a cap changes nothing
    assert capped.returncode == 0 and f"{DEMO_GENERATIONS} generations: {DEMO_GENERATIONS} done" in capped.stderr
    status = sh(workdir, DAY_TWO[0])
    assert status.returncode == 0 and re.search(r"evaluation\s+72\s+0\s+0\s+0\s+0", status.stdout), status.stdout
    check = sh(workdir, DAY_TWO[1])
    assert check.returncode == 0, check.stdout + check.stderr
    invalidate = sh(workdir, DAY_TWO[2])
    assert invalidate.returncode == 0 and "would invalidate" in invalidate.stdout
    assert states(workdir)["done"] == DEMO_GENERATIONS  # a dry run changes nothing
    purge_dry = sh(workdir, DAY_TWO[3])
    assert purge_dry.returncode == 0 and "dry run" in purge_dry.stdout
    assert (workdir / "data" / "cohorts" / "demo-rubrics" / "membership.csv").exists()
    purge = sh(workdir, DAY_TWO[4])
    assert purge.returncode == 0 and "removed" in purge.stdout
    assert not (workdir / "data" / "cohorts" / "demo-rubrics" / "membership.csv").exists()
    assert states(workdir)["done"] == DEMO_GENERATIONS  # demo's generations are kept
