"""What a runner with no overhead at all would make of a benchmark's workload: the yardstick
``bench/cohort.py`` sets beside each measured ``busy``.

Every call starts the instant a slot is free and its parent has answered, first come first
served (the order the executor's gates keep), with latencies drawn from the test server's
distribution (lognormal: median, σ of its log; σ 0 is fixed). What is left of the slots is the
workload's own: at the end fewer calls are left than slots, and with heavy-tailed latency a
lineage's last calls wait on its slow first ones. So a measured ``busy`` is read against this,
not against 100 %.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics


def busy(counts: dict, concurrency: int, median: float, sigma: float, seed: int) -> float:
    """One draw: the share of ``concurrency`` slots in use from the first call to the last answer.
    ``counts``: calls per stage (``draft``, and ``essay`` and ``evaluation`` when the workload
    has them, each an even fan-out of the stage before)."""
    rng = random.Random(seed)
    stages = [n for n in (counts.get("draft", 0), counts.get("essay", 0), counts.get("evaluation", 0)) if n]
    fanout = [stages[i + 1] // stages[i] for i in range(len(stages) - 1)]
    queue: list[tuple[int, int]] = [(0, i) for i in range(stages[0])]  # (stage, index), FIFO
    head, running, now, served = 0, [], 0.0, 0.0
    while head < len(queue) or running:
        while head < len(queue) and len(running) < concurrency:
            latency = median * math.exp(rng.gauss(0.0, sigma)) if sigma else median
            served += latency
            heapq.heappush(running, (now + latency, queue[head]))
            head += 1
        now, (stage, index) = heapq.heappop(running)
        if stage < len(fanout):
            queue += [(stage + 1, index * fanout[stage] + k) for k in range(fanout[stage])]
    return served / (concurrency * now)


def ideal_busy(counts: dict, concurrency: int, median: float, sigma: float, seeds: int = 20) -> dict:
    """``busy`` over ``seeds`` draws (one suffices for fixed latency): mean, lowest, highest."""
    draws = [busy(counts, concurrency, median, sigma, seed) for seed in range(seeds if sigma else 1)]
    return {"mean": round(statistics.fmean(draws), 3), "low": round(min(draws), 3), "high": round(max(draws), 3)}
