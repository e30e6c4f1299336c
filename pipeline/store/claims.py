"""Per-generation claims: one process at a time works on a generation, whatever runs share the
data root (two ``daydream run`` of one cohort, the ``luigi`` command beside it, several
machines, any scheduler).

A claim is ``data/gens/<stage>/<gen_id>/claim.json``, made with an exclusive create before the
generation's work and removed once its outcome is written. Its content names its owner::

    {"owner": "<host>:<pid>:<run stamp>", "host": ..., "pid": ..., "run": ...,
     "started_at": "<ISO 8601 UTC>", "heartbeat_at": "<ISO 8601 UTC>"}

The claims a process holds for one run are hard links to one owner file,
``data/gens/.claims/<host>-<pid>-<n>.json`` (``link`` fails when the name exists: exclusive on
local disks and on NFS): a claim costs a directory entry, not a file of its own, and removing it
frees nothing. On this machine's disk (ext4 without a journal) each file freed makes the next
files created skip its inode for up to minutes, and a claim made and removed per generation
cost 0.04-0.1 ms of CPU per generation (six alternated pairs). Where links cannot be made (a file
system without them, too many links) the claim is a file of its own, created with
``O_CREAT | O_EXCL``. The owner file goes once the process holds no claim of that run.

While the work is under way one thread per process refreshes ``heartbeat_at`` of the claims it
holds every ``HEARTBEAT_S``: once per owner file, which refreshes all its claims at once (in
place, through a descriptor opened on the file, so a claim taken over meanwhile is never
written). A claim is *stale* when its heartbeat is older than ``[daydream] claim_timeout`` (its
owner stopped: killed, its machine gone) or its owner's process is gone on this host; a stale
claim is taken over by renaming it away (only one taker gets it) and making a new one. A live
claim is waited for: its owner writes the outcome, which the waiter then reads from the store
instead of calling again.

The hot path is one link and one unlink per generation. A claim is not an outcome: the state
classifier never reads it, so it makes no generation look done or corrupt. A kill leaves its
claims behind: the next run takes over those it needs and sweeps the rest of its cohort's
(``sweep``) and the owner files of gone processes (``sweep_owners``), and ``daydream check``
reports any left (``stale_claims``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from pipeline.errors import DaydreamError
from pipeline.store import process_here, utc_stamp

CLAIM = "claim.json"
OWNERS = ".claims"  # under data/gens: the owner files claims are links to
HEARTBEAT_S = 5.0  # how often a process refreshes the claims it holds
POLL_S = 0.2  # how often a generation claimed by another owner is looked at again
HOST = socket.gethostname()
_TAKEN = itertools.count()


def _age_s(stamp: str | None, fallback_mtime: float, now: float | None = None) -> float:
    try:
        at = datetime.fromisoformat(stamp).timestamp() if stamp else fallback_mtime
    except (TypeError, ValueError):
        at = fallback_mtime
    return (time.time() if now is None else now) - at


def process_alive(host: str | None, pid: object) -> bool:
    """False only when the process is known to be gone (this host, no such pid)."""
    return host != HOST or process_here(pid)


@dataclass
class Claim:
    path: str
    owner: str
    body: dict
    beat: float  # monotonic time of the last heartbeat written (or of the creation)
    shared: "Owner | None" = None  # the owner file it is a link to; None: a file of its own


@dataclass
class Owner:
    """One run's owner file in this process, and how many of its claims link to it."""

    path: str
    body: dict
    claims: int = 0


class _Held:
    """The claims this process holds, its owner files, and the one thread that keeps their
    heartbeats."""

    def __init__(self):
        self.pid = os.getpid()
        self.claims: dict[str, Claim] = {}
        self.owners: dict[tuple[str, str], Owner] = {}  # (owner files' directory, run) -> its file
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, claim: Claim) -> None:
        with self.lock:
            self.claims[claim.path] = claim
            if self.thread is None:
                self.thread = threading.Thread(target=self._beat, name="daydream-claims", daemon=True)
                self.thread.start()

    def remove(self, claim: Claim) -> None:
        with self.lock:
            if self.claims.get(claim.path) is claim:
                del self.claims[claim.path]

    def owns(self, owner: str) -> bool:
        with self.lock:
            return any(c.owner == owner for c in self.claims.values())

    def link(self, path: str, run: str, body: dict) -> "Claim | None | bool":
        """A claim at ``path`` linked to this run's owner file: the claim, None when ``path``
        exists already, False when no link can be made here (the caller makes a file)."""
        where = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(path))), OWNERS)
        with self.lock:
            for _ in range(3):
                owner = self.owners.get((where, run))
                if owner is None:
                    owner = Owner(os.path.join(where, f"{HOST}-{self.pid}-{next(_TAKEN)}.json"), body)
                    try:
                        _write_new(owner.path, body)
                    except FileExistsError:
                        continue  # left by an earlier process with this process id
                    except DaydreamError:
                        return False
                    self.owners[(where, run)] = owner
                try:
                    os.link(owner.path, path)
                except FileExistsError:
                    return None
                except FileNotFoundError:
                    if os.path.exists(owner.path):
                        _make_directory(path)
                    else:  # removed by a sweep that judged this process gone: a new one
                        del self.owners[(where, run)]
                    continue
                except OSError:
                    return False  # no links on this file system, or too many to one file
                owner.claims += 1
                return Claim(path, owner.body["owner"], owner.body, time.monotonic(), owner)
        return False

    def let_go(self, claim: Claim, unlink: bool) -> None:
        """``claim`` is no longer held: its link removed (``unlink``) and, once no claim of its
        run is left, its owner file."""
        with self.lock:
            if unlink:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(claim.path)
            owner = claim.shared
            owner.claims -= 1
            if owner.claims == 0:
                for key, known in list(self.owners.items()):
                    if known is owner:
                        del self.owners[key]
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(owner.path)

    def _beat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            with self.lock:
                held = list(self.claims.values())
            written: dict[int, dict | None] = {}  # an owner file's id -> the body its beat wrote
            for claim in held:
                shared = claim.shared
                if shared is None:
                    body = _refresh(claim.path, claim.owner, claim.body)
                else:  # one write refreshes every claim linked to the file
                    if id(shared) not in written:
                        written[id(shared)] = _refresh(shared.path, claim.owner, shared.body)
                    body = written[id(shared)]
                    if body is not None:
                        shared.body = body
                if body is not None:
                    claim.body, claim.beat = body, time.monotonic()


_HELD: dict[int, _Held] = {}  # process id -> its claims (a forked process starts its own)


def _held() -> _Held:
    pid = os.getpid()
    held = _HELD.get(pid)
    if held is None:
        held = _HELD[pid] = _Held()
    return held


def _encode(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True).encode()


def _refresh(path: str, owner: str, body: dict) -> dict | None:
    """Write a new heartbeat into the file at ``path`` if it is still ``owner``'s; returns the
    body written. Through a descriptor: a claim renamed away by a taker is not the file at
    ``path`` any more, and is not recreated."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None  # removed (the outcome is being written) or taken over: nothing to keep alive
    try:
        current = json.loads(os.read(fd, 4096) or b"{}")
        if current.get("owner") != owner:
            return None
        body = dict(body, heartbeat_at=utc_stamp())
        data = _encode(body)
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        return body
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def _make_directory(path: str) -> None:
    """The directory ``path`` goes in."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as exc:
        raise DaydreamError("store", f"cannot write: {exc.strerror or exc}", path=path) from None


def _write_new(path: str, body: dict) -> None:
    """A new file at ``path`` holding ``body``; FileExistsError when one is there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileNotFoundError:
        _make_directory(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise  # the caller's answer (someone holds it), not the store error the next clause makes
    except OSError as exc:
        raise DaydreamError("store", f"cannot write: {exc.strerror or exc}", path=path) from None
    try:
        os.write(fd, _encode(body))
    except OSError as exc:  # a full disk: no empty claim left behind, and the path in the message
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise DaydreamError("store", f"cannot write: {exc.strerror or exc}", path=path) from None
    os.close(fd)


def _create(path: str, run: str) -> Claim | None:
    """The claim at ``path`` for ``run``, or None when there is one already."""
    now = utc_stamp()
    body = {"owner": f"{HOST}:{os.getpid()}:{run}", "host": HOST, "pid": os.getpid(), "run": run,
            "started_at": now, "heartbeat_at": now}
    claim = _held().link(path, run, body)
    if claim is not False:
        return claim
    try:
        _write_new(path, body)
    except FileExistsError:
        return None
    return Claim(path, body["owner"], body, time.monotonic())


@dataclass(frozen=True)
class Seen:
    """A claim as another process found it."""

    raw: bytes
    body: dict  # {} when unreadable (its owner is writing it)
    stale: bool
    why: str


def look(path: str, timeout_s: float, held: _Held | None = None, now: float | None = None) -> Seen | None:
    """The claim at ``path`` and whether it is stale (as of ``now``, a Unix time; default the
    present); None when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        raw = os.read(fd, 4096)
        mtime = os.fstat(fd).st_mtime
    finally:
        os.close(fd)
    try:
        body = json.loads(raw)
        if not isinstance(body, dict):
            body = {}
    except ValueError:
        body = {}  # being written by its owner: judged by the file's age
    age = _age_s(body.get("heartbeat_at"), mtime, now)
    if age > timeout_s:
        return Seen(raw, body, True, f"no heartbeat for {age:.0f} s")
    if body and not process_alive(body.get("host"), body.get("pid")):
        return Seen(raw, body, True, f"process {body.get('pid')} on {body.get('host')} is gone")
    if body and body.get("host") == HOST and body.get("pid") == os.getpid() and held is not None \
            and not held.owns(body.get("owner")):
        return Seen(raw, body, True, "left by an earlier process with this process id")
    return Seen(raw, body, False, f"claimed by {body.get('owner', 'another process')}")


def is_live(path: str, timeout_s: float, now: float | None = None) -> bool:
    """Whether a process is at work on the generation whose claim would be at ``path``: there is
    a claim and ``look`` does not judge it stale (the rule runs wait by; the live run view counts
    such a generation as a call in flight)."""
    seen = look(path, timeout_s, now=now)
    return seen is not None and not seen.stale


def take_over(path: str, seen: Seen) -> bool:
    """Remove the stale claim ``seen``, if it is still the one at ``path``: renamed away first,
    so of several takers only one gets it, and a claim renewed meanwhile is put back."""
    aside = os.path.join(os.path.dirname(path), f".{CLAIM}.{os.getpid()}-{next(_TAKEN)}.tmp")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        with open(aside, "rb") as f:
            raw = f.read()
        if raw != seen.raw:  # renewed or replaced since it was judged: give it back
            try:
                os.link(aside, path)
            except FileExistsError:
                pass
            return False
        return True
    finally:
        try:
            os.unlink(aside)
        except FileNotFoundError:
            pass


async def acquire(directory: str, run: str, timeout_s: float,
                  waiting: Callable[[str], None] = lambda why: None) -> Claim:
    """Claim the generation in ``directory`` for the run ``run``: at once when nobody holds it,
    after taking over a stale claim, or once its live owner has let it go (``waiting`` hears
    whose claim is waited for). The caller looks at the generation's state again once it holds
    the claim: the owner waited for may have finished it."""
    path = f"{directory}/{CLAIM}"
    held = _held()
    told = None
    while True:
        claim = _create(path, run)
        if claim is not None:
            held.add(claim)
            return claim
        seen = look(path, timeout_s, held)
        if seen is None:
            continue
        if seen.stale:
            take_over(path, seen)
            continue
        if seen.why != told:
            waiting(seen.why)
            told = seen.why
        await asyncio.sleep(POLL_S)


def release(claim: Claim, timeout_s: float) -> None:
    """Remove the claim once the generation's outcome is written (or nothing is to be written).
    Checked to be still ours only when its heartbeat may have lapsed long enough for a taker."""
    held = _held()
    held.remove(claim)
    ours = True
    if time.monotonic() - claim.beat > timeout_s / 2:
        seen = look(claim.path, float("inf"))
        ours = seen is not None and seen.body.get("owner") == claim.owner
    if claim.shared is not None:
        held.let_go(claim, unlink=ours)
    elif ours:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(claim.path)


def stale_claims(gen_dirs, timeout_s: float) -> list[tuple[str, str]]:
    """(path, why) of every stale claim under ``gen_dirs`` (generation directories)."""
    return [(path, seen.why) for path, seen in _stale(gen_dirs, timeout_s)]


def sweep(gen_dirs, timeout_s: float) -> int:
    """Remove the stale claims under ``gen_dirs`` (a run's end: a killed run's claims on
    generations that finished before the kill are never taken over). Returns how many."""
    return sum(take_over(path, seen) for path, seen in _stale(gen_dirs, timeout_s))


def _stale(gen_dirs, timeout_s: float):
    for d in gen_dirs:
        path = os.path.join(os.fspath(d), CLAIM)
        if not os.access(path, os.F_OK):  # most have none: no exception raised and caught per generation
            continue
        seen = look(path, timeout_s)
        if seen is not None and seen.stale:
            yield path, seen


def sweep_owners(gens, timeout_s: float) -> int:
    """Remove the owner files (under ``gens``, the gens store) of processes that are gone or
    stopped keeping their heartbeat: a killed run's. Returns how many."""
    where = os.path.join(os.fspath(gens), OWNERS)
    try:
        names = sorted(os.listdir(where))
    except FileNotFoundError:
        return 0
    held, removed = _held(), 0
    for name in names:
        path = os.path.join(where, name)
        seen = look(path, timeout_s, held)
        if seen is not None and seen.stale:
            removed += take_over(path, seen)
    return removed
