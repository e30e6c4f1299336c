"""Where every file lives under the data root, and the one way to write it.

All paths are built here from validated ids, so no id taken from a catalog, spec or model output
can escape the data root. Every write goes through ``atomic_write_group`` (``atomic_write_bytes``
for one file) or its three steps (``stage_group``, then ``make_durable`` and ``publish``): a
temporary file in the same directory, fsync, then ``os.replace``; a crash or kill at any moment
leaves either the old file or the new one, never a half-written file, and a group's files
appear in the order given, none before every one is on disk. ``GroupWriter``
makes staged groups durable on threads of its own for a caller that must not wait for the disk
(the executor's loop)."""

from __future__ import annotations

import concurrent.futures
import csv
import fcntl
import fnmatch
import io
import itertools
import json
import os
import queue
import threading
import time
from datetime import datetime, timezone
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from pipeline.errors import DaydreamError
from pipeline.ids import is_safe_id

STAGES = ("draft", "essay", "evaluation")
PARENT_STAGE = {"essay": "draft", "evaluation": "essay"}  # the lineage: each stage's parent stage
TMP_GLOB = ".*.tmp"  # the atomic writer's temporary files; a kill -9 may leave one behind
_TMP_IDS = itertools.count()


_FILE_MODE = 0o666  # less the umask, which the kernel applies: what open() gives a new file
GEN_FILES = (
    "metadata.json",
    "prompt.txt",
    "raw.txt",
    "raw_metadata.json",
    "parsed.txt",
    "parsed_metadata.json",
)


def check_id(value: object, what: str, *, path: object | None = None) -> str:
    """Return ``value`` as a string if it is a safe file-name component, else raise ``unsafe_id``."""
    s = "" if value is None else str(value)
    if not is_safe_id(s):
        shown = s if len(s) <= 80 else s[:77] + "..."
        raise DaydreamError(
            "unsafe_id",
            f"{what} {shown!r} is not a safe id (letters, digits, '.', '_', '-'; at most 128 characters)",
            path=path,
        )
    return s


@dataclass(frozen=True)
class DataPaths:
    """The layout of one data root (contract §1)."""

    root: Path

    # catalogs -------------------------------------------------------------------------------
    @property
    def raw(self) -> Path:
        return self.root / "1_raw"

    def catalog_csv(self, name: str) -> Path:
        return self.raw / name

    def template_file(self, stage: str, template_id: str) -> Path:
        return self.raw / "templates" / stage / f"{check_id(template_id, 'template id')}.txt"

    def concept_description(self, level: str, concept_id: str) -> Path:
        return self.raw / "concepts" / f"descriptions-{level}" / f"{check_id(concept_id, 'concept id')}.txt"

    # cohorts --------------------------------------------------------------------------------
    @property
    def cohorts(self) -> Path:
        return self.root / "cohorts"

    def cohort_dir(self, cohort_id: str) -> Path:
        return self.cohorts / check_id(cohort_id, "cohort id")

    def spec_file(self, cohort_id: str) -> Path:
        spec_dir = self.cohort_dir(cohort_id) / "spec"
        for name in ("config.yaml", "config.yml", "config.json"):
            if (spec_dir / name).exists():
                return spec_dir / name
        return spec_dir / "config.yaml"

    def membership_csv(self, cohort_id: str) -> Path:
        return self.cohort_dir(cohort_id) / "membership.csv"

    def manifest_json(self, cohort_id: str) -> Path:
        return self.cohort_dir(cohort_id) / "manifest.json"

    def reports_dir(self, cohort_id: str) -> Path:
        return self.cohort_dir(cohort_id) / "reports"

    def compiled_cohorts(self) -> list[str]:
        """Cohorts compiled at least once (they have a membership.csv), sorted by id."""
        if not self.cohorts.is_dir():
            return []
        return sorted(p.name for p in self.cohorts.iterdir()
                      if is_safe_id(p.name) and (p / "membership.csv").is_file())

    def cross_cohort_dir(self) -> Path:
        return self.root / "reports"

    # gens store -----------------------------------------------------------------------------
    @property
    def gens(self) -> Path:
        return self.root / "gens"

    def gen_dir(self, stage: str, gen_id: str) -> Path:
        if stage not in STAGES:
            raise DaydreamError("store", f"unknown stage {stage!r} (expected one of {', '.join(STAGES)})")
        return self.gens / stage / check_id(gen_id, "gen_id")

    def gen_file(self, stage: str, gen_id: str, name: str) -> Path:
        if name not in GEN_FILES:
            raise DaydreamError("store", f"unknown generation file {name!r}")
        return self.gen_dir(stage, gen_id) / name

    # site -----------------------------------------------------------------------------------
    @property
    def site_dir(self) -> Path:
        """Generated MkDocs sources and the built HTML; never committed."""
        return self.root / "site"


# ---------------------------------------------------------------------------------------------
# The generation records: the one definition of metadata.json, raw_metadata.json and
# parsed_metadata.json, used by the compiler, the runner, rating imports and the synthetic data
# maker alike (docs/architecture.md shows examples).


def generation_metadata(*, stage: str, gen_id: str, template_id: str, llm_model_id: str | None, replicate: int,
                        mode: str, combo_id: str, signature: list[str], cohorts, parent_gen_id: str | None = None,
                        combo: dict | None = None) -> dict:
    """``metadata.json``: what a generation is (seeded when a cohort is compiled), and the cohorts
    whose membership names it. ``parent_gen_id`` for essays and evaluations; ``combo`` (concept
    ids, level, k) for drafts, what their prompt is rendered from."""
    md = {"stage": stage, "gen_id": gen_id, "template_id": template_id, "llm_model_id": llm_model_id,
          "replicate": replicate, "mode": mode, "combo_id": combo_id, "signature": list(signature),
          "cohorts": sorted(set(cohorts))}
    if parent_gen_id is not None:
        md["parent_gen_id"] = parent_gen_id
    if combo is not None:
        md["combo"] = combo
    return md


def join_cohort(paths: "DataPaths", md: dict) -> int:
    """Write a generation's ``metadata.json`` as ``md`` with its ``cohorts`` list merged into the
    stored one (never dropping a cohort another process added). Returns bytes written. The
    compiler, which rewrites many at once under one lock, merges the same way in bulk."""
    path = paths.gen_file(md["stage"], md["gen_id"], "metadata.json")
    with cohort_lists_lock(paths):
        old = read_json(path) if path.exists() else None
        cohorts = set((old or {}).get("cohorts") or []) | set(md["cohorts"])
        return atomic_write_json(path, dict(md, cohorts=sorted(cohorts)))


def leave_cohort(path: Path, cohort_id: str) -> int:
    """Take ``cohort_id`` out of the ``cohorts`` list of the metadata.json at ``path``; the
    caller holds ``cohort_lists_lock``. Returns bytes written (0: it was not listed)."""
    md = read_json(path)
    if not md or cohort_id not in md.get("cohorts", []):
        return 0
    md["cohorts"] = [c for c in md["cohorts"] if c != cohort_id]
    return atomic_write_json(path, md)


def raw_metadata(*, gen_id: str, stage: str, mode: str, llm_model_id: str | None, model_slug: str | None,
                 provider: str | None, simulated: bool, finish_reason: str | None, truncated: bool,
                 prompt_tokens: int, completion_tokens: int, cost_usd: float | None, cost_source: str | None,
                 duration_s: float, attempts: int, started_at: str, finished_at: str, prompt_sha256: str,
                 raw_sha256: str, valid: bool, invalid_reason: str | None, batch_job: dict | None = None) -> dict:
    """``raw_metadata.json``: the model call behind ``raw.txt`` (copy mode: the parent's text).
    ``cost_source``: ``reported`` by the provider, ``estimated`` from the catalog prices, or
    ``unknown`` (``cost_usd`` null); null in copy mode (no call). ``batch_job``: the provider
    batch job the call went out in (its record's key and the provider's job id), only then."""
    extra = {"batch_job": batch_job} if batch_job else {}
    return dict(**extra, gen_id=gen_id, stage=stage, mode=mode, llm_model_id=llm_model_id, model_slug=model_slug,
                provider=provider, simulated=simulated, finish_reason=finish_reason, truncated=truncated,
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost_usd=cost_usd,
                cost_source=cost_source,
                duration_s=duration_s, attempts=attempts, started_at=started_at, finished_at=finished_at,
                prompt_sha256=prompt_sha256, raw_sha256=raw_sha256, valid=valid, invalid_reason=invalid_reason)


def parsed_metadata(*, gen_id: str, stage: str, parser: str, success: bool, error: str | None,
                    raw_tail_preview: str | None, simulated: bool, input_fingerprint: str,
                    parsed_sha256: str | None, finished_at: str, template_sha256: str | None = None,
                    parent_sha256: str | None = None, score: float | None = None,
                    scale: tuple[float, float] | None = None) -> dict:
    """``parsed_metadata.json``, the commit marker of a generation's outcome; evaluations also
    carry their score (None on failure) and the rubric's scale."""
    record = dict(gen_id=gen_id, stage=stage, parser=parser, success=success, error=error,
                  raw_tail_preview=raw_tail_preview, simulated=simulated, input_fingerprint=input_fingerprint,
                  parsed_sha256=parsed_sha256, finished_at=finished_at, template_sha256=template_sha256,
                  parent_sha256=parent_sha256)
    if stage == "evaluation":
        record.update(score=score, scale_min=scale[0] if scale else None, scale_max=scale[1] if scale else None)
    return record


# ---------------------------------------------------------------------------------------------
# The one atomic writer


def atomic_write_bytes(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically. Returns False (and writes nothing) if unchanged.

    Skipping identical content keeps recompiles byte- and mtime-stable and makes re-runs free.
    """
    return atomic_write_group([(path, data)]) == 1


def atomic_write_group(files: Sequence[tuple[Path | str, bytes | None]],
                       sync: "Callable[[list[int]], None] | None" = None) -> int:
    """Commit several files as one group; returns how many changed (unchanged ones are skipped).

    Every new content is written to a temporary file beside its target and fsynced, and only
    then are the files put in place, one ``os.replace`` (for ``None``: one unlink) at a time in
    the order given. So a crash or kill at any moment leaves each file old or new, never
    half-written, and what was put in place is a prefix of the list: a group that lists content
    before its metadata (the commit marker) never shows the marker without its content, even
    after a power loss, since nothing is renamed before every content is on disk. Plain ``os``
    calls on file names unique to this process, since pathlib, ``tempfile`` and buffered file
    objects cost about twice as much per write. ``sync`` fsyncs the temporaries'
    descriptors (default: one after another). The same three steps, ``stage_group``, its
    ``make_durable`` and its ``publish``, are how ``GroupWriter`` commits off its caller's thread.
    """
    group = stage_group(files)
    group.make_durable(sync or _sync_each)
    return group.publish()


def atomic_write_many(files: Sequence[tuple[Path | str, bytes]]) -> int:
    """Independent files (a compile's seeded metadata, a group at a time), each atomic on its own,
    made durable together (one ``syncfs`` where the kernel has it): on a disk an fsync each costs a
    journal commit each. Returns how many changed."""
    return atomic_write_group(files, sync=_syncfs)


Staged = list[tuple[str, "str | None"]]  # (target, its temporary file, or None: remove the target)


class StagedGroup:
    """A group written to its temporary files (``stage_group``), not yet durable nor in place:
    ``make_durable`` syncs them, then ``publish`` closes them and puts them in place in order.
    Each step runs once, on any thread; on failure nothing of the group is left behind."""

    __slots__ = ("staged", "fds")

    def __init__(self, staged: Staged, fds: list[int]):
        self.staged, self.fds = staged, fds

    def make_durable(self, sync: "Callable[[list[int]], None]") -> None:
        """Synced, or ``fail``. Closing is left to ``publish``: on a writer's thread each call
        that lets go of the interpreter's lock has to win it back from the loop's thread."""
        try:
            sync(self.fds)
        except OSError as exc:
            self.fail(exc)

    def per_directory(self) -> list[int]:
        """One descriptor per directory the temporaries are in: enough to find their file systems."""
        first: dict[str, int] = {}
        for (_, tmp), fd in zip([s for s in self.staged if s[1] is not None], self.fds):
            first.setdefault(os.path.dirname(tmp), fd)
        return list(first.values())

    def fail(self, exc: OSError) -> None:
        """The temporaries could not be made durable: discarded, and one ``store`` error."""
        _discard(self.staged, self.fds)
        raise DaydreamError("store", f"cannot write: {exc.strerror or exc}",
                            path=next((t for t, tmp in self.staged if tmp is not None), None)) from None

    def publish(self) -> int:
        """Put the staged files in place in order; returns how many changed."""
        _close(self.fds)
        staged, changed = self.staged, 0
        try:
            for i, (target, tmp) in enumerate(staged):
                try:
                    if tmp is None:
                        os.unlink(target)
                    else:
                        os.replace(tmp, target)
                    changed += 1
                except OSError as exc:
                    if tmp is not None or not isinstance(exc, FileNotFoundError):  # removing: absent is fine
                        raise DaydreamError("store", f"cannot write: {exc.strerror or exc}", path=target) from None
                staged[i] = (target, None)
        except BaseException:
            _discard(staged, [])
            raise
        return changed


def stage_group(files: Sequence[tuple[Path | str, bytes | None]]) -> StagedGroup:
    """Every changed content written to its temporary file, whose descriptor is left open for the
    sync; on failure nothing of the group is left behind."""
    staged: Staged = []
    fds: list[int] = []
    try:
        for path, data in files:
            target = os.fspath(path)
            if data is None:
                staged.append((target, None))
            elif not _unchanged(target, data):
                staged.append((target, _stage(target, data, fds)))
    except BaseException:
        _discard(staged, fds)
        raise
    return StagedGroup(staged, fds)


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
    fds.clear()


def _discard(staged: Staged, fds: list[int]) -> None:
    """Staged but not put in place: nothing of the group is left behind."""
    _close(fds)
    for _, tmp in staged:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _unchanged(target: str, data: bytes) -> bool:
    # most targets are new: ``access`` says so with no exception raised and caught
    if not os.access(target, os.F_OK):
        return False
    try:
        fd = os.open(target, os.O_RDONLY)
    except OSError:
        return False  # gone meanwhile or unreadable: the write reports any real problem
    try:
        return os.fstat(fd).st_size == len(data) and os.read(fd, len(data) + 1) == data
    except OSError:
        return False
    finally:
        os.close(fd)


def _sync_each(fds: list[int]) -> None:
    for fd in fds:
        os.fsync(fd)


def _find_syncfs():
    """libc's ``syncfs`` where the kernel reports write-back errors through it (Linux 5.8 and
    later), else None (then every file is fsynced)."""
    import ctypes
    import sys

    try:
        release = tuple(int(x) for x in os.uname().release.split(".")[:2])
        if sys.platform != "linux" or release < (5, 8):
            return None
        call = ctypes.CDLL(None, use_errno=True).syncfs
    except (ValueError, OSError, AttributeError):
        return None
    call.argtypes, call.restype = [ctypes.c_int], ctypes.c_int
    return call


_SYNCFS = _find_syncfs()


def _syncfs(fds: list[int], probes: list[int] | None = None) -> None:
    """Every file of ``fds`` on disk: one ``syncfs`` per file system they are on (one journal
    commit for all of them, where an fsync each costs a commit each and its kernel CPU); an fsync
    each if that fails. ``probes``: those of ``fds`` to look at for their file systems (default:
    all of them)."""
    devices = {}
    for fd in fds if probes is None else probes:
        devices.setdefault(os.fstat(fd).st_dev, fd)
    if all(_SYNCFS(fd) == 0 for fd in devices.values()):
        return
    _sync_each(fds)


def _stage(target: str, data: bytes, fds: list[int]) -> str:
    """Write ``data`` to a new temporary file beside ``target``; returns its name and leaves its
    descriptor, open for the fsync, in ``fds``."""
    directory, name = os.path.split(target)
    try:
        while True:
            tmp = os.path.join(directory, f".{name}.{os.getpid()}-{next(_TMP_IDS)}.tmp")  # matches TMP_GLOB
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
                break
            except FileExistsError:
                continue  # left by a killed process that had this process id
            except FileNotFoundError:
                os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise DaydreamError("store", f"cannot write: {exc.strerror or exc}", path=target) from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException as exc:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise DaydreamError("store", f"cannot write: {exc.strerror or exc}", path=target) from None
        raise
    fds.append(fd)
    return tmp


class GroupWriter:
    """Makes staged groups durable (``StagedGroup.make_durable``) on threads of its own, so a
    caller on an event loop goes on making calls while the syncs wait for the disk (on the loop's
    thread, a generation's fsyncs would leave the loop idle while the disk commits them).

    The caller stages a group (``stage_group``: page-cache writes, no wait for the disk) and puts
    it in place (``publish``, which closes its descriptors) on its own thread; only the syncs come
    here. So one thread at a time runs the commit's many small system calls: staging and renaming
    on the writer's threads as well had both threads hand the interpreter's lock to each other
    around every call (145 futex calls per generation against 29, and 0.08 ms more of CPU per
    generation, measured).

    ``submit`` returns a future resolved once the group is durable: whoever reports a generation
    done publishes it after that, so nothing is reported done before it is durable. Where the
    kernel has a ``syncfs`` that reports errors, a thread syncs the groups queued together with
    one syncfs per file system. Otherwise a group's fsyncs are made at once, its thread's and,
    through the same queue, idle threads' (the disk serves concurrent fsyncs with one journal
    commit): a sync takes about one fsync's time, not five. A thread claims an fsync before
    making it, and the group's own thread makes every one nobody has claimed yet, so a group
    never waits for a busy pool. The threads are made on the first submit (one process's writer:
    a forked child makes its own) and end once the writer is closed and idle, or when ``alive``
    says their owner has gone; no thread waits without a bound (``WAIT_S``)."""

    WAIT_S = 1.0
    BATCH = 32  # groups synced together at most (their descriptors are open until then)

    def __init__(self, threads: int = 4, alive: "Callable[[], bool]" = lambda: True, name: str = "daydream-writer"):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # groups to sync, fsyncs to help with
        self._width, self._alive, self._name = max(1, threads), alive, name
        self._threads: list[threading.Thread] = []
        self._waiting = 0  # threads waiting for work (read without the lock: a hint)
        self._pending = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._closed = False

    def submit(self, group: StagedGroup) -> "concurrent.futures.Future[StagedGroup]":
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                _discard(group.staged, group.fds)
                raise DaydreamError("store", "the writer is closed")
            self._pending += 1
            while len(self._threads) < self._width:
                thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._queue.put((group, future))
        return future

    def close(self, timeout: float) -> bool:
        """No more submits; wait up to ``timeout`` s for what was submitted to be durable (and
        for what its submitters' callbacks do then). Returns whether everything was."""
        with self._idle:
            self._closed = True
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _work(self) -> None:
        while True:
            with self._lock:
                self._waiting += 1
            try:
                item = self._queue.get(timeout=self.WAIT_S)
            except queue.Empty:
                item = None
            with self._lock:
                self._waiting -= 1
                if item is None and self._pending == 0 and (self._closed or not self._alive()):
                    self._threads.remove(threading.current_thread())
                    return
            if item is None:
                continue
            if isinstance(item, _Fsync):
                item.make()  # another group's: done already if its own thread got there first
                continue
            batch = [item]
            if _SYNCFS is not None:  # and the groups queued behind it, synced together
                while len(batch) < self.BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(more, _Fsync):
                        more.make()
                    else:
                        batch.append(more)
            try:
                self._sync_groups(batch)
            except Exception as exc:  # not the disk's error but a bug: no submitter waits forever
                for group, future in batch:
                    if not future.done():
                        _discard(group.staged, group.fds)
                        future.set_exception(exc)
            with self._idle:
                self._pending -= len(batch)
                if self._pending == 0:
                    self._idle.notify_all()

    def _sync_groups(self, batch: list) -> None:
        """Several groups with one ``syncfs`` per file system instead of an fsync per file (the
        same guarantee: every temporary is on disk before any is renamed); one group with its
        fsyncs at once where there is no syncfs. Each submitter hears of its own group."""
        groups = [(group, future) for group, future in batch if future.set_running_or_notify_cancel()]
        errors: dict[int, OSError] = {}
        fds = [fd for group, _ in groups for fd in group.fds]
        try:
            if _SYNCFS is not None:
                _syncfs(fds, [fd for group, _ in groups for fd in group.per_directory()])
            else:
                self._sync(fds)
        except OSError as exc:
            if len(groups) == 1:
                errors[0] = exc
            else:  # which of them: each group's files fsynced on their own
                for i, (group, _) in enumerate(groups):
                    try:
                        _sync_each(group.fds)
                    except OSError as exc:
                        errors[i] = exc
        for i, (group, future) in enumerate(groups):
            try:
                if i in errors:
                    group.fail(errors[i])
            except BaseException as exc:  # the submitter hears of it
                future.set_exception(exc)
                continue
            future.set_result(group)  # its submitter closes its descriptors as it publishes it

    def _sync(self, fds: list[int]) -> None:
        claiming = threading.Lock()  # the group's own: a process forked meanwhile inherits none held
        jobs = [_Fsync(fd, claiming) for fd in fds]
        for job in jobs[1:1 + self._waiting]:  # only threads with nothing else to do help (when all
            self._queue.put(job)  # are busy, handing fsyncs around costs CPU and gains nothing)
        for job in jobs:
            job.make()
        for job in jobs:  # those claimed by another thread are being made: each wait ends with its fsync
            while not job.done.wait(self.WAIT_S):
                pass
        for job in jobs:  # only once none is under way: the descriptors are closed next
            if job.error is not None:
                raise job.error


class _Fsync:
    """One fsync of a group, made by whichever thread claims it first."""

    __slots__ = ("fd", "claiming", "claimed", "done", "error")

    def __init__(self, fd: int, claiming: threading.Lock):
        self.fd, self.claiming, self.claimed, self.done, self.error = fd, claiming, False, threading.Event(), None

    def make(self) -> None:
        with self.claiming:
            if self.claimed:
                return
            self.claimed = True
        try:
            os.fsync(self.fd)
        except OSError as exc:
            self.error = exc
        finally:
            self.done.set()


def remove_stale_temporaries(directory: Path) -> int:
    """Delete temporary files a killed writer left in ``directory``; only call this where no
    other writer can be active (a generation's directory while its task runs)."""
    return _remove_temporaries(directory, lambda name: True)


def remove_dead_temporaries(directory: Path) -> int:
    """Delete the temporary files in ``directory`` whose writer (the process id in their name) is
    gone from this host, where other writers may be active (a cohort's reports: another run may
    be building them); returns how many."""
    def dead(name: str) -> bool:
        pid = name.rsplit(".", 2)[-2].split("-")[0]  # .<target>.<pid>-<n>.tmp
        return pid.isdigit() and not process_here(int(pid))

    return _remove_temporaries(directory, dead)


def _remove_temporaries(directory: Path, which: Callable[[str], bool]) -> int:
    n = 0
    try:
        names = [e.name for e in os.scandir(directory) if fnmatch.fnmatchcase(e.name, TMP_GLOB)]
    except FileNotFoundError:
        return 0
    for name in names:
        if not which(name):
            continue
        try:
            os.unlink(os.path.join(directory, name))
            n += 1
        except FileNotFoundError:
            pass
    return n


def process_here(pid: object) -> bool:
    """False only when no process ``pid`` runs on this host."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True


def atomic_write_text(path: Path, text: str) -> bool:
    return atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any) -> str:
    """Canonical JSON for files we write: sorted keys, 2-space indent, trailing newline."""
    body = _json_body(obj, "\n")
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) if body is None
            else body) + "\n"


_encode_str = json.encoder.encode_basestring  # ensure_ascii=False; the C version when available
_NOT_FINITE = {float("inf"): "Infinity", float("-inf"): "-Infinity"}


def _json_body(obj: Any, pad: str) -> str | None:
    """``json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)`` for dicts with string
    keys, lists, tuples, strings, ints, floats, bools and None; None for anything else. json's
    indented encoder is pure Python, and this one, which knows only those shapes, takes half its
    time: a compile writes a metadata.json per generation, a run two records."""
    t = type(obj)
    if t is str:
        return _encode_str(obj)
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if t is int:
        return int.__repr__(obj)
    if t is float:
        return "NaN" if obj != obj else _NOT_FINITE.get(obj) or float.__repr__(obj)
    inner = pad + "  "
    parts = []
    if t is dict:
        if not obj:
            return "{}"
        if not all(type(k) is str for k in obj):
            return None
        for k in sorted(obj):
            v = _json_body(obj[k], inner)
            if v is None:
                return None
            parts.append(f"{inner}{_encode_str(k)}: {v}")
        return "{" + ",".join(parts) + pad + "}"
    if t is list or t is tuple:
        if not obj:
            return "[]"
        for item in obj:
            v = _json_body(item, inner)
            if v is None:
                return None
            parts.append(inner + v)
        return "[" + ",".join(parts) + pad + "]"
    return None


def atomic_write_json(path: Path, obj: Any) -> bool:
    return atomic_write_text(path, dumps_json(obj))


def csv_text(columns: Sequence[str], rows: Iterable[dict | Sequence]) -> str:
    """CSV text with a header, written the same way everywhere (LF line endings)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        if isinstance(row, dict):
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
        else:
            writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue()


def atomic_write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict | Sequence]) -> bool:
    return atomic_write_text(path, csv_text(columns, rows))


# ---------------------------------------------------------------------------------------------
# Locks shared by processes and machines

_THREAD_LOCKS: dict[str, "threading.Lock"] = {}
_THREAD_LOCKS_GUARD = threading.Lock()
# A lock held this long by a live holder means the holder is stuck: the waiter says so (one
# ``store`` error naming the file) rather than hang. A holder that dies lets go at once.
LOCK_TIMEOUT_S = 600.0
LOCK_POLL_MAX_S = 0.05


@contextmanager
def exclusive_lock(lock_path: str, timeout_s: float | None = None, what: str = "the lock"):
    """Hold ``lock_path``: an ``fcntl`` record lock (it works over NFS; the kernel drops it when
    its process dies) behind a thread lock, since POSIX locks belong to a process; each waited
    for at most ``timeout_s``, then a ``store`` error naming the file and ``what`` it guards.
    The file lock is tried without blocking and looked at again after 1 ms, doubling to
    ``LOCK_POLL_MAX_S``: a blocking ``lockf`` cannot be given a timeout. ``timeout_s``: None for
    ``LOCK_TIMEOUT_S``."""
    timeout_s = LOCK_TIMEOUT_S if timeout_s is None else timeout_s
    with _THREAD_LOCKS_GUARD:
        thread_lock = _THREAD_LOCKS.setdefault(lock_path, threading.Lock())
    deadline = time.monotonic() + timeout_s
    if not thread_lock.acquire(timeout=timeout_s):
        raise DaydreamError("store", f"another thread of this process held {what} for over {timeout_s:.0f} s",
                            path=lock_path)
    try:
        try:
            os.makedirs(os.path.dirname(lock_path), exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise DaydreamError("store", f"cannot open the lock file: {exc.strerror or exc}", path=lock_path) from None
        try:
            pause = 0.001
            while True:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except (BlockingIOError, PermissionError):
                    if time.monotonic() > deadline:
                        raise DaydreamError("store", f"another process held {what} for over {timeout_s:.0f} s",
                                            path=lock_path) from None
                    time.sleep(pause)
                    pause = min(2 * pause, LOCK_POLL_MAX_S)
            yield
        finally:
            os.close(fd)  # also releases the lock
    finally:
        thread_lock.release()


@contextmanager
def cohort_lists_lock(paths: DataPaths):
    """Held while a generation's ``cohorts`` list (in its metadata.json) is read and rewritten:
    compiling a cohort merges itself in, purging it takes itself out. Without it two cohorts
    compiled at once (two processes or machines sharing the data root) could each write back the
    list it read, dropping the other. ``exclusive_lock`` on ``cohorts/.cohort-lists.lock``
    (beside the specs, so taking it creates no gens store)."""
    with exclusive_lock(os.fspath(paths.cohorts / ".cohort-lists.lock"), what="the generations' cohort lists' lock"):
        yield


def utc_stamp() -> str:
    """Now, as the store records every time (ISO 8601, UTC, milliseconds). A run's ``since`` and
    the times its failures are recorded at are compared as strings, so they share this one format."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------
# Reading with clear errors


def read_text(path: Path, *, authored: bool = False) -> str | None:
    """The file's text, or None if it does not exist.

    ``authored``: a file a person wrote (catalog CSV, template, concept description), read as
    utf-8-sig because spreadsheet programs and Windows editors save a byte-order mark first.
    """
    try:
        # not pathlib: the classifier reads ~6 files a generation
        with open(path, encoding="utf-8-sig" if authored else "utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DaydreamError("store", f"cannot read: {exc}", path=path) from None


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, None if absent; a corrupt file is a ``store`` error."""
    text = read_text(path)
    if text is None:
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DaydreamError("store", f"corrupt JSON ({exc.msg} at line {exc.lineno})", path=path) from None
    if not isinstance(obj, dict):
        raise DaydreamError("store", "corrupt JSON (expected an object)", path=path)
    return obj


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV with a header, as dicts of strings; missing file → error naming it.

    A byte-order mark (a CSV saved by a spreadsheet) is not part of the first column's name.
    """
    text = read_text(path, authored=True)
    if text is None:
        raise DaydreamError("store", "file not found", path=path)
    return list(csv.DictReader(io.StringIO(text)))


def file_token(path: Path | str) -> tuple | None:
    """A file's state as far as caches go (modification time, size, inode), None when it is
    absent: a cache keeps what it read of a file while its token is unchanged (an atomic rewrite
    makes a new inode, an edit in place a new time)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def stat_fingerprint(files: Iterable[Path]) -> str:
    """A cheap fingerprint of files' state (path, size, mtime): decides when derived outputs such as
    reports are stale without reading every file's content."""
    import hashlib

    h = hashlib.sha256()
    for f in files:
        try:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            h.update(f"{f}\0-\n".encode())
    return h.hexdigest()
