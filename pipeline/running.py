"""Driving a cohort through Luigi, and saying what happened.

``drive`` hands the scheduler the cohort's generations a chunk at a time, one build per chunk.
Luigi's scheduler rescans every pending task on each work request, so one flat build of N tasks
costs O(N²); bounded chunks keep a 10,000-generation cohort linear. Chunks also make failure
handling explicit: a failed generation is recorded in the store, its descendants are skipped
(and reported), and every other chunk still runs. Several drivers (on several machines) may drive
the same cohort against one ``luigid``: the scheduler gives each task to one worker, and a driver
whose chunk is being worked on elsewhere waits for the store to show the results.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import luigi
import luigi.interface

from . import config
from .cohort import compile_cohort, read_membership
from .stages import phase_json
from .store import STAGES, read_json
from .tasks import ReportSite, RunCohort, _Generation, generation_tasks, prepare_providers

PROGRESS_HOOKS: list[Callable[[dict], None]] = []  # in-process observers of RunCohort's progress
LAST_RESULT: dict[str, "DriveResult"] = {}  # cohort_id -> the last drive in this process
_FAILURES: dict[str, str] = {}  # gen_id -> why its task failed (in-process workers), when the store could not say
STALL_SECONDS = 900.0  # remote mode: give up on a chunk when nothing progressed for this long


@dataclass
class DriveResult:
    total: int = 0
    done: int = 0
    failed: dict[str, str] = field(default_factory=dict)   # gen_id -> reason
    blocked: set[str] = field(default_factory=set)          # not run: an ancestor failed

    def counts(self) -> dict:
        finished = self.done + len(self.failed) + len(self.blocked)
        return {"total": self.total, "done": self.done, "failed": len(self.failed) + len(self.blocked),
                "remaining": self.total - finished}

    def summary(self) -> str:
        text = (f"{self.total} generations: {self.done} done, {len(self.failed)} failed, "
                f"{len(self.blocked)} not run because an ancestor failed")
        if self.failed:
            reasons = Counter(r.split("\n")[0][:160] for r in self.failed.values())
            text += "; failures: " + "; ".join(f"{n} × {r}" for r, n in reasons.most_common(5))
        return text


def nested_build_kwargs() -> dict:
    """Build arguments matching the scheduler this process was started with (``luigi`` CLI)."""
    core = luigi.interface.core()
    kw = {"workers": core.workers, "no_lock": True, "log_level": core.log_level}
    if core.local_scheduler:
        kw["local_scheduler"] = True
    elif core.scheduler_url:
        kw["scheduler_url"] = core.scheduler_url
    else:
        kw["scheduler_host"], kw["scheduler_port"] = core.scheduler_host, core.scheduler_port
    return kw


@_Generation.event_handler(luigi.Event.FAILURE)
def _on_failure(task, exception) -> None:
    for gen_id in task.gen_ids():
        _FAILURES[gen_id] = str(exception).split("\n")[0]


def _recorded_failure(paths, stage: str, gen_id: str, since: str) -> str | None:
    pm = phase_json(paths.gen_file(stage, gen_id, "parsed_metadata.json"))
    if pm and not pm.get("success") and str(pm.get("finished_at", "")) >= since:
        return str(pm.get("error") or "failed")
    return None


def drive(cohort_id: str, build_kwargs: dict, *, chunk_size: int | None = None,
          progress: Callable[[dict], None] = lambda counts: None, poll_s: float = 1.0) -> DriveResult:
    """Run every generation of a compiled cohort, chunk by chunk; never raises for failures."""
    paths = config.data_paths()
    tasks = generation_tasks(cohort_id)
    size = chunk_size or config.chunk_size()
    local = bool(build_kwargs.get("local_scheduler"))
    since = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    result = DriveResult(total=len(tasks))
    for start in range(0, len(tasks), size):
        pending = []
        for t in tasks[start:start + size]:
            parent = t._metadata(t.gen_id).get("parent_gen_id")
            if parent and (parent in result.failed or parent in result.blocked):
                result.blocked.add(t.gen_id)
            elif t.complete():
                result.done += 1  # nothing to schedule: re-runs of finished work stay cheap
            else:
                pending.append(t)
        last_progress = time.monotonic()
        while pending:
            luigi.build(pending, **build_kwargs)
            still = []
            for t in pending:  # parents precede children, so one pass propagates failures
                parent = t._metadata(t.gen_id).get("parent_gen_id")
                if t.complete():
                    result.done += 1
                elif (reason := _recorded_failure(paths, t.stage, t.gen_id, since)) is not None:
                    result.failed[t.gen_id] = reason
                elif parent and (parent in result.failed or parent in result.blocked):
                    result.blocked.add(t.gen_id)
                else:
                    still.append(t)  # a batch-mate failed, or another worker has it
            progressed = len(still) < len(pending)
            pending = still
            progress(result.counts())
            if progressed:
                last_progress = time.monotonic()
            elif local or time.monotonic() - last_progress > STALL_SECONDS:
                for t in pending:
                    result.failed[t.gen_id] = _FAILURES.get(t.gen_id, "not run (see the Luigi log: rerun with --verbose)")
                break
            elif pending:
                time.sleep(poll_s)
    LAST_RESULT[cohort_id] = result
    return result


def run_cohort(cohort_id: str, *, workers: int = 1, local_scheduler: bool = True,
               scheduler_url: str | None = None, verbose: bool = False) -> int:
    """The CLI's ``run``: compile, check keys, run ``RunCohort``, print the status.

    With a central scheduler, a second ``run`` of the same cohort (another machine) finds
    ``RunCohort`` already running elsewhere and joins in as an extra driver of the same chunks.
    """
    from tqdm import tqdm

    paths = config.data_paths()
    compile_cohort(paths, cohort_id)
    tasks = generation_tasks(cohort_id)
    prepare_providers(tasks)
    build = {"workers": workers, "no_lock": True, "log_level": "INFO" if verbose else "CRITICAL"}
    if local_scheduler:
        build["local_scheduler"] = True
    elif scheduler_url:
        build["scheduler_url"] = scheduler_url

    bar = tqdm(total=len(tasks), unit="gen", desc=cohort_id, file=sys.stderr)

    @_Generation.event_handler(luigi.Event.SUCCESS)
    def _advance(task):  # live updates from in-process workers; chunk ends resynchronise
        bar.update(min(len(task.gen_ids()), bar.total - bar.n))

    def _sync(counts: dict) -> None:
        bar.n = counts["done"] + counts["failed"]
        bar.set_postfix(failed=counts["failed"])
        bar.refresh()

    PROGRESS_HOOKS.append(_sync)
    helper = None
    try:
        outer = dict(build, workers=1, detailed_summary=True)
        task = RunCohort(cohort_id=cohort_id, build=build)
        run = luigi.build([task], **outer)
        if not local_scheduler and run.status.name != "FAILED" and not task.complete():
            helper = drive(cohort_id, build, progress=_sync)  # RunCohort runs elsewhere: help it
    finally:
        PROGRESS_HOOKS.remove(_sync)
        _Generation.remove_event_handler(luigi.Event.SUCCESS, _advance)
        bar.close()
    if helper is None and cohort_id in LAST_RESULT:
        print(LAST_RESULT.pop(cohort_id).summary(), file=sys.stderr)
    if helper is not None:
        print(helper.summary(), file=sys.stderr)
        print("RunCohort runs on another worker; it builds the reports and the site.", file=sys.stderr)
        return 1 if helper.failed or helper.blocked else 0
    code = print_status(cohort_id)
    site = paths.site_dir / "build" / "index.html"
    if ReportSite().complete() and site.exists():
        print(f"\nreport site: {site}\npreview it:  .venv/bin/daydream preview   (serves on 127.0.0.1)")
    else:
        print(f"error: the reports or the site were not built (RunCohort: {run.status.name}; see the log above)", file=sys.stderr)
        code = 1
    return 1 if code or run.status.name not in ("SUCCESS", "SUCCESS_WITH_RETRY") else 0


def cohort_status(cohort_id: str) -> dict:
    """Counts per stage, failure reasons, tokens and cost, from persisted files only."""
    paths = config.data_paths()
    stages = {s: Counter() for s in STAGES}
    reasons: Counter = Counter()
    tokens = {"prompt": 0, "completion": 0}
    cost = 0.0
    simulated = False
    for row in read_membership(paths, cohort_id):
        stage, gid = row["stage"], row["gen_id"]
        pm = read_json(paths.gen_file(stage, gid, "parsed_metadata.json"))
        rm = read_json(paths.gen_file(stage, gid, "raw_metadata.json")) or {}
        if pm and pm.get("success"):
            stages[stage]["done"] += 1
        elif pm:
            stages[stage]["failed"] += 1
            reasons[(stage, str(pm.get("error")).split("\n")[0][:120])] += 1
        else:
            stages[stage]["pending"] += 1
        tokens["prompt"] += rm.get("prompt_tokens") or 0
        tokens["completion"] += rm.get("completion_tokens") or 0
        cost += rm.get("cost_usd") or 0.0
        simulated |= bool(rm.get("simulated"))
    return {"stages": stages, "reasons": reasons, "tokens": tokens, "cost_usd": cost, "simulated": simulated}


def print_status(cohort_id: str) -> int:
    """Print the status table; exit status 1 if anything failed or is pending."""
    st = cohort_status(cohort_id)
    print(f"cohort {cohort_id}" + ("  (simulated output: offline provider)" if st["simulated"] else ""))
    print(f"  {'stage':<11}{'done':>7}{'failed':>8}{'pending':>9}")
    for stage, c in st["stages"].items():
        print(f"  {stage:<11}{c['done']:>7}{c['failed']:>8}{c['pending']:>9}")
    print(f"  tokens: {st['tokens']['prompt']:,} prompt, {st['tokens']['completion']:,} completion; "
          f"cost: ${st['cost_usd']:.4f}")
    if st["reasons"]:
        print("  failures:")
        for (stage, reason), n in st["reasons"].most_common(20):
            print(f"    {n:>4} × {stage}: {reason}")
    bad = any(c["failed"] or c["pending"] for c in st["stages"].values())
    return 1 if bad else 0
