"""The live run view of `daydream preview`: progress per stage and model from the one state
classifier, failures with their reasons, calls in flight from live claim files (none before
claims exist), spend from the recorded calls; and the page in headless Chromium, refreshing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from pipeline import cli
from pipeline.run.running import cohort_status
from pipeline.sitegen import serve
from pipeline.sitegen.live import LIVE_CLAIM_S, claim_is_live, live_status
from pipeline.store import atomic_write_json
from test_site_browser import Watched, browser, deadline  # noqa: F401  (fixtures)


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="seconds")


def _claim(project, stage, gen_id, age_s: float) -> None:
    now = datetime.now(timezone.utc)
    atomic_write_json(project.paths.gen_dir(stage, gen_id) / "claim.json", {
        "owner": "w1", "host": "h", "pid": 1, "run": "r", "started_at": _iso(now - timedelta(seconds=age_s + 5)),
        "heartbeat_at": _iso(now - timedelta(seconds=age_s))})


def _group(cohort: dict, stage: str, model: str) -> dict:
    return next(p for p in cohort["progress"] if p["stage"] == stage and p["llm_model_id"] == model)


def test_claim_liveness():
    now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    assert claim_is_live({"heartbeat_at": "2026-01-01T11:59:45Z"}, now.timestamp())
    assert not claim_is_live({"heartbeat_at": _iso(now - timedelta(seconds=LIVE_CLAIM_S + 1))}, now.timestamp())
    assert not claim_is_live({"heartbeat_at": "garbage"}, now.timestamp())
    assert not claim_is_live(None, now.timestamp()) and not claim_is_live({}, now.timestamp())


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
    _claim(project, "draft", drafts[0], age_s=2)                 # a live call
    _claim(project, "draft", drafts[1], age_s=LIVE_CLAIM_S + 60)  # a dead worker's
    c = live_status(project.paths)["cohorts"][0]
    assert c["in_flight"] == 1 and _group(c, "draft", "srv-a")["in_flight"] == 1

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
        for d in drafts[:2]:
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
    finally:
        w.close()
        server.shutdown()
        server.server_close()
