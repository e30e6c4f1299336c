"""Where generations run in a process: one event loop on a background thread, each generation
started once, and a chunk's members started ahead of their tasks.

A Luigi worker that runs its tasks itself (``--workers 1``, the ``luigi`` command's default)
runs them one after another on its own thread, and between two tasks it does its bookkeeping
(the batch's completion, the next ``get_work``, the next task objects, opening the next chunk)
with no call of its own in flight: 85 % of the ideal throughput at 16 calls in flight, 60 % at
64 (``bench/README.md``). So the calls run on this module's loop, on its own thread, and an
opened chunk starts its members here at once (``start_ahead``), at most as many calls at a time
as one of its provider's tasks may hold (``config.calls_per_task``). A generation task then
joins its generation already under way and starts only those that are not; Luigi still
schedules every generation as its own task, shows its status and checks its completeness, and a
generation finished ahead is complete when its task comes up.

The chunk decides whether to start ahead (``RunCohort.ahead``: only under the local scheduler,
where this process runs every task it adds). Here it is also skipped in a process Luigi forked
for one task (``--workers`` > 1: the process ends with its task and would take the calls with
it) and for calls that answer in under ``AHEAD_MIN_LATENCY_S``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from . import config
from .generation import Runtime, generate, metadata, run_state
from .ledger import Budget
from .state import DONE, State
from .store import PARENT_STAGE

Key = tuple[str, str, str]  # stage, gen_id, the run's since
# Calls faster than this gain nothing from being started ahead: no wait to hide, only the two
# threads taking turns (measured with an instant server: 3.24 ms per generation against 2.79)
AHEAD_MIN_LATENCY_S = 0.1
FOLLOW_AT = 2  # gates' worth of a chunk's members left when the next chunk's are started
FOLLOW_POLL_S = 0.05


@dataclass
class Executor:
    """One per process and data root: its loop, and the generations running on it."""

    rt: Runtime
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    running: dict[Key, asyncio.Future] = field(default_factory=dict)
    waiting: dict[Key, asyncio.Future] = field(default_factory=dict)  # started ahead, not yet running
    claimed: set[Key] = field(default_factory=set)  # started ahead and not finished (any thread reads it)
    gates: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    # endpoint -> seconds its recent generations took; the shortest is the least delayed by
    # the loop's other work, so it says how long the calls themselves take
    durations: dict[str, deque] = field(default_factory=dict)

    def __post_init__(self):
        self.pid = os.getpid()
        threading.Thread(target=self.loop.run_forever, name="daydream-executor", daemon=True).start()

    def run(self, coro):
        """Run ``coro`` on the executor's loop; wait for it on this thread."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # interrupted: do not leave the batch running behind the caller
            raise

    def close(self) -> None:
        """Close the providers' connections and stop the loop's thread; whatever is under way is
        dropped (the store has what finished)."""
        if os.getpid() != self.pid or not self.loop.is_running():
            return

        async def close_providers() -> None:
            await asyncio.gather(*(p.aclose() for p in self.rt.providers_here()), return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(close_providers(), self.loop).result(timeout=10)
        except concurrent.futures.TimeoutError:
            pass  # a loop stuck in a call: stopped all the same, its connections go with the process
        self.loop.call_soon_threadsafe(self.loop.stop)

    # Everything below runs on the executor's loop.

    def generation(self, stage: str, gen_id: str, since: str, budget: Budget | None,
                   status: Callable[[str], None] = lambda m: None, *, look: bool = True) -> asyncio.Future | State:
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
                      status: Callable[[str], None] = lambda m: None) -> State:
        """The state ``generation`` gives, once the run under way (if any) has ended."""
        started = self.generation(stage, gen_id, since, budget, status)
        return await started if isinstance(started, asyncio.Future) else started

    async def _generate(self, stage: str, gen_id: str, since: str, budget: Budget | None,
                        status: Callable[[str], None]) -> State:
        endpoint, started = self._endpoint(stage, gen_id), time.perf_counter()
        st = await generate(self.rt, stage, gen_id, status, budget)
        if endpoint:
            self.durations.setdefault(endpoint, deque(maxlen=32)).append(time.perf_counter() - started)
        if since and st.settled(since):
            self.rt.settled[(stage, gen_id, since)] = st  # what its task and chunk then ask
        return st

    def _finished(self, key: Key, future: asyncio.Future) -> None:
        # the store records the outcome: only a generation under way is kept here
        self.running.pop(key, None)
        if not future.cancelled():
            future.exception()  # whoever awaits it still gets it; nobody else need to

    async def ahead(self, stage: str, gen_id: str, since: str, budget: Budget | None) -> None:
        """Start a generation once its parent, if started ahead too, has settled: at most a gate's
        worth at once; nothing when its task or the budget got there first."""
        key, endpoint = (stage, gen_id, since), self._endpoint(stage, gen_id)
        if self._quick(endpoint):
            return
        parent_id = metadata(self.rt, stage, gen_id).get("parent_gen_id") if stage != "draft" else None
        if parent_id:
            pkey = (PARENT_STAGE[stage], parent_id, since)
            for under_way in (self.waiting, self.running):  # its task may have started it instead
                if pkey in under_way:
                    await asyncio.wait([under_way[pkey]])
            if run_state(self.rt, PARENT_STAGE[stage], parent_id, since).kind != DONE:
                return  # failed or blocked: its task records that
        async with self._gate(endpoint):
            if key in self.running or budget is not None and budget.reached() or self._quick(endpoint):
                return
            # found unsettled by its chunk (``generate`` looks again: the next chunk's are not)
            started = self.generation(stage, gen_id, since, budget, look=False)
            if isinstance(started, asyncio.Future):
                await asyncio.wait([started])  # its error, if any, is its task's to raise

    def start_all(self, keys: list[Key], budget: Budget | None) -> None:
        """Start ``keys`` ahead (registered together, so a child finds its parent)."""
        def finished(key: Key) -> None:
            self.waiting.pop(key, None)
            self.claimed.discard(key)

        for key in keys:
            if key in self.running and key not in self.waiting:  # its task started it: claimed until it ends
                self.running[key].add_done_callback(lambda _, key=key: self.claimed.discard(key))
            elif key not in self.waiting:
                self.waiting[key] = asyncio.ensure_future(self.ahead(*key, budget))
                self.waiting[key].add_done_callback(lambda _, key=key: finished(key))

    def _quick(self, endpoint: str) -> bool:
        """Its calls answer too fast to gain from being started ahead (``AHEAD_MIN_LATENCY_S``)."""
        return min(self.durations.get(endpoint) or [AHEAD_MIN_LATENCY_S]) < AHEAD_MIN_LATENCY_S

    def _endpoint(self, stage: str, gen_id: str) -> str:
        model = metadata(self.rt, stage, gen_id).get("llm_model_id")
        return self.rt.endpoint(model) if model else ""  # "": copy mode, no call

    def _gate(self, endpoint: str) -> asyncio.Semaphore:
        gate = self.gates.get(endpoint)
        if gate is None:
            gate = self.gates[endpoint] = asyncio.Semaphore(self._width(endpoint))
        return gate

    def _width(self, endpoint: str) -> int:
        """How many of an endpoint's generations its gate lets run at once."""
        return self.rt.calls_per_task(endpoint) if endpoint else config.COPY_BATCH

    def widest_gate(self) -> int:
        return max(map(self._width, self.gates), default=config.COPY_BATCH)


def executor(rt: Runtime) -> Executor:
    """This process's executor for ``rt`` (a forked worker process builds its own)."""
    key = os.getpid()
    ex = rt.executors.get(key)
    if ex is None:
        with rt.lock():
            ex = rt.executors.get(key) or rt.executors.setdefault(key, Executor(rt))
    return ex


def under_way(rt: Runtime, stage: str, gen_id: str, since: str) -> bool:
    """Started ahead or running in this process for the run ``since``, so not settled: nothing to
    look at in the store (a chunk's 2,000 members are asked about as it opens)."""
    ex = rt.executors.get(os.getpid())
    key = (stage, gen_id, since)
    if ex is None or key in rt.settled:  # settled before its future resolves or its ahead slot ends
        return False
    return key in ex.claimed or key in ex.running


def settled_for_run(rt: Runtime, stage: str, gen_id: str, since: str, memo: dict | None = None) -> bool:
    """Settled for the run ``since`` (``State.settled``); one under way here is not, unlooked at."""
    return not under_way(rt, stage, gen_id, since) and run_state(rt, stage, gen_id, since, memo).settled(since)


def run_generation(rt: Runtime, stage: str, gen_id: str, *, since: str = "",
                   status: Callable[[str], None] = lambda m: None, budget: Budget | None = None) -> State:
    """Bring one generation to a settled state (see ``generation.generate``)."""
    ex = executor(rt)
    return ex.run(ex.outcome(stage, gen_id, since, budget, status))


def run_batch(rt: Runtime, stage: str, gen_ids: list[str], *, in_flight: int, since: str = "",
              progress: Callable[[dict[str, State]], None] = lambda states: None,
              budget: Budget | None = None) -> dict[str, State]:
    """Run several generations concurrently, starting at most ``in_flight`` at once (the resource
    units the batch holds) and joining those already under way; returns each one's state.

    Each generation writes only its own files, and one generation's failure is its own: its
    batch-mates finish and their children can run. ``progress`` sees the states so far each time
    one finishes.
    """
    ex = executor(rt)

    async def batch() -> dict[str, State]:
        states: dict[str, State] = {}
        slots = asyncio.Semaphore(max(1, in_flight))

        async def one(gen_id: str) -> None:
            under_way = ex.running.get((stage, gen_id, since))
            if under_way is not None:
                states[gen_id] = await under_way
            else:
                async with slots:
                    states[gen_id] = await ex.outcome(stage, gen_id, since, budget)
            progress(states)

        # every generation ends before an error is raised: none is left half-way on the loop
        errors = [e for e in await asyncio.gather(*(one(g) for g in gen_ids), return_exceptions=True) if e]
        if errors:
            raise errors[0]
        return states

    return ex.run(batch())


def start_ahead(rt: Runtime, members: Iterable[dict], since: str, budget: Budget | None,
                following: Iterable[dict] = ()) -> None:
    """Start a chunk's unsettled members (rows with ``stage`` and ``gen_id``, parents first) ahead
    of their tasks, each once its parent is done; returns at once (see the module's docstring).

    ``following``: the next chunk's members, started behind these once only ``FOLLOW_AT`` gates'
    worth of them are left, so the calls do not stop while this chunk's last ones finish and
    the next chunk opens (measured: 0.8 s with no call in flight at each chunk's end).
    """
    if multiprocessing.parent_process() is not None:
        return
    ex = executor(rt)
    keys = [(r["stage"], r["gen_id"], since) for r in members]
    later = [(r["stage"], r["gen_id"], since) for r in following]
    ex.claimed.update(keys)  # before returning: the caller's next look at them finds them under way

    async def start() -> None:
        ex.start_all(keys, budget)
        if later:
            while sum(key in ex.waiting for key in keys) > FOLLOW_AT * ex.widest_gate():
                await asyncio.sleep(FOLLOW_POLL_S)
            ex.claimed.update(later)  # the next chunk, opened from now on, finds them under way
            ex.start_all(later, budget)

    asyncio.run_coroutine_threadsafe(start(), ex.loop)
