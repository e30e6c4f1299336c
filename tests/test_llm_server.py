"""The test server's heavy-tailed latency mode: draws follow the requested lognormal, are fixed by
the request (so benchmark runs are comparable), and a real request waits its draw."""

from __future__ import annotations

import json
import math
import statistics
import time
import urllib.request

from llm_server import LLMServer, lognormal_latency


def _draws(n: int, median: float, sigma: float, seed: int = 0) -> list[float]:
    return [lognormal_latency(median, sigma, b"%d:request-%d" % (seed, i)) for i in range(n)]


def test_lognormal_draws_follow_the_requested_median_and_tail():
    draws = sorted(_draws(600, 1.0, 0.8))
    # order statistics of 600 draws: the median within ~±0.1 in log units, the 95th percentile
    # (exp(0.8 × 1.645) = 3.73 s) within ~±0.2
    assert math.exp(-0.12) < statistics.median(draws) < math.exp(0.12)
    assert math.exp(0.8 * 1.645 - 0.25) < draws[int(0.95 * len(draws))] < math.exp(0.8 * 1.645 + 0.25)
    logs = [math.log(d) for d in draws]
    assert abs(statistics.stdev(logs) - 0.8) < 0.08
    assert min(draws) > 0


def test_lognormal_draws_are_fixed_by_key_and_fixed_latency_is_the_default():
    assert _draws(50, 1.0, 0.8) == _draws(50, 1.0, 0.8)  # deterministic
    assert _draws(50, 1.0, 0.8, seed=1) != _draws(50, 1.0, 0.8)  # the seed matters
    assert _draws(5, 0.2, 0.0) == [0.2] * 5  # σ 0: fixed
    # the median scales the whole distribution
    assert [round(x * 2, 9) for x in _draws(20, 1.0, 0.8)] == [round(x, 9) for x in _draws(20, 2.0, 0.8)]
    assert LLMServer().latency_sigma == 0.0


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_a_real_request_waits_its_draw_and_a_repeat_draws_anew():
    with LLMServer(latency=0.05, latency_sigma=0.8, latency_seed=3) as server:
        body = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
        waits = []
        for _ in range(3):
            t0 = time.perf_counter()
            assert _post(server.base_url, body)["choices"][0]["message"]["content"].startswith("echo")
            waits.append(time.perf_counter() - t0)
        drawn = [r["latency_s"] for r in server.requests]
        assert len(set(drawn)) == 3  # the same body again (a retry) is another draw
        assert all(w >= d for w, d in zip(waits, drawn))
        assert math.isclose(server.latency_served, sum(drawn))
    # a second server with the same seed, sent the same requests, waits the same
    with LLMServer(latency=0.05, latency_sigma=0.8, latency_seed=3) as again:
        for _ in range(3):
            _post(again.base_url, body)
        assert [r["latency_s"] for r in again.requests] == drawn
