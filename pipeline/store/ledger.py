"""The spend ledger of a cohort: ``data/cohorts/<cohort_id>/spend.json``, kept only while a spend
cap is in force. The arithmetic is in ``spend.py``; this module only makes each change atomic
across threads, processes and machines sharing the data root.

Every change is read-modify-write under ``store.exclusive_lock`` on ``spend.lock`` beside the
ledger (an ``fcntl`` record lock, which also works over NFS, behind a thread lock, each waited for
at most ``store.LOCK_TIMEOUT_S``), and the new ledger is written with the project's atomic writer,
so a reader never sees half a file and a killed writer loses at most its own change.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

from pipeline import config
from pipeline.store import spend
from pipeline.errors import DaydreamError
from pipeline.store import DataPaths, atomic_write_json, exclusive_lock, read_json, utc_stamp

POLL_S = 0.1  # how often a call that must wait looks at the ledger again
HOST = socket.gethostname()


def ledger_path(paths: DataPaths, cohort_id: str):
    return paths.cohort_dir(cohort_id) / "spend.json"


def read_ledger(paths: DataPaths, cohort_id: str) -> dict | None:
    """The ledger as last written (no lock: the atomic writer never shows a partial file)."""
    return read_json(ledger_path(paths, cohort_id))


@contextmanager
def locked(paths: DataPaths, cohort_id: str):
    """The ledger for changing: yields the current one (new if absent) and writes it back."""
    path = ledger_path(paths, cohort_id)
    with exclusive_lock(os.fspath(path.with_name("spend.lock")), what="the spend ledger's lock"):
        ledger = read_json(path) or spend.new_ledger(cohort_id)
        before = repr(ledger)
        spend.expire(ledger, time.time(), _alive)
        yield ledger
        if repr(ledger) != before:
            atomic_write_json(path, ledger)


def _alive(reservation: dict) -> bool:
    """False only when the reserving process is known to be gone (same host, no such pid)."""
    if reservation.get("host") != HOST:
        return True
    try:
        os.kill(int(reservation["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, KeyError, TypeError):
        return True
    return True


class Budget:
    """The spend cap of one run of a cohort (``since`` names the run)."""

    def __init__(self, paths: DataPaths, cohort_id: str, cap: float, since: str):
        self.paths, self.cohort_id, self.cap, self.since = paths, cohort_id, cap, since
        self._reached = False  # once reached, a run stays stopped: no need to look again

    def __repr__(self) -> str:
        return f"Budget({self.cohort_id!r}, cap={self.cap!r}, since={self.since!r})"

    def reached(self) -> bool:
        """Whether this run stopped at the cap (read without the lock: the flag is only ever set)."""
        if not self._reached:
            ledger = read_ledger(self.paths, self.cohort_id) or {}
            self._reached = self.since in (ledger.get("reached") or {})
        return self._reached

    def stopped(self) -> bool:
        """Whether this run, stopped at the cap, has built its reports and ended (``mark_stopped``)."""
        ledger = read_ledger(self.paths, self.cohort_id) or {}
        return bool((ledger.get("reached") or {}).get(self.since, {}).get("ended"))

    def mark_stopped(self) -> None:
        with locked(self.paths, self.cohort_id) as ledger:
            if self.since in ledger["reached"]:
                ledger["reached"][self.since]["ended"] = True

    async def reserve(self, stage: str, gen_id: str, model_id: str, bound: float | None,
                      deadline_s: float) -> "Slot | None":
        """Reserve ``bound`` for one call, waiting while calls in flight may leave room; None when
        the budget is reached (this call, and every call of the run not yet started, is not made).
        The wait yields to the event loop: the calls it waits for run on the same loop."""
        what = f"{stage} {gen_id} on {model_id}"
        if bound is None:  # the run checks prices up front (require_priced); this is the last guard
            raise DaydreamError("budget", f"{what}: no prices in llm_models.csv, so a spend cap cannot be enforced")
        token = uuid.uuid4().hex
        while True:
            with locked(self.paths, self.cohort_id) as ledger:
                verdict = spend.decide(ledger, self.cap, bound, self.since)
                if verdict == spend.FITS:
                    ledger["reserved"][token] = {"usd": bound, "what": what, "host": HOST, "pid": os.getpid(),
                                                 "expires": time.time() + deadline_s}
                    return Slot(self, token)
                if verdict == spend.REACHED:
                    spend.mark_reached(ledger, self.since, self.cap, bound, what, utc_stamp())
                    self._reached = True
                    return None
            await asyncio.sleep(POLL_S)


@dataclass(frozen=True)
class Slot:
    """A reservation: ``settle`` it with the call's cost, or ``abandon`` it when the call's fate
    is unknown (the process is being interrupted)."""

    budget: Budget
    token: str

    def settle(self, cost: float | None) -> None:
        with locked(self.budget.paths, self.budget.cohort_id) as ledger:
            spend.settle(ledger, self.token, cost)

    def abandon(self) -> None:
        with locked(self.budget.paths, self.budget.cohort_id) as ledger:
            spend.abandon(ledger, self.token)


class _Unbudgeted:
    """The slot of a call made without a cap: nothing to account."""

    def settle(self, cost: float | None) -> None:
        pass

    def abandon(self) -> None:
        pass


UNBUDGETED = _Unbudgeted()


async def reserve_call(budget: Budget | None, stage: str, gen_id: str, model_id: str, endpoint: str,
                       bound: float | None) -> "Slot | _Unbudgeted | None":
    """What a generation does before its model call: a slot to settle afterwards, or None when
    the run's budget is reached and the call must not be made."""
    if budget is None:
        return UNBUDGETED
    s = config.provider_settings(endpoint)
    return await budget.reserve(stage, gen_id, model_id, bound,
                                spend.call_deadline_s(s.timeout_s, s.max_attempts, s.backoff_max_s))


def reconcile(paths: DataPaths, cohort_id: str, recorded_usd: float, since: str, cap: float) -> dict:
    """At the start of a capped run: what the cohort's generations record as spent (runs without
    a cap are not in the ledger) counts if it is more than the ledger holds; the run becomes the
    current one. Returns the ledger."""
    with locked(paths, cohort_id) as ledger:
        spend.reconcile(ledger, recorded_usd, since, cap)
        return dict(ledger)


def prepared(paths: DataPaths, cohort_id: str, since: str, cap: float | None) -> bool:
    """Whether the run is the cohort's current one (``reconcile``), or, without a cap, whether
    no capped run is current."""
    ledger = read_ledger(paths, cohort_id) or {}
    current = ledger.get("current")
    return current is None if cap is None else current == {"since": since, "cap_usd": cap}


def uncapped(paths: DataPaths, cohort_id: str) -> None:
    """A run without a cap starts: the ledger (if any) has no current capped run any more."""
    if read_ledger(paths, cohort_id) is not None:
        with locked(paths, cohort_id) as ledger:
            ledger["current"] = None


def current_budget(paths: DataPaths, cohort_id: str) -> Budget | None:
    """The budget of the cohort's current run, if it has a cap."""
    current = (read_ledger(paths, cohort_id) or {}).get("current")
    return Budget(paths, cohort_id, current["cap_usd"], current["since"]) if current else None


def require_priced(unpriced: dict[str, str], cap: float, where) -> None:
    """A cap cannot be enforced on a model whose calls have no known price: one error naming them."""
    if unpriced:
        names = ", ".join(f"{m} ({stage})" for m, stage in sorted(unpriced.items()))
        raise DaydreamError(
            "budget", f"a spend cap of {spend.usd(cap)} cannot be enforced: no input/output prices for {names}; "
                      "add input_price_per_mtok and output_price_per_mtok, or run without a cap", path=where)
