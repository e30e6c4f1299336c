"""Runs that share a data root share its work: a generation's claim (``pipeline/claims.py``)
lets one process at a time call for it, whatever scheduler each run uses."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import server_cfg
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
