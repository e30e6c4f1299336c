"""A run's status file: what a process running an executor loop has under way, refreshed every
second, and how ``daydream status`` reads it.

Each process that runs an executor's event loop (``pipeline/run/executor.py``: the ``luigi``
command's or ``daydream run``'s own executor process, or a worker's loop thread) keeps one file,
``data/runs/<host>-<pid>.json``: the cohorts and run stamps it serves, each provider's calls in
flight and waiting for a slot, the oldest call's age, the generations under way and started
ahead, and how many ended done, failed or blocked. A thread of its own writes it (the one atomic
writer: a second's fsync never holds up the loop) and removes it when the loop closes or the
process exits. A file left by a killed process is recognised by its process being gone (same
host) or by not having been refreshed for ``STALE_AFTER_S``: it is shown as stale, never as live,
and the next writer on that host removes it.

Reading and formatting are pure apart from listing and reading the files.
"""

from __future__ import annotations

import json
import multiprocessing.util
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

from pipeline.store.claims import HOST, process_alive
from pipeline.store import DataPaths, atomic_write_json, utc_stamp

INTERVAL_S = 1.0  # how often the file is refreshed
# A file not refreshed for this long belongs to no live run (its process hangs or its machine is
# gone); ten refreshes missed, so a busy disk's slow write is not taken for a dead run.
STALE_AFTER_S = 10.0
JOIN_TIMEOUT_S = 5.0


def runs_dir(paths: DataPaths) -> Path:
    return paths.root / "runs"


def status_path(paths: DataPaths, host: str = HOST, pid: int | None = None) -> Path:
    return runs_dir(paths) / f"{host}-{os.getpid() if pid is None else pid}.json"


class Writer:
    """The thread that refreshes this process's status file every ``INTERVAL_S`` from
    ``snapshot`` (a callable giving the figures, or None when they could not be had in time),
    until ``stop``; then the file is removed. Also stopped when the process exits normally
    (``multiprocessing.util.Finalize`` runs at exit in the main process and in a process
    ``multiprocessing`` started, such as a Luigi worker's task process; ignored in a fork)."""

    def __init__(self, paths: DataPaths, snapshot: Callable[[], dict | None]):
        self.path = status_path(paths)
        self.pid = os.getpid()
        self.snapshot = snapshot
        self.started_at = utc_stamp()
        self._last: dict = {}
        self._answered = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="daydream-run-status", daemon=True)
        self._finalize = multiprocessing.util.Finalize(None, self.stop, exitpriority=10)
        self._thread.start()

    def _run(self) -> None:
        sweep(self.path.parent)  # files of this host's killed runs
        while True:
            began = time.monotonic()
            self.write()
            if self._stop.wait(max(0.0, INTERVAL_S - (time.monotonic() - began))):
                return

    def write(self) -> None:
        figures = self.snapshot()
        now = time.monotonic()
        if figures is not None:
            self._last, self._answered = figures, now
        body = {**self._last, "host": HOST, "pid": self.pid, "started_at": self.started_at, "updated_at": utc_stamp(),
                "interval_s": INTERVAL_S}
        if figures is None:  # the loop did not answer within a refresh: say how long, keep its last figures
            body["loop_silent_s"] = round(now - self._answered, 1)
        if self._stop.is_set():
            return
        try:
            atomic_write_json(self.path, body)
        except Exception:  # noqa: BLE001 — a status file never stops a run (a full disk says so elsewhere)
            pass

    def stop(self) -> None:
        """Stop refreshing and remove the file (in the process that started it; bounded)."""
        if os.getpid() != self.pid:
            return
        self._finalize.cancel()  # stopped now: nothing left to do at exit
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT_S)
        try:
            os.unlink(self.path)
        except OSError:
            pass


def sweep(directory: Path) -> int:
    """Remove this host's status files whose process is gone (and the atomic writer's temporary
    files such a process left, ``.<host>-<pid>.json.<pid>-<n>.tmp``); returns how many."""
    n = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if name.endswith(".json"):
            stem = name[:-len(".json")]
        elif name.startswith(".") and name.endswith(".tmp") and ".json." in name:
            stem = name[1:].split(".json.", 1)[0]
        else:
            continue
        host, _, pid = stem.rpartition("-")
        if host == HOST and pid.isdigit() and not process_alive(host, int(pid)):
            try:
                os.unlink(directory / name)
                n += 1
            except OSError:
                pass
    return n


# ---------------------------------------------------------------------------------------------
# Reading


def read_runs(paths: DataPaths, cohort_id: str | None = None, now: float | None = None) -> list[dict]:
    """The status files (of the runs serving ``cohort_id``, when given), each with ``live`` and,
    when not live, ``stale`` saying why. Oldest first."""
    now = time.time() if now is None else now
    runs = []
    try:
        names = sorted(os.listdir(runs_dir(paths)))
    except OSError:
        return []
    for name in names:
        if not name.endswith(".json"):
            continue  # the writer's temporary files
        try:
            body = json.loads((runs_dir(paths) / name).read_text())
        except (OSError, ValueError):
            continue  # removed meanwhile; never half-written (atomic writer)
        if not isinstance(body, dict):
            continue
        if cohort_id is not None and not any(cohort_id in r.get("cohorts", ()) for r in body.get("runs", ())):
            continue
        runs.append({**body, **judge(body, now)})
    return sorted(runs, key=lambda r: str(r.get("started_at")))


def judge(body: dict, now: float) -> dict:
    """``{"live": True, "age_s": …}`` or ``{"live": False, "stale": why, "age_s": …}``: live only
    while its process is there (on this host) and it was refreshed within ``STALE_AFTER_S``."""
    try:
        age = now - datetime.fromisoformat(body["updated_at"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return {"live": False, "stale": "no update time", "age_s": None}
    if not process_alive(body.get("host"), body.get("pid")):
        return {"live": False, "stale": "its process is gone", "age_s": age}
    if age > STALE_AFTER_S:
        return {"live": False, "stale": f"not refreshed for {age:.0f} s", "age_s": age}
    return {"live": True, "age_s": age}


def _secs(s: float | None) -> str:
    return "-" if s is None else f"{s:.1f} s"


def format_runs(runs: list[dict], cohort_id: str) -> str:
    """``daydream status``'s lines on the runs of ``cohort_id`` under way."""
    live = [r for r in runs if r["live"]]
    if not live:
        lines = [f"  runs: none running for {cohort_id}"]
    else:
        lines = [f"  runs: {len(live)} running"]
    for r in runs:
        who = f"{r.get('host')}:{r.get('pid')}"
        stamps = ", ".join(x.get("since") or "-" for x in r.get("runs", ()) if cohort_id in x.get("cohorts", ()))
        if not r["live"]:
            lines.append(f"    {who} (run {stamps}): stale status file, {r['stale']} (last updated {r.get('updated_at')})")
            continue
        mine = [x for x in r.get("runs", ()) if cohort_id in x.get("cohorts", ())]
        ended = {k: sum(x.get(k, 0) for x in mine) for k in ("done", "failed", "blocked")}
        g = r.get("generations", {})
        lines.append(f"    {who} (run {stamps}, updated {_secs(r['age_s'])} ago): {g.get('under_way', 0)} generations "
                     f"under way, {g.get('ahead', 0)} started ahead; this run so far: {ended['done']} done, "
                     f"{ended['failed']} failed, {ended['blocked']} blocked")
        if r.get("loop_silent_s") is not None:
            lines.append(f"      its event loop has not answered for {r['loop_silent_s']:.0f} s")
        providers = r.get("providers", {})
        for name in sorted(providers):
            p = providers[name]
            if "concurrency" not in p:  # no call made here yet (or copies, which call nothing)
                if p.get("ahead_queued") or p.get("ahead_running"):
                    lines.append(f"      {name:<14} started ahead: {p.get('ahead_running', 0)} running, "
                                 f"{p.get('ahead_queued', 0)} queued")
                continue
            lines.append(f"      {name:<14} calls in flight {p['in_flight']}/{p['concurrency']}, "
                         f"oldest call {_secs(p.get('oldest_call_s'))}, waiting for a slot {p.get('waiting', 0)}, "
                         f"started ahead: {p.get('ahead_running', 0)} running, {p.get('ahead_queued', 0)} queued")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# A generation task's status message in Luigi's visualiser (pure)

FAILURES_SHOWN = 3  # a batch's latest failures named in its message


def outcome(state) -> str:
    """A settled state as a status message ends: ``done``, or ``failed: why``."""
    return state.kind + (f": {state.reason}" if state.reason else "")


def batch_message(stage: str, members: list[tuple[str, str, str]], states: dict, not_run: str) -> str:
    """A batch task's status message. ``members``: each one's (gen_id, template, model) in the
    batch's order; ``states``: those ended so far, in the order they ended.

    Luigi shows a batch's message on each of its members, so besides the batch's counts it has
    one line per template and model in the README's form (``stage · template · model · what
    it is doing or its outcome``) and names the latest failures."""
    groups: dict[tuple[str, str], list[int]] = {}  # (template, model) -> done, failed, not run, running
    for gen_id, template, model in members:
        counts = groups.setdefault((template, model), [0, 0, 0, 0])
        st = states.get(gen_id)
        counts[3 if st is None else 0 if st.kind == "done" else 2 if st.reason == not_run else 1] += 1

    def counted(c: list[int]) -> str:
        parts = [f"{c[0]} done", f"{c[1]} failed"] + ([f"{c[2]} {not_run}"] if c[2] else [])
        return ", ".join(parts + ([f"{c[3]} running"] if c[3] else []))

    total = [sum(c[i] for c in groups.values()) for i in range(4)]
    lines = [f"{stage} batch of {len(members)}: {counted(total)}"]
    lines += [f"{stage} · {template} · {model} · {counted(c)}" for (template, model), c in groups.items()]
    failed = [(g, st) for g, st in states.items() if st.kind != "done" and st.reason != not_run]
    lines += [f"{gen_id} · {outcome(st)}" for gen_id, st in failed[-FAILURES_SHOWN:]]
    return "\n".join(lines)


def flight_line(runs: list[dict]) -> str:
    """The live runs' calls in flight in a few words (``daydream run``'s progress bar), or ""."""
    calls = [p for r in runs if r["live"] for p in r.get("providers", {}).values() if "in_flight" in p]
    if not calls:
        return ""
    ages = [p["oldest_call_s"] for p in calls if p.get("oldest_call_s") is not None]
    return f"{sum(p['in_flight'] for p in calls)} calls in flight" + (f", oldest {max(ages):.0f} s" if ages else "")
