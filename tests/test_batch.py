"""Provider batch jobs end to end: a cohort through the test server's files and batches API,
kills at each phase, resume from another process, expiry, partial failure, no batch API."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from test_run import ALL_CALLS, completions


@pytest.fixture
def batch_project(project):
    import luigi.configuration

    cfg = luigi.configuration.get_config()
    cfg.set("llm.testsrv", "batch", "true")
    cfg.set("llm.testsrv", "batch_poll", "0.05")
    yield project
    for key in ("batch", "batch_poll", "batch_retry", "batch_max_jobs", "batch_max_requests"):
        cfg.remove_option("llm.testsrv", key)


def sent(server) -> collections.Counter:
    """How many times each generation went out in a job."""
    return collections.Counter(cid for job in server.batch_jobs.values() for cid in job["custom_ids"])


def test_cohort_runs_end_to_end_in_batch_jobs(batch_project):
    project = batch_project
    assert project.run()
    server = project.server
    assert completions(server) == []  # no call one by one
    assert sorted(sent(server).values()) == [1] * ALL_CALLS  # each generation in exactly one job
    # one job per stage and model: drafts, essays (model a), evaluations (model b)
    assert len(server.batch_jobs) == 3
    for row in project.membership():
        pm = project.json(row["stage"], row["gen_id"], "parsed_metadata.json")
        assert pm["success"] is True, (row, pm)
        if row["mode"] == "llm":
            rm = project.json(row["stage"], row["gen_id"], "raw_metadata.json")
            assert rm["batch_job"]["batch_id"] in server.batch_jobs
            assert rm["provider"] == "testsrv" and rm["attempts"] == 1
    # the request a job line carries is the one a call sends (per-model temperature and max_tokens)
    evals = [line["body"] for job in server.batch_jobs.values() for line in job["lines"]
             if line["body"]["model"] == "test/model-b"]
    assert evals and all(b["temperature"] == 0.1 and b["max_tokens"] == 512 for b in evals)
    # batch prices: half the catalog's 1.0 / 2.0 per Mtok
    draft = project.membership("draft")[0]["gen_id"]
    rm = project.json("draft", draft, "raw_metadata.json")
    assert rm["cost_usd"] == pytest.approx((rm["prompt_tokens"] * 0.5 + rm["completion_tokens"] * 1.0) / 1e6)
    # a second run finds everything done: no new job
    assert project.run()
    assert len(server.batch_jobs) == 3
