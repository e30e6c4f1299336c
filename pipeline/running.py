"""The ``daydream run`` and ``daydream status`` commands: a thin layer over ``RunCohort``.

``run_cohort`` makes exactly the one top-level ``luigi.build([RunCohort(...)])`` that the
``luigi`` command makes, after checking what can be checked up front (the spec compiles, the
scheduler answers, API keys are set) so those mistakes are one line, not a Luigi log. While it
runs, a progress bar follows the store (every worker process, every machine writes there).
"""

from __future__ import annotations

import os
import sys
import threading
from datetime import datetime
from urllib.parse import urlparse

import luigi
import luigi.interface

from . import config
from .cohort import compile_cohort, terminal_progress
from .errors import DaydreamError
from .run_plan import cohort_counts, membership, prepare_providers
from .search_store import derive, is_search_cohort
from .generation import runtime, state_of
from .state import DONE, KINDS
from .store import STAGES, read_json
from .tasks import ReportSite, RunCohort, run_stamp

EXIT_OK, EXIT_FAILED = 0, 1
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


def _configured_scheduler_url() -> str:
    core = luigi.interface.core()
    return core.scheduler_url or f"http://{core.scheduler_host}:{core.scheduler_port}/"


def check_scheduler_url(url: str) -> str:
    """A luigid URL that answers, or one clear error (not three chained RPC retries)."""
    import urllib.request

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise DaydreamError("config", f"--scheduler-url {url!r} is not an http(s) URL (e.g. http://127.0.0.1:8082/)")
    try:
        parsed.port
    except ValueError:
        raise DaydreamError("config", f"--scheduler-url {url!r} has an invalid port") from None
    try:
        urllib.request.urlopen(url, timeout=5).close()
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        raise DaydreamError("scheduler", f"no luigid answers at {url} ({reason}); start one (see the README) "
                                         "or run without --scheduler-url") from None
    return url


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

    def set(self, n: int):
        if n > self.bar.n:
            self.bar.update(min(n, self.bar.total) - self.bar.n)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
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


def run_cohort(cohort_id: str, *, workers: int = 1, local_scheduler: bool = True,
               scheduler_url: str | None = None, verbose: bool = False, yes: bool = False) -> int:
    """The CLI's ``run``: compile, check, one ``luigi.build`` of ``RunCohort``, then the summary."""
    if workers < 1:
        raise DaydreamError("config", f"--workers must be at least 1, got {workers}")
    paths = config.data_paths()
    compile_cohort(paths, cohort_id, confirm_above=None if yes else config.confirm_above(),
                   progress=terminal_progress())
    prepare_providers(paths, cohort_id)
    build = {"workers": workers, "log_level": "INFO" if verbose else "CRITICAL", "detailed_summary": True}
    if local_scheduler:
        build.update(local_scheduler=True, worker_scheduler_factory=_UnprunedLocalScheduler())
    elif scheduler_url:
        build["scheduler_url"] = check_scheduler_url(scheduler_url)
    task = RunCohort(cohort_id=cohort_id, since=run_stamp(), yes=yes)
    with StoreProgress(cohort_id, task.since) as progress:
        for _ in range(MAX_BUILDS):
            result = luigi.build([task], **build)
            if local_scheduler or task.complete() or _wait_for_other_runner(
                    task, build.get("scheduler_url") or _configured_scheduler_url(), result.worker._id, progress):
                break
            # a worker that died (a killed run) held some of the cohort's tasks until luigid let
            # them go: build again to finish them
        counts = cohort_counts(paths, membership(paths, cohort_id), task.since)
        progress.set(counts.done + counts.failed + counts.blocked)
    print(counts.summary(), file=sys.stderr)
    if is_search_cohort(paths, cohort_id):
        print(derive(paths, cohort_id)[0].line(), file=sys.stderr)
    site = paths.site_dir / "build" / "index.html"
    if ReportSite().complete() and site.exists():
        print(f"report site: {site}\npreview it:  .venv/bin/daydream preview   (serves on 127.0.0.1)")
    else:
        status = result.status.name.lower().replace("_", " ")
        print(f"error: the reports or the site were not built (luigi: {status}; rerun with --verbose for "
              "Luigi's log)", file=sys.stderr)
        return EXIT_FAILED
    if counts.failed or counts.blocked or counts.remaining:
        return EXIT_FAILED
    return EXIT_OK


def cohort_status(cohort_id: str) -> dict:
    """States per stage (the one classifier), failure reasons, tokens and cost, from the store."""
    paths = config.data_paths()
    rows = membership(paths, cohort_id)
    counts = cohort_counts(paths, rows)
    tokens = {"prompt": 0, "completion": 0}
    cost, cost_unknown, simulated = 0.0, 0, False
    for row in rows:
        rm = read_json(paths.gen_file(row["stage"], row["gen_id"], "raw_metadata.json")) or {}
        tokens["prompt"] += rm.get("prompt_tokens") or 0
        tokens["completion"] += rm.get("completion_tokens") or 0
        if rm and rm.get("mode") != "copy":
            if rm.get("cost_usd") is None:
                cost_unknown += 1
            else:
                cost += rm["cost_usd"]
        simulated |= bool(rm.get("simulated"))
    search = derive(paths, cohort_id)[0].line() if is_search_cohort(paths, cohort_id) else None
    return {"stages": counts.by_stage, "reasons": counts.reasons, "tokens": tokens, "cost_usd": cost,
            "cost_unknown": cost_unknown, "simulated": simulated, "search": search}


def print_status(cohort_id: str) -> int:
    """Print the state table; exit status 1 unless every generation is done."""
    st = cohort_status(cohort_id)
    print(f"cohort {cohort_id}" + ("  (simulated output: offline provider)" if st["simulated"] else ""))
    print(f"  {'stage':<11}" + "".join(f"{k:>9}" for k in KINDS))
    for stage in STAGES:
        c = st["stages"].get(stage)
        if c is not None:
            print(f"  {stage:<11}" + "".join(f"{c[k]:>9}" for k in KINDS))
    cost = f"${st['cost_usd']:.4f}"
    if st["cost_unknown"]:
        cost += f" + unknown for {st['cost_unknown']} calls"
    if st["search"]:
        print(f"  {st['search']}")
    print(f"  tokens: {st['tokens']['prompt']:,} prompt, {st['tokens']['completion']:,} completion; cost: {cost}")
    if st["reasons"]:
        print("  failures:")
        for (stage, reason), n in st["reasons"].most_common(20):
            print(f"    {n:>4} × {stage}: {reason}")
    return EXIT_OK if all(c["done"] == sum(c.values()) for c in st["stages"].values()) else EXIT_FAILED
