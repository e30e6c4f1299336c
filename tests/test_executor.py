"""The executor: generations started ahead of their tasks (a chunk's members), each once, on one
background loop; the tasks then join them instead of calling the model again."""

from __future__ import annotations

import time

import luigi.configuration
import pytest

from pipeline import config
from pipeline.design.cohort import compile_cohort
from pipeline.run.executor import (ExecutorProcess, executor, run_batch, run_generation, settle_ahead, start_ahead,
                                   under_way)
from pipeline.run.generation import runtime, state_of
from pipeline.run.run_plan import membership
from pipeline.store.state import BLOCKED, DONE, FAILED
from pipeline.tasks import run_stamp


def completions(server):
    return [r for r in server.requests if r["path"].endswith("/chat/completions")]


def compiled(project, *cohorts: str) -> list[dict]:
    for cohort in cohorts:
        compile_cohort(config.data_paths(), cohort)
    return membership(config.data_paths(), cohorts[0])


def settle(rt, rows, since, timeout=30.0) -> dict[str, str]:
    """Wait for every generation started ahead to have ended; each member's state kind."""
    ex = executor(rt)
    assert isinstance(ex, ExecutorProcess)  # calls started ahead run in a process of their own
    deadline = time.monotonic() + timeout
    while ex.claimed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not ex.claimed, "generations still under way"
    return {r["gen_id"]: state_of(rt, r["stage"], r["gen_id"]).kind for r in rows}


def slow_disk(monkeypatch, seconds: float, before=lambda: None) -> None:
    """Every fsync and syncfs (``store``'s, which the writer uses where the kernel has it) takes
    ``seconds`` longer; ``before`` runs as each begins. Set before the executor's process forks."""
    import os

    from pipeline import store

    fsync, syncfs = os.fsync, store._SYNCFS

    def slow(real):
        def call(fd):
            before()
            time.sleep(seconds)
            return real(fd)
        return call

    monkeypatch.setattr(os, "fsync", slow(fsync))
    if syncfs is not None:
        monkeypatch.setattr(store, "_SYNCFS", slow(syncfs))


def by_stage(rows, stage):
    return [r["gen_id"] for r in rows if r["stage"] == stage]


def test_a_chunk_started_ahead_settles_parents_first_and_its_tasks_call_nothing_again(project):
    rows = compiled(project, "t1")
    rt, since = runtime(), run_stamp()
    project.server.latency = 0.15  # calls faster than executor.AHEAD_MIN_LATENCY_S are not started ahead
    start_ahead(rt, rows, since, None)
    states = settle(rt, rows, since)
    assert set(states.values()) == {DONE}  # an essay started before its draft was done would not be
    llm_rows = [r for r in rows if r["llm_model_id"]]
    assert len(completions(project.server)) == len(llm_rows)
    project.server.reset()
    for stage in ("draft", "essay", "evaluation"):
        got = run_batch(rt, stage, by_stage(rows, stage), in_flight=2, since=since)
        assert {s.kind for s in got.values()} == {DONE}
    assert completions(project.server) == []


def test_generations_run_on_libuvs_event_loop(project):
    import uvloop  # a dependency wherever the project runs (not Windows)

    rows = compiled(project, "t1")
    rt = runtime()
    assert run_generation(rt, "draft", by_stage(rows, "draft")[0], since=run_stamp()).kind == DONE
    assert isinstance(executor(rt).loop, uvloop.Loop)


def test_a_failure_started_ahead_is_not_called_again_by_its_task_and_blocks_its_children(project):
    rows = compiled(project, "t1")
    rt, since = runtime(), run_stamp()
    project.server.latency = 0.15
    project.server.rule = lambda body: "400" if body["messages"][-1]["content"].startswith("TASK:DRAFT") and \
        "Alpha" in body["messages"][-1]["content"] and "Beta" in body["messages"][-1]["content"] else None
    start_ahead(rt, rows, since, None)
    states = settle(rt, rows, since)
    failed = [g for g, k in states.items() if k == FAILED]
    assert len(failed) == 1 and failed[0] in by_stage(rows, "draft")  # the one combo of Alpha and Beta
    bad_draft = failed[0]
    calls = len(completions(project.server))
    # the failed draft's task finds it settled for this run; its children are blocked, uncalled
    assert run_generation(rt, "draft", bad_draft, since=since).kind == FAILED
    children = [r for r in rows if r["stage"] == "essay" and
                state_of(rt, "essay", r["gen_id"]).kind == BLOCKED]
    assert children, "the failed draft's essays are blocked"
    got = run_batch(rt, "essay", [r["gen_id"] for r in children], in_flight=2, since=since)
    assert {s.kind for s in got.values()} == {BLOCKED}
    assert len(completions(project.server)) == calls
    # a later run (a new since) retries it
    project.server.rule = None
    assert run_generation(rt, "draft", bad_draft, since=run_stamp()).kind == DONE
    assert len(completions(project.server)) == calls + 1


def test_a_task_joins_the_generation_its_chunk_started_instead_of_calling_twice(project):
    rows = compiled(project, "t1")
    rt, since = runtime(), run_stamp()
    project.server.latency = 0.3
    drafts = by_stage(rows, "draft")
    start_ahead(rt, [r for r in rows if r["stage"] == "draft"], since, None)
    time.sleep(0.1)  # the drafts' calls are under way
    got = run_batch(rt, "draft", drafts, in_flight=1, since=since)
    assert {s.kind for s in got.values()} == {DONE}
    assert len(completions(project.server)) == len(drafts)
    # joined, not queued one at a time behind in_flight=1: the batch took about one call's time
    assert project.server.max_concurrency_seen == len(drafts)


def test_a_generation_its_task_settled_is_not_under_way_while_its_ahead_slot_still_waits(project):
    luigi.configuration.get_config().set("resources", "llm_testsrv", "1")  # one call ahead at a time
    # the first call outlasts the others' batch even on a loaded machine, and its timeout
    luigi.configuration.get_config().set("llm.testsrv", "timeout", "10")
    rows = compiled(project, "t1")
    drafts = [r for r in rows if r["stage"] == "draft"]
    rt, since = runtime(), run_stamp()
    first = []
    project.server.rule = lambda body: None if first else first.append(1) or "latency:3"
    start_ahead(rt, drafts, since, None)  # the first draft holds the one slot; the others wait for it
    deadline = time.monotonic() + 10  # its call is the server's first (the slow one) before theirs go
    while not project.server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    others = [r["gen_id"] for r in drafts[1:]]
    got = run_batch(rt, "draft", others, in_flight=2, since=since)  # their tasks run them meanwhile
    assert {s.kind for s in got.values()} == {DONE}
    # what Luigi asks next (their essays' requirement): settled, though still queued ahead
    assert not any(under_way(rt, "draft", g, since) for g in others)
    assert under_way(rt, "draft", drafts[0]["gen_id"], since)
    assert set(settle(rt, drafts, since).values()) == {DONE}
    assert len(completions(project.server)) == len(drafts)  # none called twice


@pytest.mark.parametrize("argv, lookahead, expected", [
    (["RunCohort", "--cohort-id", "t1", "--local-scheduler"], None, True),
    (["RunCohort", "--cohort-id", "t1"], None, False),  # luigid: another process may run the same tasks
    (["RunCohort", "--cohort-id", "t1", "--local-scheduler"], "false", False),
])
def test_the_luigi_command_starts_calls_ahead_only_under_the_local_scheduler(project, argv, lookahead, expected,
                                                                            request):
    from luigi.cmdline_parser import CmdlineParser

    if "--local-scheduler" not in argv:  # the command checks that luigid answers before anything else
        argv = argv + ["--scheduler-url", request.getfixturevalue("luigid").url]
    compiled(project, "t1")
    cfg = luigi.configuration.get_config()
    if lookahead is not None:
        if not cfg.has_section("daydream"):
            cfg.add_section("daydream")
        cfg.set("daydream", "lookahead", lookahead)
    try:
        with CmdlineParser.global_instance(argv) as cp:
            task = cp.get_task_obj()
            assert task.ahead is expected
            assert all(chunk.ahead is expected for chunk in task._chunks())
    finally:
        if lookahead is not None:
            cfg.remove_option("daydream", "lookahead")


def test_calls_that_answer_at_once_are_not_started_ahead_past_the_first_few(project):
    # nothing to hide behind an instant call: starting it ahead would only make two threads take turns
    rows = compiled(project, "t1")
    rt, since = runtime(), run_stamp()
    start_ahead(rt, rows, since, None)
    states = settle(rt, rows, since)
    drafts = by_stage(rows, "draft")
    assert len(completions(project.server)) == len(drafts)  # the first gate's worth, which measured them
    assert all(states[g] == DONE for g in drafts)
    llm_essays = [r["gen_id"] for r in rows if r["stage"] == "essay" and r["llm_model_id"]]
    assert llm_essays and all(states[g] != DONE for g in llm_essays)


def test_settle_ahead_returns_once_what_was_started_ahead_has_ended_with_what_is_left(project):
    rows = compiled(project, "t1")
    rt, since = runtime(), run_stamp()
    project.server.latency = 0.15
    todo = start_ahead(rt, rows, since, None)
    assert len(todo) == len(rows) and executor(rt).claimed  # a fresh cohort: every member under way
    assert settle_ahead(rt, todo, since) == []
    assert not executor(rt).claimed
    assert {state_of(rt, r["stage"], r["gen_id"]).kind for r in rows} == {DONE}
    assert len(completions(project.server)) == sum(1 for r in rows if r["llm_model_id"])  # each called once


def test_settle_ahead_hands_back_what_was_not_started_ahead(project):
    # an instant provider: only the first gate's worth is started ahead (see the test above)
    rows = compiled(project, "t1")
    rt, since = runtime(), run_stamp()
    left = settle_ahead(rt, start_ahead(rt, rows, since, None), since)
    states = {r["gen_id"]: state_of(rt, r["stage"], r["gen_id"]).kind for r in rows}
    assert left and [r["gen_id"] for r in left] == [g for g, kind in states.items() if kind != DONE]


def test_settle_ahead_returns_when_the_executors_process_is_gone(project):
    rows = compiled(project, "t1")
    rt, since = runtime(), run_stamp()
    project.server.latency = 10  # nothing answers while the test runs
    todo = start_ahead(rt, rows, since, None)
    ex = executor(rt)
    ex.process.kill()
    began = time.monotonic()
    left = settle_ahead(rt, todo, since)
    assert time.monotonic() - began < 5  # ALIVE_CHECK_S notices it; not the calls' 10 s
    assert ex.ended and len(left) == len(rows)  # nothing settled: the generation tasks say so


def test_the_next_chunks_are_started_behind_this_one_and_what_they_settled_before_is_not_called(project):
    """Each chunk after this one is started behind the one before it, so the calls go on from
    chunk to chunk while Luigi's worker is still on this chunk's tasks; a chunk opened later
    hands over nothing already followed."""
    from pipeline.run.run_plan import chunk_members

    compiled(project, "t1")
    first, second, third = chunk_members(config.data_paths(), "t1", 1)[:3]  # a lineage's worth each
    rt, since = runtime(), run_stamp()
    project.server.latency = 0.15
    done_before = next(r["gen_id"] for r in second if r["stage"] == "draft")
    assert run_generation(rt, "draft", done_before, since=run_stamp()).kind == DONE  # an earlier run's
    project.server.reset()
    start_ahead(rt, first, since, None, following=[second, third])
    states = settle(rt, first + second + third, since)
    assert set(states.values()) == {DONE}
    called = [r for r in first + second + third if r["llm_model_id"] and r["gen_id"] != done_before]
    assert len(completions(project.server)) == len(called)
    ex = executor(rt)
    assert not ex.claimed  # nothing left looking under way to the next chunks' tasks
    assert not any(under_way(rt, r["stage"], r["gen_id"], since) for r in second + third)
    followed = set(ex.followed)
    assert start_ahead(rt, second, since, None, following=[third]) == [] and ex.followed == followed


def test_a_generation_found_done_ahead_does_not_make_its_endpoint_look_quick(project):
    # only calls made say how long the endpoint takes: one found done takes no time at all
    luigi.configuration.get_config().set("resources", "llm_testsrv", "1")  # through the gate one at a time
    rows = compiled(project, "t1")
    drafts = [r for r in rows if r["stage"] == "draft"]
    rt = runtime()
    project.server.latency = 0.15
    assert run_generation(rt, "draft", drafts[0]["gen_id"], since=run_stamp()).kind == DONE  # an earlier run's
    project.server.reset()
    since = run_stamp()
    start_ahead(rt, [], since, None, following=[drafts])  # the next chunk's are not looked at first
    deadline = time.monotonic() + 10
    while not executor(rt).claimed and time.monotonic() < deadline:  # claimed as the executor starts them
        time.sleep(0.01)
    assert set(settle(rt, drafts, since).values()) == {DONE}
    assert len(completions(project.server)) == len(drafts) - 1


def test_a_chunk_yields_the_ends_of_its_lineages_and_reaches_the_rest_through_requires():
    """Luigi adds a yielded task and, through ``requires``, every ancestor, once per path: a chunk
    that also yielded the ancestors paid for each of them again (against luigid, an RPC each)."""
    from pipeline.run.run_plan import lineage_ends

    rows = [{"gen_id": "d1", "parent_gen_id": ""}, {"gen_id": "e1", "parent_gen_id": "d1"},
            {"gen_id": "v1", "parent_gen_id": "e1"}, {"gen_id": "v2", "parent_gen_id": "e1"},
            {"gen_id": "e2", "parent_gen_id": "d1"},  # an essay not evaluated (yet) in this chunk
            {"gen_id": "d2", "parent_gen_id": ""},  # a draft whose essays are settled
            {"gen_id": "v3", "parent_gen_id": "e9"}]  # scores an essay of another cohort
    ends = [r["gen_id"] for r in lineage_ends(rows)]
    assert ends == ["v1", "v2", "e2", "d2", "v3"]
    parent = {r["gen_id"]: r["parent_gen_id"] for r in rows}
    reached = set()
    for g in ends:
        while g in parent:
            reached.add(g)
            g = parent[g]
    assert reached == set(parent)  # every row is an end or the ancestor of one


def test_the_executors_process_ends_with_its_driver_even_while_a_forked_sibling_holds_the_pipe(tmp_path):
    """A Luigi worker forked from the driver inherits the command pipe's end, so the driver's
    death does not close it: the executor's process still notices (its parent is gone) and ends."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path / "data"
    shutil.copytree(Path(__file__).resolve().parents[1] / "data" / "1_raw", root / "1_raw")
    driver = subprocess.run([sys.executable, "-c", """
import os, sys, time
from pipeline.run.executor import ExecutorProcess
from pipeline.run.generation import runtime
ex = ExecutorProcess(runtime())
sibling = os.fork()
if sibling == 0:
    time.sleep(60)
    os._exit(0)
print(ex.process.pid, sibling, flush=True)
os._exit(0)  # killed, as it were: no exit handler closes the executor
"""], env=dict(os.environ, DAYDREAM_DATA_ROOT=str(root)), timeout=60,
                            # files, not pipes: the processes left behind hold them open
                            stdout=(tmp_path / "out").open("w"), stderr=(tmp_path / "err").open("w"))
    assert driver.returncode == 0, (tmp_path / "err").read_text()
    executor_pid, sibling = map(int, (tmp_path / "out").read_text().split())

    def alive(pid: int) -> bool:
        try:
            return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith(("Z", "X"))
        except (FileNotFoundError, ProcessLookupError):
            return False

    try:
        deadline = time.monotonic() + 10
        while alive(executor_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(executor_pid), "the executor's process outlived its driver"
        assert alive(sibling)  # the pipe's other end was still open all along
    finally:
        for pid in (executor_pid, sibling):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def test_a_slow_disk_does_not_stall_the_calls_and_nothing_is_reported_done_before_it_is_written(project, monkeypatch):
    """Each fsync (or syncfs) takes 40 ms: the generations' files are committed on the writer's threads, so
    the loop keeps turning (and making calls) meanwhile, where committing on it stalled it for
    five fsyncs a generation; and each generation is reported done only once its files are in
    place."""
    import asyncio
    import os

    rows = compiled(project, "t1")
    rt, since = runtime(), run_stamp()
    slow_disk(monkeypatch, 0.04)
    ex = executor(rt)
    rt.provider("testsrv")  # its SDK imported here, not on the loop while it is timed
    lags: list[float] = []

    async def ticker():
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - t - 0.005)

    tick = asyncio.run_coroutine_threadsafe(ticker(), ex.loop)
    reported: dict[str, bool] = {}

    def seen(stage, states):
        for gen_id, st in states.items():  # what is reported done is in place at that moment
            if gen_id not in reported:
                d = rt.gen_dir(stage, gen_id)
                reported[gen_id] = st.kind == DONE and all(
                    os.path.exists(f"{d}/{name}") for name in ("prompt.txt", "raw.txt", "raw_metadata.json",
                                                                "parsed.txt", "parsed_metadata.json"))
    try:
        for stage in ("draft", "essay", "evaluation"):
            run_batch(rt, stage, by_stage(rows, stage), in_flight=4, since=since,
                      progress=lambda states, stage=stage: seen(stage, states))
    finally:
        tick.cancel()
    assert reported == {r["gen_id"]: True for r in rows} and len(rows) >= 8
    # committed on the loop, every generation stalled it for five fsyncs (0.2 s); a tick or two may
    # lag as long on a loaded machine
    stalls = sum(lag > 0.15 for lag in lags)
    assert len(lags) > 20 and stalls <= 2, f"the loop stalled {stalls} times, up to {max(lags):.3f} s"


def test_one_quick_answer_among_slow_ones_does_not_stop_the_calls_started_ahead(project):
    """Calls are started ahead unless the provider answers too fast to gain from it: judged on
    the recent calls' median, so one quick answer from a heavy-tailed provider changes nothing."""
    luigi.configuration.get_config().set("resources", "llm_testsrv", "1")  # ahead one at a time
    rows = compiled(project, "t1")
    llm_rows = [r for r in rows if r["llm_model_id"]]
    rt, since = runtime(), run_stamp()
    seen = []
    project.server.rule = lambda body: seen.append(1) or (None if len(seen) == 3 else "latency:0.15")
    start_ahead(rt, rows, since, None)
    assert set(settle(rt, rows, since).values()) == {DONE}  # none left to its task
    assert len(completions(project.server)) == len(llm_rows) > 3


def test_a_generation_cancelled_during_its_commit_still_puts_its_files_in_place_before_its_claim_goes(project, monkeypatch):
    """The run stops (its generations are cancelled) while a generation's files are being
    fsynced: the answer already paid for is written, and its claim is removed only after."""
    import asyncio
    import glob
    import os

    rows = compiled(project, "t1")
    draft = by_stage(rows, "draft")[0]
    rt, since = runtime(), run_stamp()
    d = rt.gen_dir("draft", draft)
    seen: list[tuple[bool, bool]] = []  # at each sync of its commit: (claim held, record in place)

    def at_sync():  # other files are synced too (the run's status file, every second)
        if glob.glob(f"{d}/.*.tmp"):
            seen.append((os.path.exists(f"{d}/claim.json"), os.path.exists(f"{d}/parsed_metadata.json")))

    slow_disk(monkeypatch, 0.3, at_sync)
    ex = executor(rt)
    rt.provider("testsrv")
    under_way = asyncio.run_coroutine_threadsafe(ex.outcome("draft", draft, since, None), ex.loop)
    deadline = time.monotonic() + 20
    while not glob.glob(f"{d}/.*.tmp") and time.monotonic() < deadline:  # its commit has begun
        time.sleep(0.01)
    assert glob.glob(f"{d}/.*.tmp"), "the commit never began"
    under_way.cancel()
    while (ex.running or os.path.exists(f"{d}/claim.json")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen and all(claim and not record for claim, record in seen)  # fsyncs under the claim, before the renames
    assert not os.path.exists(f"{d}/claim.json") and not glob.glob(f"{d}/.*.tmp")
    assert state_of(rt, "draft", draft).kind == DONE and len(completions(project.server)) == 1


def test_a_generation_started_ahead_gives_its_call_slot_back_once_answered_not_once_written(project, monkeypatch):
    """One call slot, 0.15 s calls, 0.3 s syncs: the next call goes out as the previous one
    answers, while its files are still being written."""
    luigi.configuration.get_config().set("resources", "llm_testsrv", "1")  # one call ahead at a time
    rows = compiled(project, "t1")
    drafts = [r for r in rows if r["stage"] == "draft"]
    rt, since = runtime(), run_stamp()
    began: list[float] = []
    project.server.latency = 0.15
    project.server.rule = lambda body: began.append(time.monotonic()) and None
    slow_disk(monkeypatch, 0.3)  # the executor's process, forked next, has it too
    start_ahead(rt, drafts, since, None)
    assert set(settle(rt, drafts, since).values()) == {DONE}
    gaps = [b - a for a, b in zip(began, began[1:])]
    assert len(began) == len(drafts) >= 3 and max(gaps) < 0.4, gaps  # holding the slot: ≥ 0.45 s
