"""The live run view of `daydream preview`: progress per stage and model from the one state
classifier, failures with their reasons, calls in flight from live claims by the rule runs wait by
(`claims.is_live`: `[daydream] claim_timeout`, the owner's process; none before claims exist),
spend from the recorded calls; and the page in headless Chromium, refreshing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from pipeline.store import claims
from pipeline import cli, config
from pipeline.run import generation
from pipeline.run.running import cohort_status
from pipeline.sitegen import serve
from pipeline.sitegen.live import live_status
from pipeline.store import atomic_write_json
from test_site_browser import Watched, browser, deadline  # noqa: F401  (fixtures)


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="seconds")


def _claim(project, stage, gen_id, age_s: float, host: str = "h", pid: int = 1) -> None:
    now = datetime.now(timezone.utc)
    atomic_write_json(project.paths.gen_dir(stage, gen_id) / "claim.json", {
        "owner": f"{host}:{pid}:r", "host": host, "pid": pid, "run": "r",
        "started_at": _iso(now - timedelta(seconds=age_s + 5)), "heartbeat_at": _iso(now - timedelta(seconds=age_s))})


def _gone_pid() -> int:
    """The id of a process of this host that has exited."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _group(cohort: dict, stage: str, model: str) -> dict:
    return next(p for p in cohort["progress"] if p["stage"] == stage and p["llm_model_id"] == model)


def test_claim_liveness_is_the_rule_runs_wait_by(tmp_path):
    """``claims.is_live``, which the live view counts calls in flight by, is ``claims.look``'s
    verdict: the configured timeout on the heartbeat (or, unreadable, the file's age) and the
    owner's process on this host."""
    path = tmp_path / "claim.json"
    now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc).timestamp()
    assert not claims.is_live(str(path), 30, now), "no claim"
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "heartbeat_at": "2026-01-01T11:59:45.000+00:00"}))
    assert claims.is_live(str(path), 30, now)
    assert not claims.is_live(str(path), 10, now), "older than the timeout given"
    assert not claims.is_live(str(path), 30, now + 60)
    path.write_text(json.dumps({"host": claims.HOST, "pid": os.getpid(), "heartbeat_at": "2026-01-01T11:59:45Z"}))
    assert claims.is_live(str(path), 30, now), "this process holds it"
    path.write_text(json.dumps({"host": claims.HOST, "pid": _gone_pid(), "heartbeat_at": "2026-01-01T11:59:45Z"}))
    assert not claims.is_live(str(path), 30, now), "its process is gone from this host"
    path.write_text('{"owner": "being wri')   # its owner writing it: judged by the file's age
    os.utime(path, (now - 5, now - 5))
    assert claims.is_live(str(path), 30, now)
    os.utime(path, (now - 60, now - 60))
    assert not claims.is_live(str(path), 30, now)


def _failing_evals(body: dict) -> str:
    from datafactory import responder

    prompt = body["messages"][-1]["content"]
    if prompt.startswith("TASK:EVAL") and "0-9" in prompt:
        return "I cannot decide on a number.\n"
    return responder(body)


def test_live_status_before_during_and_after_a_run(project, browser):  # noqa: F811
    assert cli.main(["compile", "t1"]) == 0
    rows = project.membership()
    before = live_status(project.paths)
    (c,) = before["cohorts"]
    assert c["cohort_id"] == "t1" and c["total"] == len(rows) and c["done"] == 0 and c["in_flight"] == 0
    assert c["spend"] == [] and c["failures"] == [] and c["ledger"] is None
    drafts = [r["gen_id"] for r in project.membership("draft")]
    timeout = config.claim_timeout()
    _claim(project, "draft", drafts[0], age_s=2)                 # a live call
    _claim(project, "draft", drafts[1], age_s=timeout + 60)      # a stopped worker's
    _claim(project, "draft", drafts[2], age_s=1, host=claims.HOST, pid=_gone_pid())   # a killed one's, here
    c = live_status(project.paths)["cohorts"][0]
    assert c["in_flight"] == 1 and _group(c, "draft", "srv-a")["in_flight"] == 1
    # the configured timeout decides, as it does for runs
    cfg = config._cfg()
    if not cfg.has_section("daydream"):
        cfg.add_section("daydream")
    before = cfg.get("daydream", "claim_timeout") if cfg.has_option("daydream", "claim_timeout") else None
    cfg.set("daydream", "claim_timeout", str(timeout + 120))
    generation.forget_runtimes()
    try:
        c = live_status(project.paths)["cohorts"][0]
        assert c["in_flight"] == 2 and c["progress"] and live_status(project.paths)["claim_timeout_s"] == timeout + 120
    finally:
        if before is None:
            cfg.remove_option("daydream", "claim_timeout")
        else:
            cfg.set("daydream", "claim_timeout", before)
        generation.forget_runtimes()

    # in the browser, over the preview server: the page refreshes by itself
    server, url = serve(project.paths.site_dir / "build", live=project.paths)
    w = Watched(browser, url)
    try:
        w.goto(url + "live.html")
        sec = w.page.locator('section.live-cohort[data-cohort="t1"]')
        sec.wait_for(timeout=15000)
        assert f"0 of {len(rows)} done, 1 calls in flight" in sec.locator("h2").inner_text()
        _claim(project, "draft", drafts[1], age_s=1)   # its heartbeat comes back
        w.page.wait_for_function("document.querySelector('section.live-cohort h2').textContent.includes('2 calls in flight')",
                                 timeout=15000)
        w.goto(url)   # no site built yet: the root is the live view
        w.page.locator('section.live-cohort[data-cohort="t1"]').wait_for(timeout=15000)
        for d in drafts[:3]:
            (project.paths.gen_dir("draft", d) / "claim.json").unlink()

        project.server.responder = _failing_evals
        assert not project.run()
        st = cohort_status("t1")
        c = live_status(project.paths)["cohorts"][0]
        for stage, counts in st["stages"].items():
            got = {k: sum(p[k] for p in c["progress"] if p["stage"] == stage) for k in counts}
            assert got == dict(counts), stage
        ev = _group(c, "evaluation", "srv-b")
        assert ev["failed"] > 0 and ev["done"] > 0 and c["in_flight"] == 0
        (f,) = [f for f in c["failures"] if f["stage"] == "evaluation"]
        assert "parse" in f["reason"] or "score" in f["reason"].lower()
        assert f["n"] == ev["failed"] and len(f["examples"]) == min(3, f["n"])
        total = next(r for r in c["spend"] if r["stage"] == "(all)")
        assert total["calls"] == next(r for r in st["spend"] if r["stage"] == "(all)")["calls"] > 0
        w.goto(url + "live.html")
        sec = w.page.locator('section.live-cohort[data-cohort="t1"]')
        # live.json is recomputed at most every 2 s: the page catches up by itself
        w.page.wait_for_function("t => (document.querySelector('section.live-cohort h2') || {}).textContent === t",
                                 arg=f"Cohort t1: {c['done']} of {c['total']} done, 0 calls in flight", timeout=15000)
        text = sec.inner_text()
        assert f["reason"][:40] in text and "Spend so far" in text and "srv-b" in text
        assert not w.errors, w.errors
        body = json.loads(w.page.evaluate("fetch('live.json').then(r => r.text())"))
        assert body["cohorts"][0]["done"] == c["done"]

        # a poll rereads only the recorded calls replaced since the last: a call written again counts anew
        read = {}
        assert live_status(project.paths, read=read)["cohorts"][0]["spend"] == c["spend"]
        f = next(f for r in project.membership("evaluation")
                 if (f := project.paths.gen_file("evaluation", r["gen_id"], "raw_metadata.json")).is_file())
        md = json.loads(f.read_text())
        md["prompt_tokens"] = (md.get("prompt_tokens") or 0) + 1000
        atomic_write_json(f, md)
        again = live_status(project.paths, read=read)["cohorts"][0]["spend"]

        def tokens(rows):
            return next(r for r in rows if r["stage"] == "(all)")["prompt_tokens"]
        assert tokens(again) == tokens(c["spend"]) + 1000
    finally:
        w.close()
        server.shutdown()
        server.server_close()


def test_live_json_waits_longer_the_longer_it_takes(project, monkeypatch):
    """The preview server recomputes live.json at most every CACHE_S, and no sooner than its last
    computation's time over BUSY_SHARE after it: a big store's view does not take a core from the
    run it watches."""
    from pipeline.sitegen import live

    assert cli.main(["compile", "t1"]) == 0
    drafts = [r["gen_id"] for r in project.membership("draft")]
    cache = live.LiveCache(project.paths)
    first = json.loads(cache.body())
    assert first["cohorts"][0]["in_flight"] == 0 and cache._took == 0.0, "the cold first computation sets no wait"
    _claim(project, "draft", drafts[0], age_s=1)
    monkeypatch.setattr(live, "CACHE_S", 0.0)
    cache._took = 10.0   # as if computing it again had taken 10 s: not again for 50 s
    assert json.loads(cache.body()) == first
    cache._took = 0.0
    assert json.loads(cache.body())["cohorts"][0]["in_flight"] == 1
    assert cache._took > 0, "a warm computation sets the wait"
