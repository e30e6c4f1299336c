"""The provider the pipeline calls: any registered model API, with the in-flight limit and retries.

Retries live here and nowhere else, so every model API gets the same policy: only ``Transient``
failures are retried, with the server's Retry-After if it gave one, else exponential backoff with
full jitter, both capped; a final error (bad key, bad request) fails at once instead of burning
the retry budget.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import time
import weakref
from typing import Awaitable, Callable

from pipeline.errors import DaydreamError
from pipeline.llm.base import Completion, CompletionRequest, ModelAPI, ProviderSettings, Transient

log = logging.getLogger("pipeline.llm")


class Provider:
    """``await generate(request)``: at most ``settings.concurrency`` attempts in flight per event
    loop (one loop per process runs the batches); ``on_attempt(attempt, max_attempts)`` is told
    before each try, so a task can show "attempt 2/5" in the visualiser while a call retries."""

    def __init__(self, api: ModelAPI, settings: ProviderSettings, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.api = api
        self.name = settings.name
        self.settings = settings
        self._sleep = sleep  # injectable only so tests can record waits
        self._random = random.Random()
        # an asyncio.Semaphore belongs to the loop it is first used on
        self._slots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # What a run's status file shows (``pipeline/run/run_status.py``): the attempts in flight in
        # this process (id -> when it got its slot, monotonic) and those waiting for a slot.
        self.in_flight: dict[int, float] = {}
        self.waiting = 0
        self._attempt_ids = itertools.count()

    def __repr__(self) -> str:
        return f"Provider({self.api!r})"

    async def generate(self, request: CompletionRequest,
                       on_attempt: Callable[[int, int], None] | None = None) -> Completion:
        started = time.monotonic()
        attempts_max = max(1, self.settings.max_attempts)
        for attempt in range(1, attempts_max + 1):
            if on_attempt:
                on_attempt(attempt, attempts_max)
            try:
                completion = await self._attempt(request)
                return dataclasses.replace(completion, attempts=attempt, duration_s=time.monotonic() - started)
            except Transient as failure:
                reason, retry_after = failure.reason, failure.retry_after
            if attempt < attempts_max:
                wait = self._backoff(attempt, retry_after)
                log.warning(
                    "provider %s model %s: attempt %d/%d failed (%s); retrying in %.2fs",
                    self.name, request.model_slug, attempt, attempts_max, reason, wait,
                )
                await self._sleep(wait)
        # Raised outside any ``except``: no chained SDK exception (which may quote the key) survives.
        raise DaydreamError(
            "llm",
            f"provider '{self.name}' for model '{request.model_slug}' gave up after {attempts_max} attempts: "
            f"last error {reason}",
        )

    async def aclose(self) -> None:
        """Close this loop's connections (``ModelAPI.aclose``)."""
        await self.api.aclose()

    async def _attempt(self, request: CompletionRequest) -> Completion:
        """One attempt in one of this loop's slots, counted while it waits for the slot and while
        it holds it (``waiting``, ``in_flight``)."""
        slots = self._slots_of_this_loop()
        self.waiting += 1
        try:
            await slots.acquire()
        finally:
            self.waiting -= 1
        attempt = next(self._attempt_ids)
        self.in_flight[attempt] = time.monotonic()
        try:
            return await self.api.generate(request)
        finally:
            del self.in_flight[attempt]
            slots.release()

    def calls(self, now: float) -> dict:
        """Its attempts in flight in this process, those waiting for a slot, and how long the
        oldest one in flight has been (seconds; None when none is)."""
        oldest = min(self.in_flight.values(), default=None)
        return {"in_flight": len(self.in_flight), "waiting": self.waiting, "concurrency": self.settings.concurrency,
                "oldest_call_s": None if oldest is None else round(now - oldest, 3)}

    def _slots_of_this_loop(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(max(1, self.settings.concurrency))
        return slots

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Server's Retry-After if given, else exponential backoff with full jitter; both capped."""
        cap = self.settings.backoff_max_s
        if retry_after is not None:
            return min(cap, retry_after)
        return self._random.uniform(0, min(cap, self.settings.backoff_base_s * 2 ** (attempt - 1)))
