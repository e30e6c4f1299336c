"""Where generations run: one event loop, each generation started once, and a chunk's members
started ahead of their tasks; in a process of its own beside the one that runs Luigi.

A Luigi worker that runs its tasks itself (``--workers 1``, the ``luigi`` command's default)
runs them one after another on its own thread, and between two tasks it does its bookkeeping
(the batch's completion, the next ``get_work``, the next task objects, opening the next chunk)
with no call of its own in flight, and the more calls a provider takes at once, the more of
its capacity those pauses waste. So the calls run on an event loop (``Executor``), and an opened chunk
starts its members there at once (``start_ahead``), at most as many calls at a time as one of
its provider's tasks may hold (``config.calls_per_task``), and waits for them to end
(``settle_ahead``): Luigi then schedules a generation task only for what is left unsettled
(sent in batch jobs, not started ahead), which joins its generation if it is under way and
starts it if not. Elsewhere (against luigid, ``--workers`` > 1) every generation is its own
task as before.

Where the loop runs. The process that starts calls ahead runs every task of the run, so Luigi's
bookkeeping and the generations' work (the model client, rendering, writing the files) share
one interpreter lock there: each time the loop's thread waited for a file or the network, it
queued behind Luigi's thread for the lock. So that process forks the loop into a process of
its own the first time it starts calls ahead (``ExecutorProcess``, driven over two pipes) and
keeps it for the rest of its life. A process Luigi forked for one task (``--workers`` > 1), or one that never starts calls ahead
(against luigid), runs the loop on a thread of its own (``Executor``): nothing is started ahead
there, so nothing runs beside Luigi's thread but the task's own calls.

The chunk decides whether to start ahead (``RunCohort.ahead``: only under the local scheduler,
where this process runs every task it adds). Here it is also skipped in a process Luigi forked
for one task (it ends with its task and would take the calls with it) and for calls that answer
in under ``AHEAD_MIN_LATENCY_S``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import gc
import itertools
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from pipeline import config
from pipeline.run import run_status
from pipeline.run.batch_jobs import Router
from pipeline.run.generation import Files, Runtime, generate, metadata, run_state
from pipeline.errors import DaydreamError
from pipeline.store.ledger import Budget
from pipeline.store.state import DONE, State
from pipeline.store import PARENT_STAGE, GroupWriter, stage_group

Key = tuple[str, str, str]  # stage, gen_id, the run's since
# a generation to start ahead: its key, the endpoint it calls ("" for none) and its parent's key
Ahead = tuple[Key, str, "Key | None"]
Status = Callable[[str], None]
Each = Callable[[str, State], None]  # a batch member's gen_id and state, as each one ends
# Calls faster than this gain nothing from being started ahead: there is no wait to hide, only
# the cost of starting them
AHEAD_MIN_LATENCY_S = 0.1
FOLLOW_AT = 2  # gates' worth of a chunk's members left when the next chunk's are started
AHEAD_SLICE = 64  # a chunk's members looked at before the unsettled ones among them are started
CLOSE_TIMEOUT_S = 10.0
# Threads making the generations' files durable (``store.GroupWriter``): without syncfs a group's
# five fsyncs are made at once, and the disk serves concurrent fsyncs with one journal commit, so
# a commit takes about one fsync and several commits go on together
WRITER_THREADS = 16
# How often a thread that waits on another (the loop's thread, the executor's process, the driver)
# looks again whether that side is still there: a wait never outlives the side it waits on.
# Only when nothing arrives; an answer wakes the waiter at once, so throughput is unchanged.
ALIVE_CHECK_S = 1.0

_freezing_forks = False  # whether this process registered ``freeze_forked_children`` (inherited by a fork)


def freeze_forked_children() -> None:
    """From now on a process forked from this one (a task's with ``--workers`` > 1, the
    executor's) keeps what it inherited out of the collector's sight for as long as it lives, so
    a full collection looks only at what the child allocates, not again and again at the run's
    tasks it inherited. Called before the first fork that needs it
    (the first task made in a process, the executor's fork), not at import: importing the module
    changes nothing. Once per process, since a fork handler cannot be taken back."""
    global _freezing_forks
    if not _freezing_forks:
        os.register_at_fork(after_in_child=gc.freeze)
        _freezing_forks = True


def _quiet(message: str) -> None:
    pass


def _new_loop() -> asyncio.AbstractEventLoop:
    """libuv's event loop (``uvloop``) where it is installed (not on Windows): with it a
    generation's call and commit cost 8 % less of the executor's CPU (``bench/README.md``)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@dataclass
class Executor:
    """An event loop on a thread of its own, and the generations running on it (one per process
    and data root; in the executor's own process, the one it serves).

    ``claimed``: the keys started ahead and not yet ended; ``events``, when set, hears of each
    claim and end as ``("claim", keys)`` and ``("ended", key, state settled for the run or None)``.
    """

    rt: Runtime
    events: Callable[[tuple], None] | None = None
    loop: asyncio.AbstractEventLoop = field(default_factory=_new_loop)
    running: dict[Key, asyncio.Future] = field(default_factory=dict)
    waiting: dict[Key, asyncio.Future] = field(default_factory=dict)  # started ahead: set when it is over
    claimed: set[Key] = field(default_factory=set)  # started ahead and not finished (any thread reads it)
    followed: set[Key] = field(default_factory=set)  # the first member of each chunk started behind another
    queued: dict[str, deque] = field(default_factory=dict)  # endpoint -> started ahead, waiting for its gate
    busy: dict[str, int] = field(default_factory=dict)  # endpoint -> its generations started ahead calling
    gated: dict[Key, str] = field(default_factory=dict)  # those generations -> their endpoint
    stopping: bool = False  # nothing more is started ahead
    # endpoint -> seconds its recent calls took
    durations: dict[str, deque] = field(default_factory=dict)
    # the run's status file (pipeline/run/run_status.py): run stamp -> its cohorts and how many of its
    # generations ended here in each state
    runs: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        self.pid = os.getpid()
        self._thread = threading.Thread(target=self.loop.run_forever, name="daydream-executor", daemon=True)
        self._thread.start()
        # the generations' files are committed on threads of their own: the loop goes on making
        # calls while the disk syncs them (see ``commit``)
        self.writer = GroupWriter(WRITER_THREADS, alive=self._thread.is_alive)
        self._noted: set[tuple[str, str]] = set()
        self.status_file = run_status.Writer(self.rt.paths, self._status_now)

    # What the process's thread that runs Luigi's tasks calls (the same on ``ExecutorProcess``).

    def run_generation(self, stage: str, gen_id: str, since: str, budget: Budget | None,
                       status: Status = _quiet) -> State:
        return self._wait(self.outcome(stage, gen_id, since, budget, status))

    def run_batch(self, stage: str, gen_ids: list[str], in_flight: int, since: str, budget: Budget | None,
                  each: Each) -> None:
        self._wait(self.batch(stage, gen_ids, in_flight, since, budget, each))

    def start(self, entries: list[Ahead], budget: Budget | None) -> None:
        """Claim ``entries`` and start them ahead; returns at once. Called in order, parents' first."""
        self.claimed.update(key for key, _, _ in entries)  # the caller's next look at them finds them under way
        self.loop.call_soon_threadsafe(self.start_all, entries, budget)

    def follow(self, keys: list[Key], chain: list[list[Ahead]], budget: Budget | None) -> None:
        asyncio.run_coroutine_threadsafe(self.start_behind(keys, chain, budget), self.loop)

    def under_way(self, key: Key) -> bool:
        return key in self.claimed or key in self.running

    def note_run(self, cohort: str, since: str) -> None:
        """Name the cohort whose run ``since`` is, in the status file."""
        if (cohort, since) not in self._noted:
            self._noted.add((cohort, since))
            self.loop.call_soon_threadsafe(lambda: self._run(since)["cohorts"].add(cohort))

    def close(self) -> None:
        """Close the providers' connections and stop the loop's thread; whatever is under way is
        dropped (the store has what finished)."""
        if os.getpid() != self.pid:
            return
        self.status_file.stop()
        if not self.loop.is_running():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.close_providers(), self.loop).result(timeout=CLOSE_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            pass  # a loop stuck in a call: stopped all the same, its connections go with the process
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.writer.close(CLOSE_TIMEOUT_S)  # what was answered is put in place before the process ends

    def _wait(self, coro):
        """Run ``coro`` on the executor's loop; wait for it on this thread."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            while True:
                try:
                    return future.result(timeout=ALIVE_CHECK_S)
                except concurrent.futures.TimeoutError:
                    if not self._thread.is_alive():
                        raise RuntimeError("the executor's event loop stopped with a request under way") from None
        except BaseException:
            future.cancel()  # interrupted: do not leave the batch running behind the caller
            raise

    # Everything below runs on the executor's loop.

    async def close_providers(self) -> None:
        await asyncio.gather(*(p.aclose() for p in self.rt.providers_here()), return_exceptions=True)

    def generation(self, stage: str, gen_id: str, since: str, budget: Budget | None,
                   status: Status = _quiet, *, look: bool = True) -> asyncio.Future | State:
        """The generation's run under way, or a new one; its state when it is already settled
        for this run (so a failure recorded ahead of its task is not called again). ``look``:
        False when it was found unsettled a moment ago (only what the run settled is asked)."""
        key = (stage, gen_id, since)
        future = self.running.get(key)
        if future is not None:
            return future
        st = run_state(self.rt, stage, gen_id, since) if look else self.rt.settled.get(key)
        if st is not None and st.settled(since):
            return st
        future = self.running[key] = asyncio.ensure_future(self._generate(stage, gen_id, since, budget, status))
        future.add_done_callback(lambda f: self._finished(key, f))
        return future

    async def outcome(self, stage: str, gen_id: str, since: str, budget: Budget | None,
                      status: Status = _quiet) -> State:
        """The state ``generation`` gives, once the run under way (if any) has ended."""
        started = self.generation(stage, gen_id, since, budget, status)
        return await started if isinstance(started, asyncio.Future) else started

    async def batch(self, stage: str, gen_ids: list[str], in_flight: int, since: str, budget: Budget | None,
                    each: Each) -> None:
        """Several generations, at most ``in_flight`` started at once, joining those under way;
        ``each`` hears each one's state as it ends."""
        slots = asyncio.Semaphore(max(1, in_flight))

        async def one(gen_id: str) -> None:
            under_way = self.running.get((stage, gen_id, since))
            if under_way is not None:
                st = await under_way
            else:
                async with slots:
                    st = await self.outcome(stage, gen_id, since, budget)
            each(gen_id, st)

        # every generation ends before an error is raised: none is left half-way on the loop
        errors = [e for e in await asyncio.gather(*(one(g) for g in gen_ids), return_exceptions=True) if e]
        if errors:
            raise errors[0]

    async def _generate(self, stage: str, gen_id: str, since: str, budget: Budget | None,
                        status: Status) -> State:
        def called(seconds: float) -> None:  # only calls made: one found done would look quick
            self.durations.setdefault(self._endpoint(stage, gen_id), deque(maxlen=32)).append(seconds)
            self._free_gate((stage, gen_id, since))

        st = await generate(self.rt, stage, gen_id, status, budget, on_call=called, since=since, commit=self.commit)
        self.rt.keep_settled(stage, gen_id, since, st)
        self._run(since)["ended"][st.kind] += 1
        return st

    async def commit(self, files: Files) -> int:
        """Put a generation's files in place: written to their temporaries here, made durable on
        the writer's threads (``store.GroupWriter``), then put in place here; returns once they
        are, so it is reported done only once durable. Cancelled meanwhile (the run is stopping),
        it still waits for them, up to ``CLOSE_TIMEOUT_S``, and they are put in place whenever
        they are durable: the generation's claim is held until then, and a paid answer is not
        thrown away."""
        group = stage_group(files)
        durable = self.writer.submit(group)
        waited = asyncio.wrap_future(durable, loop=self.loop)
        try:
            await asyncio.shield(waited)
        except asyncio.CancelledError:
            durable.add_done_callback(lambda f: f.exception() is None and group.publish())
            await asyncio.wait([waited], timeout=CLOSE_TIMEOUT_S)
            raise
        return group.publish()

    def _run(self, since: str) -> dict:
        run = self.runs.get(since)
        if run is None:
            run = self.runs[since] = {"cohorts": set(), "ended": Counter()}
        return run

    def _status_now(self) -> dict | None:
        """The status file's figures, taken on the loop (called by its writer's thread); None
        when the loop does not answer within a refresh."""
        if not self.loop.is_running():
            return None
        future = asyncio.run_coroutine_threadsafe(self._status(), self.loop)
        try:
            return future.result(timeout=run_status.INTERVAL_S)
        except (concurrent.futures.TimeoutError, RuntimeError):
            future.cancel()
            return None

    async def _status(self) -> dict:
        now = time.monotonic()
        providers = {p.name: p.calls(now) for p in self.rt.providers_here()}
        for endpoint, queued in self.queued.items():
            figures = providers.setdefault(endpoint or "copy", {})
            figures.update(ahead_queued=len(queued), ahead_running=self.busy.get(endpoint, 0))
        return {"runs": [{"since": since, "cohorts": sorted(run["cohorts"]), **run["ended"]}
                         for since, run in self.runs.items()],
                "providers": providers,
                "generations": {"under_way": len(self.running), "ahead": len(self.waiting)}}

    def _finished(self, key: Key, future: asyncio.Future) -> None:
        # the store records the outcome: only a generation under way is kept here
        self.running.pop(key, None)
        if not future.cancelled():
            future.exception()  # whoever awaits it still gets it; nobody else need to

    def start_all(self, entries: list[Ahead], budget: Budget | None) -> None:
        """Start ``entries`` ahead, each once its parent has settled (registered together, so a
        child finds its parent) and its endpoint's gate has room: at most a gate's worth at
        once; nothing when its task or the budget got there first. An entry costs a future until
        it starts (a chunk's 2,000 are registered as it opens, ahead of the first calls)."""
        for key, endpoint, parent in entries:
            if key in self.running and key not in self.waiting:  # its task started it: claimed until it ends
                self.running[key].add_done_callback(lambda _, key=key: self._release(key))
            elif key not in self.waiting:
                over = self.waiting[key] = self.loop.create_future()
                over.add_done_callback(lambda _, key=key: self._over(key))
                self._after_parent(key, endpoint, parent, budget)

    def _after_parent(self, key: Key, endpoint: str, parent: Key | None, budget: Budget | None) -> None:
        for under_way in (self.waiting, self.running):  # its task may have started the parent instead
            if parent in under_way:
                under_way[parent].add_done_callback(lambda _: self._after_parent(key, endpoint, parent, budget))
                return
        try:
            parent_done = parent is None or run_state(self.rt, *parent).kind == DONE
        except DaydreamError:
            parent_done = False  # its task reports it
        if not parent_done:
            return self._drop(key)  # failed or blocked: its task records that
        self.queued.setdefault(endpoint, deque()).append((key, budget))
        self._pump(endpoint)

    def _pump(self, endpoint: str) -> None:
        """Start the endpoint's queued entries while its gate has room."""
        queued, width = self.queued.get(endpoint), self._width(endpoint)
        while queued and not self.stopping and self.busy.get(endpoint, 0) < width:
            key, budget = queued.popleft()
            if key in self.running or budget is not None and budget.reached() or self._quick(endpoint):
                self._drop(key)
                continue
            # found unsettled by its chunk (``generate`` looks again: the next chunk's are not)
            started = self.generation(*key, budget, look=False)
            if not isinstance(started, asyncio.Future):
                self._drop(key)
                continue
            self.busy[endpoint] = self.busy.get(endpoint, 0) + 1
            self.gated[key] = endpoint
            started.add_done_callback(lambda _, key=key: self._gate_freed(key))  # its error is its task's

    def _gate_freed(self, key: Key) -> None:
        self._free_gate(key)
        self._drop(key)

    def _free_gate(self, key: Key) -> None:
        """Give the generation's place in its endpoint's gate to the next one queued: once its call
        has answered (its files are then committed off the loop and need no call slot), or once
        it has ended."""
        endpoint = self.gated.pop(key, None)
        if endpoint is not None:
            self.busy[endpoint] -= 1
            self._pump(endpoint)

    def _drop(self, key: Key) -> None:
        """The entry is over: started and ended, or not to be started."""
        over = self.waiting.get(key)
        if over is not None and not over.done():
            over.set_result(None)

    def _over(self, key: Key) -> None:
        self.waiting.pop(key, None)
        self._release(key)

    async def start_behind(self, keys: list[Key], chain: list[list[Ahead]], budget: Budget | None) -> None:
        """Start each chunk of ``chain`` once only ``FOLLOW_AT`` gates' worth of the one before it
        (the first: of ``keys``) are left waiting."""
        for later in chain:
            await self.until_left(keys, FOLLOW_AT * self.widest_gate())
            claims = [key for key, _, _ in later]
            self.claimed.update(claims)  # the chunk, opened from now on, finds them under way
            if self.events:
                self.events(("claim", claims))
            self.start_all(later, budget)
            keys = claims

    def _release(self, key: Key) -> None:
        self.claimed.discard(key)
        if self.events:
            self.events(("ended", key, self.rt.settled.get(key)))

    async def until_left(self, keys: list[Key], left: int) -> None:
        """Wait until at most ``left`` of ``keys`` are still waiting ahead (counted down as each
        ends: looking at all of a chunk's 2,000 every few milliseconds cost the loop 4 % of its time)."""
        futures = [self.waiting[key] for key in keys if key in self.waiting]
        remaining = len(futures)
        if remaining <= left:
            return
        reached = self.loop.create_future()

        def ended(_) -> None:
            nonlocal remaining
            remaining -= 1
            if remaining <= left and not reached.done():
                reached.set_result(None)

        for future in futures:
            future.add_done_callback(ended)
        await reached

    def _quick(self, endpoint: str) -> bool:
        """Its calls answer too fast to gain from being started ahead (``AHEAD_MIN_LATENCY_S``):
        the median of its recent calls, not the fastest, since one quick answer among slow ones
        (a heavy-tailed provider: 1 in 500 under 0.1 s at a median of 1 s) would otherwise drop
        every start queued ahead and leave the calls to their tasks."""
        recent = sorted(self.durations.get(endpoint) or [AHEAD_MIN_LATENCY_S])
        return recent[len(recent) // 2] < AHEAD_MIN_LATENCY_S

    def _endpoint(self, stage: str, gen_id: str) -> str:
        model = metadata(self.rt, stage, gen_id).get("llm_model_id")
        return self.rt.endpoint(model) if model else ""  # "": copy mode, no call

    def _width(self, endpoint: str) -> int:
        """How many of an endpoint's generations its gate lets run at once."""
        return self.rt.calls_per_task(endpoint) if endpoint else config.COPY_BATCH

    def widest_gate(self) -> int:
        return max(map(self._width, self.busy), default=config.COPY_BATCH)


class ExecutorProcess:
    """An ``Executor`` in a process of its own, forked from this one, driven over two pipes.

    Commands go one way (``start``, ``follow``, ``one``, ``batch``, ``cancel``, ``close``); events
    come back (``claim`` and ``ended`` of the keys started ahead; ``status``, ``each``, ``done``
    and ``error`` of a request; those of one turn of its loop in one pickled message), read by a
    thread here. The caller's thread waits for its request and runs its callbacks itself. The
    executor's process ignores Ctrl-C (the caller's wait is what is interrupted, and it cancels
    its request) and ends when this process does: its pipe then closes, it cancels what is
    under way and exits. The store has what finished.
    """

    def __init__(self, rt: Runtime):
        ctx = multiprocessing.get_context("fork")  # the runtime, its caches and the config as they are
        theirs_commands, self._commands = ctx.Pipe(duplex=False)
        self._events, theirs_events = ctx.Pipe(duplex=False)
        self.rt, self.pid = rt, os.getpid()
        self.claimed: set[Key] = set()
        self.followed: set[Key] = set()  # the first member of each chunk started behind another
        self._noted: set[tuple[str, str]] = set()
        self._requests: dict[int, queue.SimpleQueue] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()  # one command at a time on the pipe
        self.ended: str | None = None  # why the executor's process is gone, once it is
        # the keys each waiting chunk has yet to see end (``settle``), and its signal; ends are
        # taken off ``claimed`` under the same lock, so none falls between a look and a wait
        self._waits: list[tuple[set[Key], threading.Event]] = []
        self._waits_lock = threading.Lock()
        # Everything alive now (modules, the catalog, the runtime's caches, the tasks added so
        # far) outlives the run: kept out of the collector's sight on both sides of the fork, or
        # every full collection here would look at all of it again.
        gc.freeze()
        freeze_forked_children()  # and the executor's process, on its side
        self.process = ctx.Process(target=_serve, args=(rt, theirs_commands, theirs_events, self._commands, self._events),
                                   name="daydream-executor", daemon=True)
        self.process.start()
        theirs_commands.close()  # so each side sees the other's end when it goes
        theirs_events.close()
        self._reader = threading.Thread(target=self._read, name="daydream-executor-events", daemon=True)
        self._reader.start()
        # before multiprocessing's own exit handler kills it: an interrupted run's calls are
        # cancelled there, which gives their spend reservations back
        atexit.register(self.close)

    def run_generation(self, stage: str, gen_id: str, since: str, budget: Budget | None,
                       status: Status = _quiet) -> State:
        st = self._request(("one", stage, gen_id, since, budget), lambda kind, message: status(message))
        self.rt.keep_settled(stage, gen_id, since, st)
        return st

    def run_batch(self, stage: str, gen_ids: list[str], in_flight: int, since: str, budget: Budget | None,
                  each: Each) -> None:
        def event(kind: str, gen_id: str, st: State) -> None:
            self.rt.keep_settled(stage, gen_id, since, st)
            each(gen_id, st)

        self._request(("batch", stage, gen_ids, in_flight, since, budget), event)

    def start(self, entries: list[Ahead], budget: Budget | None) -> None:
        self.claimed.update(key for key, _, _ in entries)
        self._send(("start", entries, budget))

    def follow(self, keys: list[Key], chain: list[list[Ahead]], budget: Budget | None) -> None:
        self._send(("follow", keys, chain, budget))

    def under_way(self, key: Key) -> bool:
        return key in self.claimed

    def settle(self, keys: Sequence[Key]) -> None:
        """Return once none of ``keys`` is under way here (each started ahead has ended), or
        the executor's process has gone (then what is left is not settled, and its task says so)."""
        done = threading.Event()
        with self._waits_lock:
            entry = ({k for k in keys if k in self.claimed}, done)
            if not entry[0]:
                return
            self._waits.append(entry)
        try:
            while not done.wait(ALIVE_CHECK_S):
                if self.ended or not self._reader.is_alive():
                    return
        finally:
            with self._waits_lock:
                self._waits.remove(entry)

    def note_run(self, cohort: str, since: str) -> None:
        if (cohort, since) not in self._noted:
            self._noted.add((cohort, since))
            self._send(("note", cohort, since))

    def close(self) -> None:
        """Let the executor's process close its providers' connections and end; wait for it."""
        if os.getpid() != self.pid or not self.process.is_alive():
            return
        # a process that runs again (tests, benchmarks) pins neither this run's garbage nor,
        # through the exit handler, this executor and its runtime's caches
        gc.unfreeze()
        atexit.unregister(self.close)
        try:
            self._send(("close",))
        except OSError:
            pass  # already going
        self.process.join(CLOSE_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(CLOSE_TIMEOUT_S)  # SIGKILL ends it; bounded all the same

    def _send(self, message: tuple) -> None:
        if self.ended:
            raise RuntimeError(self.ended)
        with self._lock:
            self._commands.send(message)

    def _request(self, command: tuple, event: Callable):
        """Send ``command`` and wait for its result, running ``event`` for each of its events."""
        rid = next(self._ids)
        answers = self._requests[rid] = queue.SimpleQueue()
        try:
            self._send((command[0], rid) + command[1:])
            while True:
                try:
                    kind, *args = answers.get(timeout=ALIVE_CHECK_S)
                except queue.Empty:
                    # The events thread answers every request when the process ends; if that
                    # thread is gone too, nobody will.
                    if not self._reader.is_alive():
                        raise RuntimeError(self.ended or "the executor's events thread ended") from None
                    continue
                if kind == "done":
                    return args[0]
                if kind == "error":
                    raise args[0]
                event(kind, *args)
        except BaseException:
            if not self.ended:
                with contextlib.suppress(OSError, RuntimeError):  # gone meanwhile: nothing to cancel
                    self._send(("cancel", rid))  # interrupted: do not leave it running behind the caller
            raise
        finally:
            self._requests.pop(rid, None)

    def _read(self) -> None:
        """The events thread: keys claimed and ended, and each request's events to its caller."""
        while True:
            try:
                # The pipe ends when the process does, unless something forked from it still holds
                # its end: then its exit is what says no more events will come.
                if not self._events.poll(ALIVE_CHECK_S):
                    if self.process.is_alive():
                        continue
                    if not self._events.poll(0):
                        break
                events = pickle.loads(self._events.recv_bytes())
            except (EOFError, OSError):
                break
            for kind, *args in events:
                if kind == "claim":
                    self.claimed.update(args[0])
                elif kind == "ended":
                    key, st = args
                    if st is not None:
                        self.rt.settled[key] = st  # settled before no longer under way: never neither
                    with self._waits_lock:
                        self.claimed.discard(key)
                        for waiting, done in self._waits:
                            waiting.discard(key)
                            if not waiting:
                                done.set()
                else:
                    answers = self._requests.get(args[0])
                    if answers is not None:
                        answers.put((kind, *args[1:]))
        self.process.join(1)
        self.ended = f"the executor's process ended (exit code {self.process.exitcode})"
        for answers in list(self._requests.values()):
            answers.put(("error", RuntimeError(self.ended)))


def _serve(rt: Runtime, commands, events, *parent_ends) -> None:
    """The executor's process: run each command on a new ``Executor``'s loop; end when told or
    when the driving process has gone (its end of the pipe closed)."""
    for end in parent_ends:
        end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # What this process inherited is frozen (``ExecutorProcess.__init__``): a collection looks
    # only at what the generations allocate, many short-lived objects (a call's request, headers
    # and response), so young collections are made every 10,000 allocations instead of every 700:
    # most of those objects are gone by then, and each collection costs the same.
    gc.set_threshold(10_000, 20, 20)
    driver = os.getppid()
    outbox: list[tuple] = []

    def send(message: tuple) -> None:  # only ever called on the loop's thread
        if not outbox:
            ex.loop.call_soon(flush)
        outbox.append(message)

    def flush() -> None:
        # the events of one turn of the loop in one message: calls answered together end together
        batch = pickle.dumps(outbox, pickle.HIGHEST_PROTOCOL)
        outbox.clear()
        with contextlib.suppress(OSError):  # the driver has gone: this process is about to stop
            events.send_bytes(batch)

    ex = Executor(rt, events=send)
    rt.executors[os.getpid()] = ex
    requests: dict[int, asyncio.Future] = {}

    def answer(rid: int, task: asyncio.Future) -> None:
        requests.pop(rid, None)
        if task.cancelled():
            return  # its caller cancelled it and is not waiting
        error = task.exception()
        send(("done", rid, task.result()) if error is None else ("error", rid, _portable(error)))

    def handle(kind: str, *args) -> None:
        if kind == "start":
            ex.start_all(*args)
        elif kind == "follow":
            asyncio.ensure_future(ex.start_behind(*args))
        elif kind == "note":
            ex.note_run(*args)
        elif kind == "cancel":
            if args[0] in requests:
                requests[args[0]].cancel()
        else:
            rid, *rest = args
            if kind == "one":
                coro = ex.outcome(*rest, status=lambda message: send(("status", rid, message)))
            else:
                coro = ex.batch(*rest, each=lambda gen_id, st: send(("each", rid, gen_id, st)))
            task = requests[rid] = asyncio.ensure_future(coro)
            task.add_done_callback(lambda t: answer(rid, t))

    while True:
        try:
            # A Luigi worker forked from the driver holds the pipe's end too, so the driver's death
            # alone may never close it: its exit (this process re-parented) says it has gone.
            if not commands.poll(ALIVE_CHECK_S):
                if os.getppid() != driver:
                    break
                continue
            kind, *args = commands.recv()
        except (EOFError, OSError):
            break  # the driving process has gone: what it was waiting for is of no use
        if kind == "close":
            break
        ex.loop.call_soon_threadsafe(handle, kind, *args)

    async def stop() -> None:
        ex.stopping = True  # a cancelled generation frees its gate: nothing queued may take it
        under_way = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in under_way:
            task.cancel()  # a call's spend reservation is given back as it is cancelled
        await asyncio.gather(*under_way, return_exceptions=True)
        await ex.close_providers()

    try:
        asyncio.run_coroutine_threadsafe(stop(), ex.loop).result(timeout=CLOSE_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        pass
    ex.writer.close(CLOSE_TIMEOUT_S)  # the answers that arrived are put in place before the process ends
    ex.status_file.stop()


def _portable(error: BaseException) -> BaseException:
    """``error`` as it can cross to the driving process: itself, or a RuntimeError with its traceback."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        text = "".join(traceback.format_exception(error))
        return RuntimeError(f"in the executor's process: {text}")


def executor(rt: Runtime, *, own_process: bool = False) -> Executor | ExecutorProcess:
    """This process's executor for ``rt`` (a forked worker process builds its own). ``own_process``:
    the one about to start calls ahead, whose loop then runs in a process of its own from now on."""
    key = os.getpid()
    ex = rt.executors.get(key)
    if ex is None or own_process and isinstance(ex, Executor):
        with rt.lock():
            ex = rt.executors.get(key)
            if ex is None or own_process and isinstance(ex, Executor):
                if ex is not None:
                    ex.close()  # idle: this thread waits for each of its requests
                ex = rt.executors[key] = ExecutorProcess(rt) if own_process else Executor(rt)
    return ex


def note_run(rt: Runtime, cohort: str, since: str) -> None:
    """Name, in this process's executor's status file, the cohort whose run ``since`` is."""
    if cohort:
        executor(rt).note_run(cohort, since)


def under_way(rt: Runtime, stage: str, gen_id: str, since: str) -> bool:
    """Started ahead or running in this process for the run ``since``, so not settled: nothing to
    look at in the store (a chunk's 2,000 members are asked about as it opens)."""
    ex = rt.executors.get(os.getpid())
    key = (stage, gen_id, since)
    if ex is None or key in rt.settled:  # settled before its future resolves or its ahead slot ends
        return False
    return ex.under_way(key)


def settled_for_run(rt: Runtime, stage: str, gen_id: str, since: str, memo: dict | None = None) -> bool:
    """Settled for the run ``since`` (``State.settled``); one under way here is not, unlooked at."""
    return not under_way(rt, stage, gen_id, since) and run_state(rt, stage, gen_id, since, memo).settled(since)


def settle_ahead(rt: Runtime, rows: list[dict], since: str) -> list[dict]:
    """Wait for ``rows`` (a chunk's members, as ``start_ahead`` returned them) started ahead in
    this process to end; returns those still not settled for the run: sent in batch jobs, not
    started ahead (a quick provider, a spend cap reached), or left by an executor gone."""
    ex = rt.executors.get(os.getpid())
    if isinstance(ex, ExecutorProcess):
        ex.settle([(r["stage"], r["gen_id"], since) for r in rows])
    return unsettled(rt, rows, since, {})


def unsettled(rt: Runtime, rows: Sequence[dict], since: str, memo: dict) -> list[dict]:
    """The rows (with ``stage`` and ``gen_id``) not settled for the run ``since``."""
    return [r for r in rows if not settled_for_run(rt, r["stage"], r["gen_id"], since, memo)]


def run_generation(rt: Runtime, stage: str, gen_id: str, *, since: str = "",
                   status: Status = _quiet, budget: Budget | None = None) -> State:
    """Bring one generation to a settled state (see ``generation.generate``)."""
    return executor(rt).run_generation(stage, gen_id, since, budget, status)


def run_batch(rt: Runtime, stage: str, gen_ids: list[str], *, in_flight: int, since: str = "",
              progress: Callable[[dict[str, State]], None] = lambda states: None,
              budget: Budget | None = None) -> dict[str, State]:
    """Run several generations concurrently, starting at most ``in_flight`` at once (the resource
    units the batch holds) and joining those already under way; returns each one's state.

    Each generation writes only its own files, and one generation's failure is its own: its
    batch-mates finish and their children can run. ``progress`` sees the states so far each time
    one finishes.
    """
    states: dict[str, State] = {}

    def each(gen_id: str, st: State) -> None:
        states[gen_id] = st
        progress(states)

    executor(rt).run_batch(stage, gen_ids, in_flight, since, budget, each)
    return states  # filled as each one ended


def start_ahead(rt: Runtime, members: list[dict], since: str, budget: Budget | None,
                following: Sequence[Sequence[dict]] = (), cohort: str = "") -> list[dict]:
    """The chunk's members (rows with ``stage`` and ``gen_id``, parents first) not settled for the
    run, each started ahead of its task once its parent is done (see the module's docstring).

    They are looked at ``AHEAD_SLICE`` at a time, and each slice's unsettled ones start as soon as
    it is looked at: the first calls go out while the rest of the chunk is still being looked at
    (a chunk's 2,000 take 0.2 s), not after. A member looked at after its parent was started ahead
    sees the parent as it is then: mid-way it is not done yet, so the member is not settled.

    ``following``: the chunks after this one, each one's members started behind the chunk
    before it once only ``FOLLOW_AT`` gates' worth of that one's are left, so the calls go on
    from chunk to chunk while Luigi's worker is still on an earlier chunk's tasks (it opens the
    next chunk only once no generation task is runnable) and no chunk's end leaves the provider
    idle. Handed over once per run: a chunk already followed is not again.

    ``cohort``: the cohort whose run this is, named in the status file before any call starts
    (a file showing calls in flight always says whose they are).

    Only the looking happens in a process Luigi forked for one task: it ends with its task and
    would take the calls with it.
    """
    memo: dict = {}
    if multiprocessing.parent_process() is not None:
        return unsettled(rt, members, since, memo)
    router = Router(rt)  # generations sent in batch jobs are their tasks' to submit and poll
    called = lambda r: not router.routed(r["stage"], r["gen_id"], r["llm_model_id"])  # noqa: E731
    ex = executor(rt, own_process=True)
    if cohort:
        ex.note_run(cohort, since)
    todo: list[dict] = []
    for at in range(0, len(members), AHEAD_SLICE):
        found = unsettled(rt, members[at:at + AHEAD_SLICE], since, memo)
        ex.start([_ahead(rt, r, since) for r in found if called(r)], budget)
        todo += found
    chain = []
    for chunk in following:
        first = (chunk[0]["stage"], chunk[0]["gen_id"], since) if chunk else None
        if first is None or first in ex.followed:
            continue
        ex.followed.add(first)
        later = [_ahead(rt, r, since) for r in chunk if called(r)]
        if later:
            chain.append(later)
    if chain:
        ex.follow([(r["stage"], r["gen_id"], since) for r in todo], chain, budget)
    return todo


def _ahead(rt: Runtime, row: dict, since: str) -> Ahead:
    """A membership row as the executor starts it ahead."""
    stage, model, parent = row["stage"], row["llm_model_id"], row["parent_gen_id"]
    return ((stage, row["gen_id"], since), rt.endpoint(model) if model else "",
            (PARENT_STAGE[stage], parent, since) if parent else None)
