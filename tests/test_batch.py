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

from conftest import assert_lock_wait_is_bounded
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


def cli(project, *args, cfg):
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(project.root), LUIGI_CONFIG_PATH=str(cfg))
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def batch_cfg(project, tmp_path):
    from conftest import server_cfg

    return server_cfg(tmp_path / "srv.cfg", project.server, batch="true", batch_poll=0.05, timeout=5, max_attempts=2)


def store_jobs(project) -> list[dict]:
    from pipeline.run.batch_jobs import read_jobs

    return read_jobs(project.paths)


def wait_for(predicate, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    raise AssertionError("timed out")


def all_done(project) -> bool:
    return all(project.json(r["stage"], r["gen_id"], "parsed_metadata.json")["success"] for r in project.membership())


def test_kill_9_while_polling_then_another_process_polls_the_same_job(project, tmp_path):
    """Killed while it polls the drafts' job; another process (not in batch mode: its drafts are
    in a live job all the same) polls that job, never calls them, and calls the rest one by one."""
    from conftest import server_cfg

    server = project.server
    plain_cfg = server_cfg(tmp_path / "plain.cfg", server, batch_poll=0.05, timeout=5, max_attempts=2)
    server.batch_delay = 1.0  # the drafts' job stays in progress while the first run polls it
    # the first run through the `luigi` command, in batch mode by its own flag
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(project.root), LUIGI_CONFIG_PATH=str(plain_cfg))
    first = subprocess.Popen([sys.executable, "-m", "luigi", "--module", "pipeline.tasks", "RunCohort",
                              "--cohort-id", "t1", "--batch-mode", "--local-scheduler"], env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(j.get("batch_id") for j in store_jobs(project)))
        job = store_jobs(project)[0]
        assert job["batch_id"] in server.batch_jobs and job["stage"] == "draft" and not job["collected"]
        time.sleep(0.2)  # polling
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # another process sees the live job and what waits on it
    import contextlib
    import io

    from pipeline.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["status", "t1"])
    assert job["batch_id"] in out.getvalue() and "waiting on it: 3 generations, 18 after them" in out.getvalue(), \
        out.getvalue()
    server.batch_delay = 0.2
    second = cli(project, "run", "t1", cfg=plain_cfg)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err[-3000:]
    assert all_done(project)
    drafts = [d["gen_id"] for d in project.membership("draft")]
    assert sorted(sent(server)) == sorted(drafts) and set(sent(server).values()) == {1}, "a draft went out twice"
    assert all(project.json("draft", d, "raw_metadata.json")["batch_job"]["batch_id"] == job["batch_id"]
               for d in drafts), "the second run collected the first run's job"
    called = [r["body"]["messages"][0]["content"] for r in completions(server)]
    assert len(called) == ALL_CALLS - 3 and not any(c.startswith("TASK:DRAFT") for c in called)


def test_kills_before_a_job_is_recorded_submit_nothing_twice(project, batch_cfg):
    """Killed as the provider stores the input file, then (the next run) as it makes the job:
    each time before the answer comes back, so the store never learns the id."""
    server = project.server

    def killed_at(hook: str) -> dict:
        run = cli(project, "run", "t1", "--batch", cfg=batch_cfg)
        setattr(server, hook, lambda record: os.killpg(run.pid, signal.SIGKILL))
        run.wait(timeout=60)
        setattr(server, hook, None)
        [job] = store_jobs(project)  # the intent was recorded first, and is the one job
        assert job["batch_id"] is None and len(job["gen_ids"]) == 3
        return job

    job = killed_at("after_file_upload")
    assert (job["input_file_id"], job["creating"]) == (None, False) and not server.batch_jobs
    job = killed_at("after_batch_create")  # the resumed record: uploaded again, then made
    assert (job["input_file_id"], job["creating"]) == ("file-2", True) and len(server.batch_jobs) == 1
    last = cli(project, "run", "t1", "--batch", cfg=batch_cfg)
    out, err = last.communicate(timeout=120)
    assert last.returncode == 0, err[-3000:]
    assert all_done(project)
    assert sorted(sent(server).values()) == [1] * ALL_CALLS, "a generation went out twice"
    # made once: found in the provider's list when it may have been made already
    assert store_jobs(project)[0]["batch_id"] == "batch_1"


def test_expired_requests_go_into_the_next_job(batch_project):
    project, server = batch_project, batch_project.server
    server.push_batch_outcomes("expire:1")  # the drafts' job answers one of three, then expires
    assert project.run(workers=2)  # tasks in processes of their own
    assert all_done(project)
    counts = sent(server)
    assert sorted(counts.values()) == [1] * (ALL_CALLS - 2) + [2, 2]
    first = store_jobs(project)[0]
    assert first["status"] == "expired" and len(first["retry"]) == 2
    assert all("expired" in reason for reason in first["retry"].values())


def test_expired_requests_retried_by_ordinary_calls_when_configured(batch_project):
    import luigi.configuration

    luigi.configuration.get_config().set("llm.testsrv", "batch_retry", "sync")
    project, server = batch_project, batch_project.server
    server.push_batch_outcomes("expire:1")
    assert project.run()
    assert all_done(project)
    assert len(completions(server)) == 2  # the two expired drafts, called one by one
    assert sum(sent(server).values()) == ALL_CALLS


def test_partial_failure_retries_transient_errors_and_records_final_ones(batch_project):
    project, server = batch_project, batch_project.server
    server.push_faults("500", "400")  # the drafts job's first two lines
    assert not project.run()  # one draft failed for good
    drafts = [r["gen_id"] for r in project.membership("draft")]
    first = server.batch_jobs["batch_1"]["custom_ids"]
    transient, final = first[0], first[1]
    pm = project.json("draft", final, "parsed_metadata.json")
    assert pm["success"] is False and "HTTP 400 in batch job" in pm["error"]
    assert project.json("draft", transient, "parsed_metadata.json")["success"] is True
    assert sent(server)[transient] == 2 and sent(server)[final] == 1
    assert set(drafts) == set(first)
    # the next run retries the failure (in a new job) and finishes the cohort
    assert project.run()
    assert sent(server)[final] == 2


def test_a_job_that_fails_goes_out_again_and_gives_up_after_batch_max_jobs(batch_project):
    import luigi.configuration

    luigi.configuration.get_config().set("llm.testsrv", "batch_max_jobs", "2")
    project, server = batch_project, batch_project.server
    server.push_batch_outcomes("fail", "fail")
    assert not project.run()
    for d in project.membership("draft"):
        pm = project.json("draft", d["gen_id"], "parsed_metadata.json")
        assert pm["success"] is False and "no answer after 2 batch jobs" in pm["error"]
        assert "simulated job failure" in pm["error"]
    assert len(server.batch_jobs) == 2 and completions(server) == []


def run_main(*args) -> tuple[int, str]:
    """``daydream ARGS`` in this process: exit status and stderr."""
    import contextlib
    import io

    from pipeline.cli import main
    from conftest import reset_luigi_state

    reset_luigi_state()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


def test_a_provider_without_a_batch_api_is_one_clear_error(batch_project):
    batch_project.server.batch_api = False
    code, err = run_main("run", "t1")
    assert code == 2
    assert "error[config]: provider 'testsrv'" in err and "has no batch API" in err and "batch = false" in err
    assert "Traceback" not in err and completions(batch_project.server) == []


@pytest.fixture
def run_flag():
    """``--batch`` sets ``[daydream] batch`` in this process's config: taken back after the test."""
    import luigi.configuration

    yield
    luigi.configuration.get_config().remove_option("daydream", "batch")


def test_the_simulator_answers_batch_jobs_as_it_answers_calls(project, run_flag):
    """The demo's provider in batch mode: instant jobs, the same outputs as calls one by one."""
    from datafactory import SPEC
    from pipeline.ops.maintenance import invalidate

    spec = SPEC.replace("srv-a", "sim-a").replace("srv-b", "sim-a")
    (project.root / "cohorts" / "t1" / "spec" / "config.yaml").write_text(spec)
    code, err = run_main("run", "t1", "--batch")
    assert code == 0, err[-2000:]
    llm = [r for r in project.membership() if r["mode"] == "llm"]
    in_jobs = {(r["stage"], r["gen_id"]): project.read(r["stage"], r["gen_id"], "parsed.txt") for r in llm}
    for r in llm:
        rm = project.json(r["stage"], r["gen_id"], "raw_metadata.json")
        assert rm["simulated"] is True and rm["provider"] == "offline" and rm["batch_job"]["batch_id"].startswith("batch_")
    assert len({project.json(r["stage"], r["gen_id"], "raw_metadata.json")["batch_job"]["key"] for r in llm}) == 3
    import luigi.configuration

    luigi.configuration.get_config().remove_option("daydream", "batch")
    invalidate(project.paths, cohort_id="t1", stage="draft")
    code, err = run_main("run", "t1")
    assert code == 0, err[-2000:]
    for r in llm:
        assert "batch_job" not in project.json(r["stage"], r["gen_id"], "raw_metadata.json")
        assert project.read(r["stage"], r["gen_id"], "parsed.txt") == in_jobs[(r["stage"], r["gen_id"])]


def price_model_b(project) -> None:
    from conftest import reset_luigi_state

    path = project.root / "1_raw" / "llm_models.csv"
    path.write_text(path.read_text().replace("Model B,0.1,512,,", "Model B,0.1,512,1.0,2.0"))
    reset_luigi_state()


def test_spend_cap_counts_batch_prices(batch_project):
    from pipeline.store.ledger import read_ledger
    from pipeline.run.running import run_cohort

    import luigi.configuration

    luigi.configuration.get_config().set("llm.testsrv", "batch_max_requests", "5")
    project = batch_project
    price_model_b(project)
    assert run_cohort("t1", max_cost=5.0) == 0
    # jobs sized to the limit: 3 drafts, 3 essays, 12 evaluations in jobs of 5, 5 and 2
    assert sorted(len(j["custom_ids"]) for j in project.server.batch_jobs.values()) == [2, 3, 3, 5, 5]
    ledger = read_ledger(project.paths, "t1")
    recorded = sum(project.json(r["stage"], r["gen_id"], "raw_metadata.json")["cost_usd"]
                   for r in project.membership() if r["mode"] == "llm")
    assert ledger["calls"] == ALL_CALLS and ledger["reserved"] == {}
    assert ledger["spent_usd"] == pytest.approx(recorded)
    sync_price = sum((rm["prompt_tokens"] * 1.0 + rm["completion_tokens"] * 2.0) / 1e6
                     for rm in (project.json(r["stage"], r["gen_id"], "raw_metadata.json")
                                for r in project.membership() if r["mode"] == "llm"))
    assert recorded == pytest.approx(sync_price / 2)


def test_estimate_compares_batch_and_synchronous_cost(project):
    from pipeline.cli import main

    import io
    import contextlib

    price_model_b(project)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["estimate", "t1", "--json"]) == 0
    total = json.loads(buf.getvalue())["rows"][-1]
    assert total["cost_sync_usd"] > 0 and total["cost_batch_usd"] == pytest.approx(total["cost_sync_usd"] / 2)
    assert total["cost_usd"] == pytest.approx(total["cost_sync_usd"])  # the run makes calls one by one
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["estimate", "t1", "--batch"]) == 0
    assert "as provider batch jobs" in buf.getvalue() and "saves" in buf.getvalue()


def test_a_task_status_shows_its_jobs_while_they_run(batch_project):
    """What a generation task tells the visualiser as its job goes from submitted to collected."""
    from pipeline.run import batch_jobs
    from pipeline import config
    from pipeline.design.cohort import compile_cohort
    from pipeline.run.generation import runtime
    from pipeline.sitegen.live import live_status

    project, server = batch_project, batch_project.server
    compile_cohort(config.data_paths(), "t1")
    server.batch_delay = 0.3
    drafts = [r["gen_id"] for r in project.membership("draft")]
    messages: list[str] = []
    live: list[dict] = []  # the site's live run view, looked at while the job is in progress

    def status(message: str) -> None:
        messages.append(message)
        if "in_progress" in message and not live:
            live.append(live_status(config.data_paths())["cohorts"][0])

    assert batch_jobs.run(runtime(), "draft", drafts, since="", budget=None, status=status) == []
    assert any("draft batch job batch_1 on testsrv (test/model-a): in_progress" in m
               and "3 of this task's generations wait on it" in m for m in messages), messages
    assert "collected, 3 of 3 answered, 0 failed" in messages[-1]
    assert all(project.json("draft", g, "parsed_metadata.json")["success"] for g in drafts)
    [job] = live[0]["batch_jobs"]
    assert job["job"] == "batch_1" and job["stage"] == "draft" and job["status"] == "in_progress"
    essays_and_evaluations = len(project.membership()) - len(drafts)
    assert not job["collected"] and job["waiting"] == 3 and job["after"] == essays_and_evaluations
    [job] = live_status(config.data_paths())["cohorts"][0]["batch_jobs"]
    assert job["collected"] and job["completed"] == job["total"] == 3 and job["waiting"] == 0


def test_a_models_batch_discount_column(project):
    from conftest import reset_luigi_state
    from pipeline import config
    from pipeline.design.cohort import compile_cohort
    from pipeline.errors import DaydreamError
    from pipeline.run.estimate import estimate

    path = project.root / "1_raw" / "llm_models.csv"
    original = path.read_text()
    lines = original.splitlines()
    lines[0] += ",batch_discount"
    lines[1] += ",0.25"  # srv-a
    lines[2] = lines[2].replace("Model B,0.1,512,,", "Model B,0.1,512,1.0,2.0") + ","
    lines[3] += ","
    path.write_text("\n".join(lines) + "\n")
    reset_luigi_state()
    compile_cohort(config.data_paths(), "t1")
    rows = {(r["stage"], r["llm_model_id"]): r for r in estimate(config.data_paths(), "t1")}
    draft = rows[("draft", "srv-a")]
    assert draft["cost_batch_usd"] == pytest.approx(draft["cost_sync_usd"] * 0.75)
    evals = rows[("evaluation", "srv-b")]
    assert evals["cost_batch_usd"] == pytest.approx(evals["cost_sync_usd"] * 0.5)  # blank: the usual half
    lines = original.splitlines()
    path.write_text("\n".join([lines[0] + ",batch_discount"]
                              + [line + (",1.5" if line.startswith("srv-a") else ",") for line in lines[1:]]) + "\n")
    reset_luigi_state()
    with pytest.raises(DaydreamError, match="srv-a: batch_discount must be in"):
        compile_cohort(config.data_paths(), "t1")


def test_a_job_cancelled_at_the_provider_goes_out_again(batch_project):
    import threading

    from pipeline.run import batch_jobs
    from pipeline import config
    from pipeline.design.cohort import compile_cohort
    from pipeline.run.generation import runtime

    project, server = batch_project, batch_project.server
    compile_cohort(config.data_paths(), "t1")
    server.batch_delay = 0.5
    api = batch_jobs.batch_api("testsrv")

    def cancel_first(job):  # someone cancels it from the provider's console
        if job["id"] == "batch_1":
            threading.Thread(target=api.cancel, args=(job["id"],)).start()

    server.after_batch_create = cancel_first
    drafts = [r["gen_id"] for r in project.membership("draft")]
    assert batch_jobs.run(runtime(), "draft", drafts, since="", budget=None) == []
    api.close()
    first, second = store_jobs(project)
    assert first["status"] == "cancelled" and sorted(first["retry"]) == sorted(drafts)
    assert second["status"] == "completed" and sorted(second["gen_ids"]) == sorted(drafts)
    assert all(project.json("draft", g, "raw_metadata.json")["batch_job"]["batch_id"] == "batch_2" for g in drafts)


def test_a_run_in_batch_jobs_stops_at_its_cap(batch_project):
    """Each job reserves what fits under the cap; the essays' (8,192 tokens at most each) never fit."""
    from pipeline.store.ledger import read_ledger
    from pipeline.run.running import EXIT_BUDGET, run_cohort

    project = batch_project
    price_model_b(project)
    assert run_cohort("t1", max_cost=0.006) == EXIT_BUDGET
    ledger = read_ledger(project.paths, "t1")
    assert ledger["reserved"] == {} and ledger["spent_usd"] <= 0.006
    drafts = {d["gen_id"] for d in project.membership("draft")}
    assert all(project.json("draft", d, "parsed_metadata.json")["success"] for d in drafts)
    # one draft's bound (4,096 tokens) fits at a time; the copied essays' evaluations (512) may go too
    draft_jobs = [j["custom_ids"] for j in project.server.batch_jobs.values() if set(j["custom_ids"]) & drafts]
    assert [len(ids) for ids in draft_jobs] == [1, 1, 1]
    assert ledger["calls"] == sum(len(j["custom_ids"]) for j in project.server.batch_jobs.values())
    assert not any(project.paths.gen_file("essay", e["gen_id"], "raw.txt").exists()
                   for e in project.membership("essay") if e["mode"] == "llm")


def test_the_jobs_lock_waits_a_bounded_time_for_a_live_holder_and_not_at_all_after_a_dead_one(tmp_path, monkeypatch):
    from pipeline.run import batch_jobs
    from pipeline.store import DataPaths

    paths = DataPaths(tmp_path)
    assert_lock_wait_is_bounded(batch_jobs.jobs_dir(paths) / ".lock", lambda: batch_jobs._locked(paths),
                                monkeypatch, batch_jobs)
