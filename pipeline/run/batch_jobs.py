"""Provider batch jobs in the store: generations sent as one job, resumable by any process.

A provider section with ``batch = true`` (or a run with ``--batch``) sends its generations as
batch jobs (``pipeline/llm/batch.py``) instead of one call each. A generation task of such a
provider, in its Luigi batch run, hands its members to ``run``: it adopts the live jobs that
already hold some of them, submits the rest as new jobs, polls them and writes each answer as
an ordinary generation (``generation.write_call``: the same files, states and ids; the raw
record names the job).

The store holds one record per job, ``data/batches/<key>.json``, written with the atomic writer
under one lock per data root (``batches/.lock``; ``fcntl``, so every process and every machine
sharing the data root over a filesystem with working locks sees the same jobs):

1. the *intent*, before anything is sent: the generations, their endpoint, stage and model, and
   the spend it reserved; from now on no other job takes these generations;
2. the input file's id, once uploaded (uploading submits nothing);
3. ``creating``, just before the job is created, then the provider's job id once it is.

A process that finds a record without a job id (a kill anywhere in 1-3) under the lock looks
for the job in the provider's own list first (by the record's key in the job's metadata, or its
input file) when ``creating`` says it may exist, and creates it only when it does not: so a kill
between creating a job and recording it never sends the same generations twice. A job is *live*
until it is collected: its answers written, its failed or expired requests noted (they go into
the next job, or ordinary calls with ``batch_retry = sync``; after ``batch_max_jobs`` jobs the
last error is recorded as the generation's failure), its spend reservation settled.

Spend: a job reserves the bound of all of its requests at batch prices (``spend.batch_prices``)
in the cohort's ledger, as one reservation that lives as long as the job may (its completion
window), not as long as the process; collecting it settles the reservation with what the
answers cost.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pipeline import config
from pipeline.store import spend
from pipeline.errors import DaydreamError
from pipeline.run.generation import (Runtime, completion_request, generate, metadata, phase_json, resolve_inputs, run_state,
                         sha256, state_of, write_call, write_call_failure)
from pipeline.store.ledger import Budget, locked as ledger_locked
from pipeline.llm import require_keys
from pipeline.llm.base import BatchSettings, CompletionRequest, NoBatchAPI, Transient
from pipeline.llm.registry import batch_api_factory
from pipeline.store.state import DONE
from pipeline.store import DataPaths, atomic_write_json, exclusive_lock, read_json, read_text, utc_stamp

if TYPE_CHECKING:  # the adapters import the openai SDK: loaded through the registry when a job is made
    from pipeline.llm.batch import Item, OpenAIBatchAPI

TERMINAL = ("completed", "failed", "expired", "cancelled")
BATCH_HOST = "batch-job"  # a job's reservation outlives the process that made it (see ledger._alive)
WINDOW_SLACK_S = 3600.0
# The jobs' lock is held across a job's upload and creation (SDK calls with their own timeouts and
# retries): a holder past this is stuck, and the waiter says so rather than hang.
LOCK_TIMEOUT_S = 600.0


def jobs_dir(paths: DataPaths) -> Path:
    return paths.root / "batches"


def job_path(paths: DataPaths, key: str) -> Path:
    return jobs_dir(paths) / f"{key}.json"


@contextmanager
def _locked(paths: DataPaths):
    """The jobs' lock: claiming generations, creating a job and collecting one happen under it."""
    with exclusive_lock(os.fspath(jobs_dir(paths) / ".lock"), LOCK_TIMEOUT_S, "the batch jobs' lock"):
        yield


_READ: dict[str, tuple[int, list[dict]]] = {}  # jobs dir -> (its mtime, records): read again only when it changed


def read_jobs(paths: DataPaths) -> list[dict]:
    """Every job record, oldest first (a corrupt one cannot be: the atomic writer). Every sync
    generation task asks (is any of its members in a live job?): the records are read again only
    when the directory changed, which every write does (the atomic writer renames into it). A
    directory changed in the last second is always read again: its timestamp is coarser than
    the time between two writes, so a second write could leave it as it was."""
    d = jobs_dir(paths)
    try:
        mtime = os.stat(d).st_mtime_ns
    except FileNotFoundError:
        return []
    cached = _READ.get(str(d))
    if cached is None or cached[0] != mtime:
        names = sorted(n for n in os.listdir(d) if n.endswith(".json"))
        jobs = sorted((j for j in (read_json(d / n) for n in names) if j), key=lambda j: j.get("created_at", ""))
        cached = (mtime, jobs)
        if time.time_ns() - mtime > 1_000_000_000:
            _READ[str(d)] = cached
    return [dict(j) for j in cached[1]]  # callers update their copies


def _write(paths: DataPaths, job: dict) -> None:
    atomic_write_json(job_path(paths, job["key"]), job)


def live_index(paths: DataPaths) -> dict[tuple[str, str], dict]:
    """(stage, gen_id) → the live job holding it."""
    return {(j["stage"], g): j for j in read_jobs(paths) if not j.get("collected") for g in j["gen_ids"]}


class Router:
    """Which generations go through batch jobs: those of a provider that makes them, and any
    held by a live job (a run without batch mode still waits for those, never calls again)."""

    def __init__(self, rt: Runtime):
        self.rt = rt
        self.live = live_index(rt.paths)
        self._settings: dict[str, BatchSettings | None] = {}

    def settings(self, endpoint: str) -> BatchSettings | None:
        if endpoint not in self._settings:
            self._settings[endpoint] = config.batch_settings(endpoint)
        return self._settings[endpoint]

    def routed(self, stage: str, gen_id: str, model_id: str | None = None) -> bool:
        if (stage, gen_id) in self.live:
            return True
        model_id = model_id if model_id is not None else metadata(self.rt, stage, gen_id).get("llm_model_id")
        return bool(model_id) and self.settings(self.rt.endpoint(model_id)) is not None


def batch_api(name: str) -> OpenAIBatchAPI:
    """The batch adapter of ``[llm.<name>]``, or one clear error when it has none."""
    settings = config.provider_settings(name)
    batch = config.batch_settings(name) or BatchSettings()
    factory = batch_api_factory(settings.api)
    if factory is None:
        raise NoBatchAPI("config", f"provider '{name}' (api = {settings.api}) has no batch API: set batch = false "
                                   f"in [llm.{name}], or run without --batch")
    require_keys([settings])
    key = os.environ.get(settings.api_key_env, "").strip() if settings.api_key_env else None
    return factory(settings, key, batch, state_dir=jobs_dir(config.data_paths()) / settings.name)


def check_providers(names) -> None:
    """Before a run: every provider that will make batch jobs has a batch API (one error naming it)."""
    for name in sorted(set(names)):
        if config.batch_settings(name) is None:
            continue
        api = batch_api(name)
        try:
            api.probe()
        finally:
            api.close()


# ---------------------------------------------------------------------------------------------
# Running a task's members


def run(rt: Runtime, stage: str, gen_ids: list[str], *, since: str, budget: Budget | None,
        status: Callable[[str], None] = lambda m: None) -> list[str]:
    """Bring ``gen_ids`` (their parents done) to a settled state through batch jobs: adopt the
    live jobs holding some, submit the rest, poll, collect. Returns those to call one by one
    instead (``batch_retry = sync``). Stops early, leaving the rest unsettled, when the run's
    budget is reached and none of them is in a live job."""
    paths, router = rt.paths, Router(rt)
    sync: list[str] = []
    apis: dict[str, OpenAIBatchAPI] = {}

    def api(name: str) -> OpenAIBatchAPI:
        if name not in apis:
            apis[name] = batch_api(name)
        return apis[name]

    try:
        while True:
            memo: dict = {}
            todo = [g for g in gen_ids if g not in sync and not run_state(rt, stage, g, since, memo).settled(since)]
            if not todo:
                return sync
            wanted = set(todo)
            with _locked(paths):
                live = [j for j in read_jobs(paths) if not j.get("collected")]
                mine = [j for j in live if j["stage"] == stage and wanted & set(j["gen_ids"])]
                taken = {g for j in live if j["stage"] == stage for g in j["gen_ids"]}
                fresh = [g for g in todo if g not in taken]
                if fresh:
                    new, more_sync = _plan(rt, router, stage, fresh, budget)
                    sync += more_sync
                    for job in new:
                        _write(paths, job)  # the intent: from now on these generations are this job's
                    mine += new
                for job in mine:
                    if not job.get("batch_id"):
                        _submit(rt, api(job["endpoint"]), job)
            if not mine:
                if budget is not None and budget.reached() or sync:
                    return sync
                time.sleep(0.2)  # waiting for room under the cap, or for a just-claimed generation
                continue
            alive = False
            for job in mine:
                if job.get("batch_id"):
                    job = _poll(rt, api(job["endpoint"]), job)
                alive |= not job.get("collected")
            status(describe(mine, wanted))
            if alive:
                time.sleep(min((router.settings(j["endpoint"]) or BatchSettings()).poll_s for j in mine))
    finally:
        for a in apis.values():
            a.close()


def describe(jobs: list[dict], wanted: set[str] | None = None) -> str:
    """One line per job: what the visualiser shows as a task's status and ``status`` prints."""
    lines = []
    for job in jobs:
        c = job.get("request_counts") or {}
        state = "collected" if job.get("collected") else job.get("status") or "being submitted"
        waiting = f"; {len(wanted & set(job['gen_ids']))} of this task's generations wait on it" if wanted else ""
        lines.append(f"{job['stage']} batch job {job.get('batch_id') or job['key']} on {job['endpoint']} "
                     f"({job['model_slug']}): {state}, {c.get('completed', 0)} of {len(job['gen_ids'])} answered, "
                     f"{c.get('failed', 0)} failed{waiting}")
    return "\n".join(lines)


def _history(paths: DataPaths, stage: str) -> dict[str, tuple[int, str]]:
    """gen_id → (jobs it went out in without an answer, the last error), from collected jobs."""
    out: dict[str, tuple[int, str]] = {}
    for job in read_jobs(paths):
        if job.get("collected") and job["stage"] == stage:
            for g, reason in (job.get("retry") or {}).items():
                out[g] = (out.get(g, (0, ""))[0] + 1, reason)
    return out


def _plan(rt: Runtime, router: Router, stage: str, fresh: list[str], budget: Budget | None) -> tuple[list[dict], list[str]]:
    """New job records for ``fresh`` (grouped by endpoint and model, sized to the provider's
    limits, reserved under the cap), and those that go to ordinary calls instead."""
    history = _history(rt.paths, stage)
    groups: dict[tuple[str, str], list[tuple[str, int, float | None]]] = {}
    sync = []
    for g in fresh:
        md = metadata(rt, stage, g)
        inputs = resolve_inputs(rt, stage, g)
        if inputs is None or md["mode"] != "llm":
            raise DaydreamError("store", f"{stage} {g}: parent {md.get('parent_gen_id')} is not done")
        endpoint = rt.endpoint(inputs.model_id)
        settings = router.settings(endpoint) or BatchSettings()
        jobs_before, last = history.get(g, (0, ""))
        if _reusable(rt, stage, g, inputs):
            asyncio.run(generate(rt, stage, g))  # a valid answer with the same prompt: parsed again, no call
            continue
        if jobs_before >= settings.max_jobs:
            write_call_failure(rt, stage, g, inputs, f"no answer after {jobs_before} batch jobs: {last}")
            continue
        if jobs_before and settings.retry == "sync" or router.settings(endpoint) is None:
            sync.append(g)  # a failed request retried by an ordinary call; or batch mode is off now
            continue
        model = rt.catalog.model(inputs.model_id)
        request = completion_request(rt, stage, inputs)
        bound = spend.call_bound(spend.batch_prices(model), len(inputs.prompt.encode()), request.max_tokens)
        size = len(inputs.prompt.encode()) + 600  # the line's JSON around the prompt
        groups.setdefault((endpoint, model.id), []).append((g, size, bound))
    jobs = []
    for (endpoint, model_id), members in groups.items():
        settings = router.settings(endpoint) or BatchSettings()
        part: list = []
        for m in members + [None]:
            if m is None or part and (len(part) >= settings.max_requests
                                      or sum(x[1] for x in part) + m[1] > settings.max_bytes):
                if part:
                    job = _new_job(rt, stage, endpoint, model_id, part, budget, settings)
                    if job is None:
                        return jobs, sync  # the budget: nothing more now
                    jobs.append(job)
                part = []
            if m is not None:
                part.append(m)
    return jobs, sync


def _reusable(rt: Runtime, stage: str, gen_id: str, inputs) -> bool:
    """A valid raw answer to the same prompt is kept (as ``generation.generate`` keeps it)."""
    raw_md = phase_json(rt.gen_file(stage, gen_id, "raw_metadata.json"))
    raw = read_text(rt.gen_file(stage, gen_id, "raw.txt"))
    return (raw_md is not None and raw is not None and raw_md.get("valid") is True
            and raw_md.get("prompt_sha256") == sha256(inputs.prompt) and raw_md.get("llm_model_id") == inputs.model_id
            and raw_md.get("raw_sha256") == sha256(raw))


def _new_job(rt: Runtime, stage: str, endpoint: str, model_id: str, members: list, budget: Budget | None,
             settings: BatchSettings) -> dict | None:
    """A job record (the intent) for ``members``; under a cap, for as many as fit (None: none)."""
    reservation = None
    if budget is not None:
        fit, token = _reserve(budget, [b for _, _, b in members], settings, f"{stage} batch job on {model_id}")
        if not fit:
            return None
        members = members[:fit]
        reservation = {"cohort_id": budget.cohort_id, "token": token, "since": budget.since}
    model = rt.catalog.model(model_id)
    return {"key": f"{endpoint}-{stage}-{uuid.uuid4().hex[:12]}", "endpoint": endpoint, "stage": stage,
            "llm_model_id": model_id, "model_slug": model.model, "gen_ids": [g for g, _, _ in members],
            "created_at": utc_stamp(), "input_file_id": None, "creating": False, "batch_id": None, "status": None,
            "request_counts": {}, "reservation": reservation, "collected": False}


def _reserve(budget: Budget, bounds: list, settings: BatchSettings, what: str) -> tuple[int, str | None]:
    """Reserve, in one go, the bounds of as many of a job's requests as fit under the cap.
    None fits: the run waits while other reservations are held, else it has reached the cap."""
    if any(b is None for b in bounds):
        raise DaydreamError("budget", f"{what}: no prices in llm_models.csv, so a spend cap cannot be enforced")
    with ledger_locked(budget.paths, budget.cohort_id) as ledger:
        if budget.since in ledger["reached"]:
            return 0, None
        room = budget.cap + spend.EPSILON - ledger["spent_usd"] - spend.reserved_usd(ledger)
        fit, total = 0, 0.0
        while fit < len(bounds) and total + bounds[fit] <= room:
            total += bounds[fit]
            fit += 1
        if not fit:
            if not ledger["reserved"]:
                spend.mark_reached(ledger, budget.since, budget.cap, bounds[0], what, utc_stamp())
            return 0, None
        token = uuid.uuid4().hex
        ledger["reserved"][token] = {"usd": total, "what": f"{what} ({fit} requests)", "host": BATCH_HOST, "pid": 0,
                                     "expires": time.time() + _window_s(settings.window) + WINDOW_SLACK_S}
        return fit, token


def _window_s(window: str) -> float:
    units = {"h": 3600.0, "d": 86400.0, "m": 60.0}
    try:
        return float(window[:-1]) * units[window[-1]]
    except (KeyError, ValueError, IndexError):
        return 86400.0


def _requests(rt: Runtime, job: dict) -> dict[str, tuple[CompletionRequest, object]]:
    """gen_id → (request, inputs) for the job's members whose inputs are current."""
    out = {}
    for g in job["gen_ids"]:
        try:
            inputs = resolve_inputs(rt, job["stage"], g)
        except DaydreamError:
            continue  # purged or broken since it was sent: nothing to write it to
        if inputs is not None:
            out[g] = (completion_request(rt, job["stage"], inputs), inputs)
    return out


def _submit(rt: Runtime, api: OpenAIBatchAPI, job: dict) -> None:
    """Upload and create the job of a record that has no job id yet (under the jobs' lock)."""
    paths = rt.paths
    try:
        if job.get("creating"):
            found = api.find(job["key"], job.get("input_file_id"))
            if found is not None:
                return _record(paths, job, found)
        if not job.get("input_file_id"):
            requests = _requests(rt, job)
            data = b"".join(api.line(g, request) for g, (request, _) in requests.items())
            job["prompt_sha256"] = {g: sha256(inputs.prompt) for g, (_, inputs) in requests.items()}
            job["input_file_id"] = api.upload(f"{job['key']}.jsonl", data)
            _write(paths, job)
        job["creating"] = True
        _write(paths, job)  # from now on the job may exist: a resume looks for it before creating
        _record(paths, job, api.create(job["input_file_id"], job["key"]))
    except Transient as exc:
        job["last_error"] = exc.reason  # the next look tries again, as often as a call would
        job["submit_failures"] = job.get("submit_failures", 0) + 1
        if job["submit_failures"] >= config.provider_settings(job["endpoint"]).max_attempts:
            _give_up(rt, job, f"could not be submitted: {exc.reason}")
        else:
            _write(paths, job)
    except NoBatchAPI:
        raise
    except DaydreamError as exc:
        job["last_error"] = exc.message
        _give_up(rt, job, exc.message)


def _record(paths: DataPaths, job: dict, info: dict) -> None:
    job.update(batch_id=info.get("id"), status=info.get("status"), request_counts=info.get("request_counts") or {},
               submitted_at=utc_stamp())
    _write(paths, job)


def _give_up(rt: Runtime, job: dict, reason: str) -> None:
    """A job the provider refused: its members fail (the next run tries again), its spend is released."""
    for g, (_, inputs) in _requests(rt, job).items():
        if state_of(rt, job["stage"], g).kind != DONE:
            write_call_failure(rt, job["stage"], g, inputs, f"batch job refused: {reason}")
    _settle(rt.paths, job, 0.0, 0)
    job.update(collected=True, status=job.get("status") or "refused", collected_at=utc_stamp())
    _write(rt.paths, job)


def _poll(rt: Runtime, api: OpenAIBatchAPI, job: dict) -> dict:
    """Look at a job once; collect it when it has ended. Returns the record as it is now."""
    paths = rt.paths
    try:
        info = api.retrieve(job["batch_id"])
    except Transient:
        return job
    with _locked(paths):
        current = read_json(job_path(paths, job["key"])) or job
        if current.get("collected"):
            return current
        current.update(status=info.get("status"), request_counts=info.get("request_counts") or {},
                       output_file_id=info.get("output_file_id"), error_file_id=info.get("error_file_id"),
                       errors=info.get("errors"))
        if info.get("status") in TERMINAL:
            try:
                _collect(rt, api, current, info)
            except Transient:
                pass  # its files could not be read now: the next look collects it
        _write(paths, current)
        job.update(current)
        return current


def _collect(rt: Runtime, api: OpenAIBatchAPI, job: dict, info: dict) -> None:
    """Write every answer of an ended job as its generation; note what goes into the next job."""
    stage = job["stage"]
    requests = {g: r for g, r in _requests(rt, job).items()
                if (job.get("prompt_sha256") or {}).get(g) == sha256(r[1].prompt)}  # inputs unchanged since sent
    items: list[Item] = []
    started = job.get("submitted_at") or job["created_at"]
    duration = max(0.0, time.time() - datetime.fromisoformat(started).timestamp())
    for file_id in (info.get("output_file_id"), info.get("error_file_id")):
        if file_id:
            items += api.items(api.content(file_id), {g: r for g, (r, _) in requests.items()}, duration)
    model = rt.catalog.model(job["llm_model_id"])
    prices = spend.batch_prices(model)
    record = {"key": job["key"], "batch_id": job["batch_id"], "endpoint": job["endpoint"]}
    cost, called, retry, answered = 0.0, 0, {}, set()
    for item in items:
        g = item.custom_id
        if g in answered:
            continue
        answered.add(g)
        inputs = requests[g][1]
        if item.completion is not None:  # billed, whether or not it is kept
            called += 1
            c = spend.token_cost(prices, item.completion.prompt_tokens, item.completion.completion_tokens)
            cost += item.completion.cost_usd if item.completion.cost_usd is not None else (c or 0.0)
        if state_of(rt, stage, g).kind == DONE:
            continue  # made meanwhile another way: kept
        if item.completion is not None:
            write_call(rt, stage, g, inputs, item.completion, started=started, prices=prices, batch_job=record)
        elif item.retry:
            retry[g] = item.error
        else:
            write_call_failure(rt, stage, g, inputs, item.error or "batch job: no answer")
    why = f"batch job {job['batch_id']} {info.get('status')}" + _errors(info)
    for g in job["gen_ids"]:
        if g not in answered and (g not in requests or state_of(rt, stage, g).kind != DONE):
            retry[g] = why + (" (inputs changed since it was sent)" if g not in requests else ", no answer")
    _settle(rt.paths, job, cost, called)
    job.update(collected=True, collected_at=utc_stamp(), retry=retry, answered=called)


def _errors(info: dict) -> str:
    data = ((info.get("errors") or {}).get("data") or []) if isinstance(info.get("errors"), dict) else []
    return ": " + "; ".join(str(e.get("message")) for e in data[:3]) if data else ""


def _settle(paths: DataPaths, job: dict, cost: float, calls: int) -> None:
    r = job.get("reservation")
    if r:
        with ledger_locked(paths, r["cohort_id"]) as ledger:
            spend.settle(ledger, r["token"], cost, calls)


# ---------------------------------------------------------------------------------------------
# What ``daydream status`` shows


def cohort_jobs(paths: DataPaths, rows: list[dict]) -> list[tuple[dict, int, int]]:
    """The jobs holding the cohort's generations, each with how many of them it holds and how
    many more of the cohort wait on it (their descendants); live jobs, then the last collected."""
    ids = {(r["stage"], r["gen_id"]) for r in rows}
    children: dict[str, list[str]] = {}
    for r in rows:
        if r.get("parent_gen_id"):
            children.setdefault(r["parent_gen_id"], []).append(r["gen_id"])
    out = []
    for job in read_jobs(paths):
        held = [g for g in job["gen_ids"] if (job["stage"], g) in ids]
        if not held:
            continue
        downstream, stack = 0, list(held)
        while stack:
            kids = children.get(stack.pop(), [])
            downstream += len(kids)
            stack += kids
        out.append((job, len(held), downstream))
    live = [x for x in out if not x[0].get("collected")]
    return live + [x for x in out if x[0].get("collected")][-5:]


def progress_line(paths: DataPaths) -> str:
    """The live jobs in a few words, for ``daydream run``'s progress bar ("" when there are none)."""
    live = [j for j in read_jobs(paths) if not j.get("collected")]
    if not live:
        return ""
    parts = [f"{j['stage']} {j.get('status') or 'submitting'} {(j.get('request_counts') or {}).get('completed', 0)}"
             f"/{len(j['gen_ids'])}" for j in live[:3]]
    return f"batch jobs: {', '.join(parts)}" + (f" (+{len(live) - 3} more)" if len(live) > 3 else "")


def format_jobs(jobs: list[tuple[dict, int, int]]) -> str:
    if not jobs:
        return ""
    lines = ["  batch jobs:"]
    for job, held, downstream in jobs:
        c = job.get("request_counts") or {}
        state = job.get("status") or "being submitted"
        if job.get("collected"):
            state += f", collected ({job.get('answered', 0)} answered, {len(job.get('retry') or {})} to send again)"
        waits = "" if job.get("collected") else f"; waiting on it: {held} generations, {downstream} after them"
        lines.append(f"    {job.get('batch_id') or job['key']:<28} {job['stage']:<10} {job['endpoint']:<10} "
                     f"{state}, {c.get('completed', 0)}/{c.get('total', len(job['gen_ids']))} done, "
                     f"{c.get('failed', 0)} failed{waits}")
    return "\n".join(lines) + "\n"
