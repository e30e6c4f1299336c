"""The ``daydream run`` and ``daydream status`` commands: a thin layer over ``RunCohort``.

``run_cohort`` makes exactly the one top-level ``luigi.build([RunCohort(...)])`` that the
``luigi`` command makes, after checking what can be checked up front (the spec compiles, the
scheduler answers, API keys are set) so those mistakes are one line, not a Luigi log. While it
runs, a progress bar follows the store (every worker process, every machine writes there).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from datetime import datetime

import luigi
import luigi.interface

from pipeline import config
from pipeline.store import spend
from pipeline.run.batch_jobs import cohort_jobs, format_jobs, progress_line
from pipeline.design.cohort import compile_cohort, terminal_progress
from pipeline.errors import DaydreamError
from pipeline.run.estimate import estimate, left_to_do
from pipeline.store.ledger import Budget, read_ledger
from pipeline.run.run_status import flight_line, format_runs, read_runs
from pipeline.run.run_plan import budget_line, call_records, check_max_cost, cohort_counts, membership, prepare_budget, prepare_providers, spend_cap
from pipeline.run.search_store import derive, is_search_cohort
from pipeline.run.generation import is_parse_failure, runtime, state_of
from pipeline.store.state import DONE, KINDS
from pipeline.store import STAGES
from pipeline.run.luigi_command import (check_config_layers, check_scheduler_resources, check_scheduler_url, check_workers,
                            configured_scheduler_url, log_file, quiet_console, sweep_killed_runs, used_providers,
                            wait_for_dead_workers)
from pipeline.tasks import ReportSite, RunCohort, run_stamp

EXIT_OK, EXIT_FAILED, EXIT_BUDGET = 0, 1, 3
PROGRESS_POLL_S = 0.5
MAX_BUILDS = 3  # against luigid: builds of RunCohort while a dead worker's tasks are released


class _UnprunedLocalScheduler(luigi.interface._WorkerSchedulerFactory):
    """Luigi's local scheduler, without pruning on every work request.

    ``luigi.build(local_scheduler=True)`` prunes on each ``get_work``, walking every task of the
    run, finished ones included: most of the scheduler's time at 10k generations and the part
    that grows with N. A local scheduler lives for one build and has nothing stale to prune.
    """

    def create_local_scheduler(self):
        import luigi.scheduler

        return luigi.scheduler.Scheduler(prune_on_get_work=False, record_task_history=False)


class StoreProgress:
    """A progress bar fed by the store: counts generations settled since the run started.

    Polling files (one ``stat`` per unfinished generation) sees every worker process and every
    machine, and the count only grows, so the bar never goes backwards.
    """

    def __init__(self, cohort_id: str, since: str):
        from tqdm import tqdm

        self.paths, self.cohort_id = config.data_paths(), cohort_id
        self.rows = membership(self.paths, cohort_id)
        self.since = datetime.fromisoformat(since).timestamp()
        rt, memo = runtime(), {}
        gens = str(self.paths.gens)  # plain strings: the poll runs beside the workers, keep it light
        self.waiting = [f"{gens}/{r['stage']}/{r['gen_id']}/parsed_metadata.json" for r in self.rows
                        if state_of(rt, r["stage"], r["gen_id"], memo).kind != DONE]
        self.bar = tqdm(total=len(self.rows), initial=len(self.rows) - len(self.waiting), unit="gen",
                        desc=cohort_id, file=sys.stderr)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(PROGRESS_POLL_S):
            self.advance()

    def _grown(self) -> int:
        """A search cohort's membership grows by a round at a time: follow it. Returns how many of
        the new generations were finished before this run (shared with earlier work)."""
        rows = membership(self.paths, self.cohort_id)
        if rows is self.rows:
            return 0
        known = {(r["stage"], r["gen_id"]) for r in self.rows}
        gens, old = str(self.paths.gens), 0
        for r in rows:
            if (r["stage"], r["gen_id"]) not in known:
                path = f"{gens}/{r['stage']}/{r['gen_id']}/parsed_metadata.json"
                try:
                    if os.stat(path).st_mtime < self.since:
                        old += 1
                        continue
                except FileNotFoundError:
                    pass
                self.waiting.append(path)
        self.rows = rows
        self.bar.total = len(rows)
        self.bar.refresh()
        return old

    def advance(self):
        fresh = self._grown()
        still = []
        for path in self.waiting:
            try:
                if os.stat(path).st_mtime >= self.since:
                    fresh += 1
                    continue
            except FileNotFoundError:
                pass
            still.append(path)
        self.waiting = still
        self.set(self.bar.n + fresh)
        # provider batch jobs the run waits on, and the calls in flight (the runs' status files)
        postfix = "; ".join(filter(None, (progress_line(self.paths), flight_line(read_runs(self.paths, self.cohort_id)))))
        if postfix or self.bar.postfix:
            self.bar.set_postfix_str(postfix)

    def set(self, n: int):
        if n > self.bar.n:
            self.bar.update(min(n, self.bar.total) - self.bar.n)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(PROGRESS_POLL_S + 5)  # a poll under way ends; it is a daemon all the same
        self.bar.close()


def _wait_for_other_runner(task: RunCohort, scheduler_url: str, own_worker: str, progress: "StoreProgress") -> bool:
    """After this process's build, while ``RunCohort`` is pending or running for a live worker
    elsewhere (another machine running the cohort), wait for it. True when that run finished
    the cohort's ``RunCohort``; False when no live worker holds it (one that was killed is
    dropped by luigid after ``worker_disconnect_delay``): then its work is this run's to finish."""
    import time

    from luigi.rpc import RemoteScheduler

    sched = RemoteScheduler(scheduler_url)
    while True:
        info = sched.task_list("", "", search=task.task_family).get(task.task_id)
        if not info or info["status"] not in ("PENDING", "RUNNING"):
            return bool(info) and info["status"] in ("DONE", "FAILED")
        alive = {w["name"] for w in sched.worker_list() if w.get("state") == "active"} - {own_worker}
        if not set(info.get("workers", [])) & alive:
            return False
        progress.advance()
        time.sleep(1.0)


def _failed_in(result, families: tuple[str, ...]) -> list[str]:
    """Which of the task ``families`` failed in this build (``luigi.build``'s detailed result)."""
    from luigi.execution_summary import _summary_dict

    failed = {t.task_family for t in _summary_dict(result.worker)["failed"]}
    return [f for f in families if f in failed]


def build_error(result) -> DaydreamError | None:
    """Why a build failed, when a task of it failed for a reason the user acts on (the store
    cannot be written: a full disk, a refused permission; a config error) rather than because
    generations failed: the first such task's message, which ``_DaydreamTask.on_failure`` gave
    the scheduler as one line (``error[<code>]: <message>``), from whichever process ran it."""
    import json
    import re

    sched = result.worker._scheduler
    ours = result.worker._scheduled_tasks
    failed = sched.task_list("FAILED", "", limit=False) or {}
    for task_id in sorted(t for t in failed if t in ours):
        expl = (sched.fetch_error(task_id) or {}).get("error") or ""
        try:
            expl = json.loads(expl)  # the worker sends it JSON-encoded
        except ValueError:
            pass
        expl = str(expl).strip()
        m = re.fullmatch(r"error\[(\w+)\]: (.*)", expl, re.S)
        if m and m.group(1) != "failed" and m.group(1) in DaydreamError.CODES:
            return DaydreamError(m.group(1), m.group(2))
    return None


def check_cost(cohort_id: str, rows: list[dict], cap: float | None, yes: bool) -> None:
    """A run estimated above ``[daydream] confirm_cost_above`` needs ``--yes``, unless a cap at
    or below that amount bounds it anyway."""
    threshold = config.confirm_cost_above()
    cost = rows[-1]["cost_usd"]
    if yes or cost is None or cost <= threshold or (cap is not None and cap <= threshold):
        return
    raise DaydreamError(
        "budget", f"cohort {cohort_id}: the remaining calls are estimated at {spend.usd(cost)} (at most "
                  f"{spend.usd(rows[-1]['cost_max_usd'])}), above [daydream] confirm_cost_above = "
                  f"{spend.usd(threshold)}; add --yes to go ahead, or cap the spend with --max-cost")


def run_cohort(cohort_id: str, *, workers: int = 1, local_scheduler: bool = True,
               scheduler_url: str | None = None, verbose: bool = False, yes: bool = False,
               max_cost: float | None = None, batch: bool = False) -> int:
    """The CLI's ``run``: compile, check, estimate, one ``luigi.build`` of ``RunCohort``, then
    the summary. Exit status 3 (``EXIT_BUDGET``) when the run stopped at its spend cap."""
    check_config_layers()
    check_workers(workers)
    paths = config.data_paths()
    check_max_cost(max_cost)  # a mistyped cap is reported before anything is written
    # and so is a luigid that does not answer, as the luigi command's before_run does
    url = None if local_scheduler else check_scheduler_url(scheduler_url or configured_scheduler_url())
    if batch:
        config.force_batch()
    compile_cohort(paths, cohort_id, confirm_above=None if yes else config.confirm_above(),
                   progress=terminal_progress(), seeded=lambda stored: runtime(paths).keep_metadata(stored))
    if is_search_cohort(paths, cohort_id):
        derive(paths, cohort_id)  # a USD budget it cannot judge, or that round 0 exceeds: one error before any call
    cap = spend_cap(paths, cohort_id, max_cost)
    prepare_providers(paths, cohort_id)
    sweep_killed_runs(paths, cohort_id)
    rows = estimate(paths, cohort_id)
    print(spend.format_estimate(cohort_id, rows), end="", file=sys.stderr)
    check_cost(cohort_id, rows, cap, yes)
    build = {"workers": workers, "detailed_summary": True}
    if local_scheduler:
        build.update(local_scheduler=True, worker_scheduler_factory=_UnprunedLocalScheduler())
    else:
        if scheduler_url:
            build["scheduler_url"] = url
        check_scheduler_resources(url, used_providers(paths, cohort_id))
        wait_for_dead_workers(url, lambda line: print(line, file=sys.stderr))
    config.default_resources()  # a provider that sets only its concurrency is bounded by it (before the scheduler is made)
    task = RunCohort(cohort_id=cohort_id, since=run_stamp(), yes=yes, max_cost=max_cost, ahead=local_scheduler,
                     batch_mode=batch)
    quiet_console(verbose)
    log_path, handler = log_file(cohort_id, task.since)
    try:
        return _run(task, build, paths, cohort_id, cap, local_scheduler, log_path)
    finally:
        logging.getLogger("luigi-interface").removeHandler(handler)
        handler.close()


def _run(task: RunCohort, build: dict, paths, cohort_id: str, cap: float | None, local_scheduler: bool,
         log_path) -> int:
    spend_ledger = prepare_budget(paths, cohort_id, cap, task.since)
    budget = None if cap is None else Budget(paths, cohort_id, cap, task.since)
    if spend_ledger is not None:
        print(f"spend cap {spend.usd(cap)}: {budget_line(spend_ledger)}", file=sys.stderr)
    with StoreProgress(cohort_id, task.since) as progress:
        for _ in range(MAX_BUILDS):
            result = luigi.build([task], **build)
            if local_scheduler or task.complete() or (budget is not None and budget.reached()) or _wait_for_other_runner(
                    task, build.get("scheduler_url") or configured_scheduler_url(), result.worker._id, progress):
                break
            # a worker that died (a killed run) held some of the cohort's tasks until luigid let
            # them go: build again to finish them
        counts = cohort_counts(paths, membership(paths, cohort_id), task.since,
                               budget_reached=budget is not None and budget.reached())
        progress.set(counts.done + counts.failed + counts.blocked)
    error = build_error(result)
    if error is not None:
        raise error  # one line, exit 2: what stopped the run, not a summary of what it left
    print(counts.summary(read_ledger(paths, cohort_id) if budget is not None else None), file=sys.stderr)
    print(f"log: {log_path}", file=sys.stderr)
    if is_search_cohort(paths, cohort_id):
        print(derive(paths, cohort_id)[0].line(), file=sys.stderr)
    site = paths.site_dir / "build" / "index.html"
    unbuilt = _failed_in(result, ("CohortReports", "ReportSite"))
    if unbuilt:
        # another run may have built the site since: this run's failure is still its own
        print(f"error: {' and '.join(unbuilt)} failed in this run (the site may be another run's); rerun with "
              "--verbose for Luigi's log", file=sys.stderr)
        return EXIT_FAILED
    if ReportSite().complete() and site.exists():
        print(f"report site: {site}\npreview it:  .venv/bin/daydream preview   (serves on 127.0.0.1)")
    else:
        status = result.status.name.lower().replace("_", " ")
        print(f"error: the reports or the site were not built (luigi: {status}; rerun with --verbose for "
              "Luigi's log)", file=sys.stderr)
        return EXIT_FAILED
    if counts.not_run_budget:
        print(f"the run stopped at its spend cap of {spend.usd(cap)}: {counts.not_run_budget} generations not run, "
              f"{left_to_do(paths, cohort_id)}; raise the cap (--max-cost, or budget_usd in the spec) and run again "
              "to continue", file=sys.stderr)
        return EXIT_BUDGET
    if counts.failed or counts.blocked or counts.remaining:
        return EXIT_FAILED
    return EXIT_OK


def cohort_status(cohort_id: str) -> dict:
    """States per stage (the one classifier), failure reasons, and the spend of the recorded
    calls per stage and model (``spend.spend_rows``), from the store; the ledger if a cap was used."""
    paths = config.data_paths()
    rows = membership(paths, cohort_id)
    counts = cohort_counts(paths, rows)
    records = call_records(paths, rows)
    spend_rows = spend.spend_rows(records)
    total = next((r for r in spend_rows if r["stage"] == spend.ALL), None) or dict.fromkeys(
        ("prompt_tokens", "completion_tokens", "cost_reported_usd", "cost_estimated_usd", "n_cost_unknown"), 0)
    return {"stages": counts.by_stage, "reasons": counts.reasons, "spend": spend_rows,
            "tokens": {"prompt": total["prompt_tokens"], "completion": total["completion_tokens"]},
            "cost_usd": total["cost_reported_usd"] + total["cost_estimated_usd"],  # the known part
            "cost_unknown": total["n_cost_unknown"], "simulated": any(r["simulated"] for r in records),
            "ledger": read_ledger(paths, cohort_id), "runs": read_runs(paths, cohort_id),
            "search": derive(paths, cohort_id)[0].line() if is_search_cohort(paths, cohort_id) else None}


def format_spend(rows: list[dict]) -> str:
    """The recorded calls' tokens and cost per stage and model, and which part of the cost the
    provider reported, which was estimated from the catalog prices, and how many calls are unknown."""
    total = next((r for r in rows if r["stage"] == spend.ALL), None)
    if total is None:
        return "  spend: no model calls recorded\n"
    lines = [f"  spend      {'model':<22}{'calls':>7}{'prompt tok':>12}{'compl. tok':>12}{'cost':>12}"
             f"{'reported':>12}{'estimated':>12}{'unknown':>9}"]
    models = {}
    for r in rows:
        models[r["stage"]] = models.get(r["stage"], 0) + 1
    for r in rows:
        if r["llm_model_id"] == spend.ALL and r["stage"] != spend.ALL and models[r["stage"]] == 2:
            continue  # a stage with one model: its total repeats that model's row
        lines.append(f"  {r['stage']:<11}{r['llm_model_id']:<22}{r['calls']:>7,}{r['prompt_tokens']:>12,}"
                     f"{r['completion_tokens']:>12,}{spend.usd(r['cost_usd']):>12}{spend.usd(r['cost_reported_usd']):>12}"
                     f"{spend.usd(r['cost_estimated_usd']):>12}{r['n_cost_unknown']:>9,}")
    return "\n".join(lines) + "\n"


def print_status(cohort_id: str) -> int:
    """Print the state table; exit status 1 unless every generation is done."""
    st = cohort_status(cohort_id)
    print(f"cohort {cohort_id}" + ("  (simulated output: offline provider)" if st["simulated"] else ""))
    print(f"  {'stage':<11}" + "".join(f"{k:>9}" for k in KINDS))
    for stage in STAGES:
        c = st["stages"].get(stage)
        if c is not None:
            print(f"  {stage:<11}" + "".join(f"{c[k]:>9}" for k in KINDS))
    if st["search"]:
        print(f"  {st['search']}")
    print(format_spend(st["spend"]), end="")
    if st["ledger"]:
        print(f"  spend ledger (runs under a cap): {budget_line(st['ledger'])}")
    print(format_jobs(cohort_jobs(config.data_paths(), membership(config.data_paths(), cohort_id))), end="")
    print(format_runs(st["runs"], cohort_id), end="")
    if st["reasons"]:
        print("  failures:")
        for (stage, reason), n in st["reasons"].most_common(20):
            print(f"    {n:>4} × {stage}: {reason}")
        parse_failures = sum(n for (_, reason), n in st["reasons"].items() if is_parse_failure(reason))
        if parse_failures:
            print(f"  {parse_failures} parse failures keep their paid response: a re-run re-reads it (no model call); "
                  f"after a parser or scale fix `daydream reparse {cohort_id}` re-reads every stored response, "
                  "and `--recall-failures` calls the model again")
    return EXIT_OK if all(c["done"] == sum(c.values()) for c in st["stages"].values()) else EXIT_FAILED
