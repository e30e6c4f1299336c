"""The live run view: what ``daydream preview`` serves at ``live.html`` during a run.

``live.json`` is computed from the store on each request (at most once per ``CACHE_S``), for
every compiled cohort: generations per stage and model in each state (the one state classifier,
``generation.state_of``), failures with their reasons, calls in flight, the provider batch jobs
holding its generations and what waits on them, and the spend of the recorded calls
(``spend.spend_rows`` over ``raw_metadata.json``, as ``daydream status``) with the spend ledger
of a capped run.

A call is in flight when its generation is not done and has a live claim
(``data/gens/<stage>/<gen_id>/claim.json``): ``claims.is_live``, the rule runs wait by (a heartbeat
within ``[daydream] claim_timeout``, its process not gone from this host); a store written before
claims existed simply has none.
``live_page()`` is a static page that polls ``live.json`` (served over HTTP only, so fetch works).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import datetime, timezone

from pipeline.store.claims import CLAIM, is_live
from pipeline.store import DataPaths, STAGES

CACHE_S = 2.0            # live.json is recomputed at most this often
BUSY_SHARE = 0.2         # and with at most this share of a core: a store of 100,000 generations takes seconds
REFRESH_S = 3            # the page polls this often
FAILURE_EXAMPLES = 3     # gen_ids listed per failure reason
COPY = "(copy)"          # the "model" of a copy-mode generation: no call


def cohort_live(paths: DataPaths, cohort_id: str, now: float, read: dict | None = None) -> dict:
    """One cohort's progress per stage and model, failures, calls in flight and spend (``read``:
    the recorded calls read by earlier polls, see ``run_plan.call_records``)."""
    from pipeline.run.generation import runtime, state_of
    from pipeline.store.ledger import read_ledger
    from pipeline.run.run_plan import budget_line, call_records, membership
    from pipeline.store.spend import catalog_prices, spend_rows
    from pipeline.store.state import DONE, FAILED, KINDS

    rows = membership(paths, cohort_id)
    rt, memo = runtime(paths), {}
    timeout = rt.claim_timeout()
    groups: dict[tuple[str, str], Counter] = {}
    reasons: dict[tuple[str, str, str], list[str]] = {}
    for r in rows:
        stage, gid = r["stage"], r["gen_id"]
        model = r.get("llm_model_id") or COPY
        st = state_of(rt, stage, gid, memo)
        c = groups.get((stage, model))
        if c is None:   # not setdefault: a Counter made per generation is a quarter of a poll
            c = groups[(stage, model)] = Counter({k: 0 for k in KINDS})
        c[st.kind] += 1
        c["total"] += 1
        if st.kind == FAILED:
            reasons.setdefault((stage, model, str(st.reason or "unknown").split("\n")[0][:200]), []).append(gid)
        elif st.kind != DONE and is_live(f"{paths.gen_dir(stage, gid)}/{CLAIM}", timeout, now):
            c["in_flight"] += 1
    order = {s: i for i, s in enumerate(STAGES)}
    progress = [dict({k: c.get(k, 0) for k in (*KINDS, "in_flight", "total")}, stage=s, llm_model_id=m)
                for (s, m), c in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1]))]
    failures = [{"stage": s, "llm_model_id": m, "reason": why, "n": len(ids), "examples": ids[:FAILURE_EXAMPLES]}
                for (s, m, why), ids in sorted(reasons.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    calls = call_records(paths, rows, catalog_prices(rt.catalog), {} if read is None else read)
    spend = spend_rows(calls)
    book = read_ledger(paths, cohort_id)   # a capped run's spend ledger, in words
    return {"cohort_id": cohort_id, "total": len(rows), "progress": progress, "failures": failures, "spend": spend,
            "batch_jobs": batch_jobs(paths, rows), "ledger": budget_line(book) if book else None,
            "in_flight": sum(p["in_flight"] for p in progress), "done": sum(p["done"] for p in progress)}


def batch_jobs(paths: DataPaths, rows: list[dict]) -> list[dict]:
    """The provider batch jobs holding the cohort's generations, as ``daydream status`` lists
    them (``batch_jobs.cohort_jobs``: live ones, then the last collected)."""
    from pipeline.run.batch_jobs import cohort_jobs

    out = []
    for job, held, downstream in cohort_jobs(paths, rows):
        counts = job.get("request_counts") or {}
        out.append({"job": job.get("batch_id") or job["key"], "stage": job["stage"], "endpoint": job["endpoint"],
                    "status": job.get("status") or "being submitted", "collected": bool(job.get("collected")),
                    "completed": counts.get("completed", 0), "total": counts.get("total", len(job["gen_ids"])),
                    "failed": counts.get("failed", 0), "waiting": 0 if job.get("collected") else held,
                    "after": 0 if job.get("collected") else downstream})
    return out


def live_status(paths: DataPaths, now: float | None = None, read: dict | None = None) -> dict:
    """Every compiled cohort's ``cohort_live``; ``read``: the recorded calls read by earlier
    polls, per cohort (filled in)."""
    from pipeline.run.generation import runtime

    now = time.time() if now is None else now
    read = {} if read is None else read
    return {"generated_at": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
            "claim_timeout_s": runtime(paths).claim_timeout(), "refresh_s": REFRESH_S,
            "cohorts": [cohort_live(paths, c, now, read.setdefault(c, {})) for c in paths.compiled_cohorts()]}


class LiveCache:
    """``live.json`` for a preview server: recomputed at most every ``CACHE_S`` seconds, and no
    sooner than the last computation's time over ``BUSY_SHARE`` after it (so polling a big
    store does not take a core from the run it watches; the page shows when it was computed;
    the first, cold computation sets no wait),
    one request at a time (the classifier's caches are not shared between threads)."""

    def __init__(self, paths: DataPaths):
        self.paths, self._lock = paths, threading.Lock()
        self._at, self._took, self._body = 0.0, 0.0, b""
        self._read: dict = {}   # the recorded calls read so far, per cohort

    def body(self) -> bytes:
        with self._lock:
            if not self._body or time.monotonic() - self._at > max(CACHE_S, self._took / BUSY_SHARE):
                t0 = time.monotonic()
                try:
                    obj = live_status(self.paths, read=self._read)
                except Exception as exc:  # noqa: BLE001 (the page shows why instead of going blank)
                    obj = {"error": f"{type(exc).__name__}: {exc}", "cohorts": []}
                # the first computation reads every generation's files (the classifier's caches
                # are cold) and sets no wait; later ones cost what each poll will
                self._took = time.monotonic() - t0 if self._body else 0.0
                self._body = json.dumps(obj, default=str).encode("utf-8")
                self._at = time.monotonic()
            return self._body


def live_page() -> str:
    """The live view's page, self-contained (a first run has no built site and no assets yet):
    a script that polls live.json."""
    return LIVE_HTML.replace("REFRESH_MS", str(REFRESH_S * 1000))


LIVE_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Live run view · daydream</title>
<link rel="icon" href="data:,">
<style>
body { font-family: Lato, "Helvetica Neue", Arial, sans-serif; color: #1f2937; margin: 1.5em 2em; }
table { border-collapse: collapse; margin: .4em 0 1.2em; font-size: .92em; }
th, td { border-bottom: 1px solid #e5e7eb; padding: .25em .7em; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.bar { display: inline-block; width: 8em; height: .7em; background: #e5e7eb; border-radius: 3px; overflow: hidden; vertical-align: middle; }
.bar span { display: block; height: 100%; background: #2563eb; }
.meta { color: #6b7280; }
.bad { color: #b91c1c; }
</style></head>
<body>
<h1>Live run view</h1>
<p class="meta" id="live-status" role="status">Loading…</p>
<p class="meta"><a href="index.html">The report site</a> (rebuilt when a run ends)</p>
<div id="live"></div>
<script>
(function () {
  "use strict";
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }
  function usd(x) { return x == null ? "unknown" : "$" + Number(x).toFixed(x < 1 ? 4 : 2); }
  function table(heads, rows, nums) {
    var t = el("table"), tr = el("tr");
    heads.forEach(function (h, i) { tr.appendChild(el("th", nums[i] ? { "class": "num" } : {}, h)); });
    var thead = el("thead"); thead.appendChild(tr); t.appendChild(thead);
    var tb = el("tbody");
    rows.forEach(function (r) {
      var row = el("tr");
      r.forEach(function (v, i) {
        var td = el("td", nums[i] ? { "class": "num" } : {});
        if (v instanceof Node) td.appendChild(v); else td.textContent = v;
        row.appendChild(td);
      });
      tb.appendChild(row);
    });
    t.appendChild(tb);
    return t;
  }
  function bar(done, total) {
    var b = el("span", { "class": "bar", title: done + " of " + total + " done" }), s = el("span");
    s.style.width = (total ? 100 * done / total : 0) + "%";
    b.appendChild(s);
    return b;
  }
  function draw(st) {
    var root = document.getElementById("live");
    root.textContent = "";
    if (st.error) root.appendChild(el("p", { "class": "bad" }, "The store could not be read: " + st.error));
    if (!st.cohorts.length) root.appendChild(el("p", { "class": "meta" }, "No compiled cohort yet."));
    st.cohorts.forEach(function (c) {
      var sec = el("section", { "class": "live-cohort", "data-cohort": c.cohort_id });
      sec.appendChild(el("h2", {}, "Cohort " + c.cohort_id + ": " + c.done + " of " + c.total + " done, " + c.in_flight + " calls in flight"));
      sec.appendChild(el("h3", {}, "Progress per stage and model"));
      sec.appendChild(table(["stage", "model", "progress", "done", "in flight", "pending", "failed", "stale", "blocked", "total"],
        c.progress.map(function (p) { return [p.stage, p.llm_model_id, bar(p.done, p.total), p.done, p.in_flight, p.pending - p.in_flight, p.failed, p.stale, p.blocked, p.total]; }),
        [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]));
      sec.appendChild(el("h3", {}, "Failures"));
      if (!c.failures.length) sec.appendChild(el("p", { "class": "meta" }, "None so far."));
      else sec.appendChild(table(["stage", "model", "reason", "n", "for example"],
        c.failures.map(function (f) { return [f.stage, f.llm_model_id, f.reason, f.n, f.examples.join(", ")]; }), [0, 0, 0, 1, 0]));
      sec.appendChild(el("h3", {}, "Spend so far"));
      if (!c.spend.length) sec.appendChild(el("p", { "class": "meta" }, "No model calls recorded yet."));
      else sec.appendChild(table(["stage", "model", "calls", "prompt tokens", "completion tokens", "cost", "calls of unknown cost"],
        c.spend.map(function (r) { return [r.stage, r.llm_model_id, r.calls, r.prompt_tokens, r.completion_tokens, usd(r.cost_usd), r.n_cost_unknown]; }),
        [0, 0, 1, 1, 1, 1, 1]));
      if (c.batch_jobs.length) {
        sec.appendChild(el("h3", {}, "Provider batch jobs"));
        sec.appendChild(table(["job", "stage", "provider", "status", "done", "failed", "waiting on it", "after them"],
          c.batch_jobs.map(function (j) { return [j.job, j.stage, j.endpoint, j.status + (j.collected ? ", collected" : ""), j.completed + "/" + j.total, j.failed, j.waiting, j.after]; }),
          [0, 0, 0, 0, 1, 1, 1, 1]));
      }
      if (c.ledger) sec.appendChild(el("p", { "class": "meta live-ledger" }, "Spend ledger (runs under a cap): " + c.ledger));
      root.appendChild(sec);
    });
  }
  function tick() {
    fetch("live.json", { cache: "no-store" }).then(function (r) { return r.json(); }).then(function (st) {
      draw(st);
      document.getElementById("live-status").textContent = "Updated " + st.generated_at + "; refreshes every " + st.refresh_s + " s.";
    }).catch(function (e) {
      document.getElementById("live-status").textContent = "The preview server did not answer (" + e + "); retrying.";
    }).then(function () { window.setTimeout(tick, REFRESH_MS); });
  }
  tick();
})();
</script>
</body></html>
"""
