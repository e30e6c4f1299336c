"""Spend control against the real test server over HTTP: the estimate before a run, the cost of
every call (reported, estimated or unknown), and the spend cap, in one process and across
``--workers 4`` worker processes; plus the ledger's arithmetic and its lock."""

from __future__ import annotations

import asyncio

import json
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from datafactory import SPEC

from pipeline.store import spend
from conftest import server_cfg

REPO = Path(__file__).resolve().parents[1]
BIG_SPEC = SPEC.replace("  evaluation_llm: [srv-b]\n", "  evaluation_llm: [srv-b]\n  evaluation_replicate: 4\n")
N_BIG_LLM = 3 + 3 + 48  # drafts, llm essays, evaluations (the copy essays call nothing)
PRICES = {"test/model-a": (1.0, 2.0), "test/model-b": (2.0, 4.0)}  # USD per million tokens, as in the catalog
MARKUP = 1.05  # what the provider charges over the catalog prices: its reported cost differs
MODELS = ("id,model,provider,display_name,temperature,max_tokens,input_price_per_mtok,output_price_per_mtok\n"
          "srv-a,test/model-a,testsrv,Model A,,64,1.0,2.0\n"
          "srv-b,test/model-b,testsrv,Model B,0.1,64,2.0,4.0\n"
          "sim-a,offline/sim-a,offline,Sim A (simulated),,,,\n")
TIMEOUT = 180


def provider_cost(body: dict, usage: dict) -> float:
    pin, pout = PRICES[body["model"]]
    return MARKUP * (usage["prompt_tokens"] * pin + usage["completion_tokens"] * pout) / 1e6


def server_spend(server) -> float:
    """What the provider billed: the cost of every completion it answered."""
    return sum(r["usage"]["cost"] for r in server.requests if "usage" in r)


def completions(server) -> list[dict]:
    return [r for r in server.requests if r["path"].endswith("/chat/completions")]


@pytest.fixture
def priced(project, tmp_path):
    """The test project with every server model priced and its output bounded (max_tokens 64),
    a provider that reports its own cost, a small concurrency and a config file for subprocesses."""
    (project.root / "1_raw" / "llm_models.csv").write_text(MODELS)
    (project.root / "cohorts" / "t1" / "spec" / "config.yaml").write_text(BIG_SPEC)
    project.server.cost = provider_cost
    project.server.latency = 0.05  # calls overlap, so reservations are in flight together
    cfg = server_cfg(tmp_path / "srv.cfg", project.server, {"batch_size": 2, "chunk_size": 10},
                     timeout=5, max_attempts=2, backoff_base=0.05, backoff_max=0.2)
    project.cfg = cfg
    return project


def warm_up(project) -> None:
    """Run a small other cohort (other replicates of the same drafts, essays and evaluations) so
    the models have a history: the estimate then expects what they really produce, not max_tokens."""
    spec = project.root / "cohorts" / "warm" / "spec"
    spec.mkdir(parents=True)
    (spec / "config.yaml").write_text(SPEC.replace("  draft_llm: [srv-a]\n", "  draft_llm: [srv-a]\n  draft_replicate: [2]\n"))
    r = daydream(project, "run", "warm")
    assert r.returncode == 0, r.stderr[-3000:]
    project.server.reset()


def env_for(project) -> dict:
    return dict(os.environ, DAYDREAM_DATA_ROOT=str(project.root), LUIGI_CONFIG_PATH=str(project.cfg))


def daydream(project, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, env=env_for(project),
                          capture_output=True, text=True, timeout=TIMEOUT)


def luigi(project, *args, workers: int = 4) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "luigi", "--module", "pipeline.tasks", "RunCohort", "--cohort-id", "t1",
           "--local-scheduler", "--no-lock", "--workers", str(workers), *args]  # others may run the same command
    return subprocess.run(cmd, cwd=REPO, env=env_for(project), capture_output=True, text=True, timeout=TIMEOUT)


def estimate(project, cohort="t1") -> dict:
    r = daydream(project, "estimate", cohort, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["rows"][-1]


def ledger(project) -> dict:
    return json.loads((project.root / "cohorts" / "t1" / "spend.json").read_text())


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, r.stderr
    for n in needles:
        assert n in errors[0], errors[0]


# -- the cap ------------------------------------------------------------------------------------------


def assert_stopped_within(project, cap: float) -> None:
    """The run stopped at ``cap``: the provider billed no more than it, some calls were made and
    some not, nothing failed, and the ledger agrees with the provider to the cent's fraction."""
    billed = server_spend(project.server)
    assert 0 < billed <= cap + 1e-12
    assert 0 < len(completions(project.server)) < N_BIG_LLM
    led = ledger(project)
    assert led["reserved"] == {} and led["spent_usd"] == pytest.approx(billed, rel=1e-9)
    (stop,) = led["reached"].values()
    assert stop["spent_usd"] + stop["next_call_usd"] > cap  # stopping was necessary, not early
    for row in project.membership():
        pm = project.paths.gen_file(row["stage"], row["gen_id"], "parsed_metadata.json")
        assert not pm.exists() or json.loads(pm.read_text())["success"], "a budget stop is not a failure"


@pytest.mark.slow
def test_cap_of_half_the_estimate_stops_the_run_and_a_higher_cap_finishes_it_without_repeats(priced):
    warm_up(priced)
    before = estimate(priced)
    assert before["calls"] == N_BIG_LLM and before["cost_usd"] > 0 and before["completion_basis"] == "history"
    cap = before["cost_usd"] / 2
    r = daydream(priced, "run", "t1", "--max-cost", f"{cap:.10f}")
    assert r.returncode == 3, r.stderr[-3000:]
    assert "not run: budget reached" in r.stderr and "raise the cap" in r.stderr
    assert re.search(r"\d+ model calls left, estimated at \$", r.stderr)  # what finishing would take
    assert "model calls still to make (estimate)" in r.stderr  # the estimate is shown before the run
    assert_stopped_within(priced, cap)
    assert (priced.root / "site" / "build" / "index.html").exists()  # reports and site from what finished
    status = daydream(priced, "status", "t1")
    assert re.search(r"^  draft\s+\d+\s+0\s+0\s+\d+\s+0$", status.stdout, re.M), status.stdout  # none failed
    assert "spend ledger" in status.stdout and "stopped at its cap" in status.stdout
    made = len(completions(priced.server))
    left = estimate(priced)
    assert left["calls"] == N_BIG_LLM - made  # finished generations are not estimated again

    r = daydream(priced, "run", "t1", "--max-cost", f"{before['cost_max_usd'] * 2:.10f}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(completions(priced.server)) == N_BIG_LLM  # every call once, over both runs
    assert ledger(priced)["spent_usd"] == pytest.approx(server_spend(priced.server), rel=1e-9)


@pytest.mark.slow
def test_cap_holds_across_four_luigi_worker_processes(priced):
    warm_up(priced)
    before = estimate(priced)
    cap = before["cost_usd"] / 2
    r = luigi(priced, "--max-cost", f"{cap:.10f}")
    assert r.returncode == 20, r.stderr[-3000:]  # [retcode] missing_data: SpendCapReached, not a failure (30)
    assert "SpendCapReached" in r.stderr
    assert_stopped_within(priced, cap)
    # the same cap again: only calls smaller than the one that stopped the run may still fit
    r = luigi(priced, "--max-cost", f"{cap:.10f}")
    assert r.returncode == 20, r.stderr[-3000:]
    assert server_spend(priced.server) <= cap + 1e-12
    r = luigi(priced)  # without a cap the run is not held back by the ledger of the capped ones
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(completions(priced.server)) == N_BIG_LLM


@pytest.mark.slow
@pytest.mark.luigid
def test_cap_against_luigid_then_a_higher_cap_continues(priced, luigid):
    """Against a long-lived luigid the stopped run stays pending there; the next run (a new run
    stamp, a higher cap) is not held back by it."""
    warm_up(priced)
    before = estimate(priced)
    cap = before["cost_usd"] / 2
    r = daydream(priced, "run", "t1", "--scheduler-url", luigid.url, "--workers", "2", "--max-cost", f"{cap:.10f}")
    assert r.returncode == 3, r.stderr[-3000:]
    assert_stopped_within(priced, cap)
    r = daydream(priced, "run", "t1", "--scheduler-url", luigid.url, "--workers", "2",
                 "--max-cost", f"{before['cost_max_usd'] * 2:.10f}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(completions(priced.server)) == N_BIG_LLM


@pytest.mark.slow
def test_budget_in_the_spec_caps_the_run_and_is_overridden_by_max_cost(priced):
    warm_up(priced)
    cap = estimate(priced)["cost_usd"] / 3
    spec = priced.root / "cohorts" / "t1" / "spec" / "config.yaml"
    spec.write_text(BIG_SPEC + f"budget_usd: {cap:.10f}\n")
    r = daydream(priced, "run", "t1")
    assert r.returncode == 3, r.stderr[-3000:]
    assert_stopped_within(priced, cap)
    r = daydream(priced, "run", "t1", "--max-cost", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(completions(priced.server)) == N_BIG_LLM


def test_a_model_without_prices_cannot_run_under_a_cap(project, tmp_path):
    cfg = tmp_path / "srv.cfg"
    cfg.write_text(f"[llm.testsrv]\nbase_url = {project.server.base_url}\napi_key_env =\n")
    project.cfg = cfg
    r = daydream(project, "run", "t1", "--max-cost", "1")  # srv-b has no prices in datafactory's catalog
    one_line_error(r, "error[budget]", "srv-b", "llm_models.csv")
    assert completions(project.server) == []


def test_bad_caps_are_one_line_errors(project, tmp_path):
    cfg = tmp_path / "srv.cfg"
    cfg.write_text(f"[llm.testsrv]\nbase_url = {project.server.base_url}\napi_key_env =\n")
    project.cfg = cfg
    one_line_error(daydream(project, "run", "t1", "--max-cost", "-1"), "error[config]", "--max-cost -1")
    one_line_error(daydream(project, "run", "t1", "--max-cost", "inf"), "error[config]", "--max-cost inf")
    spec = project.root / "cohorts" / "t1" / "spec" / "config.yaml"
    spec.write_text(SPEC + "budget_usd: ten dollars\n")
    one_line_error(daydream(project, "run", "t1"), "error[spec]", "budget_usd", "'ten dollars'", str(spec))
    spec.write_text(SPEC + "budget_usd: -5\n")
    one_line_error(daydream(project, "estimate", "t1"), "error[spec]", "budget_usd", "-5")
    assert completions(project.server) == []


def test_a_run_estimated_above_the_threshold_needs_yes_or_a_cap(priced):
    priced.cfg.write_text(priced.cfg.read_text() + "confirm_cost_above = 0.0001\n")
    r = daydream(priced, "run", "t1")
    one_line_error(r, "error[budget]", "confirm_cost_above", "--yes")
    assert "model calls still to make (estimate)" in r.stderr  # the table it refused on was shown
    assert completions(priced.server) == []
    r = daydream(priced, "run", "t1", "--max-cost", "0.00005")  # a cap below the threshold bounds the run
    assert r.returncode == 3, r.stderr[-3000:]
    assert completions(priced.server) == []  # no call fits at its upper bound under $0.00005


# -- the estimate and the accounting ----------------------------------------------------------------------


@pytest.mark.slow
def test_estimate_is_within_a_quarter_of_the_actual_spend(priced):
    """A first cohort gives the models a history; a second one (new replicates of every lineage)
    is estimated from it, then run: its spend is within ±25 % of the estimate."""
    r = daydream(priced, "run", "t1")
    assert r.returncode == 0, r.stderr[-3000:]
    other = priced.root / "cohorts" / "t2" / "spec"
    other.mkdir(parents=True)
    (other / "config.yaml").write_text(BIG_SPEC.replace("  draft_llm: [srv-a]\n",
                                                        "  draft_llm: [srv-a]\n  draft_replicate: [2]\n"))
    est = estimate(priced, "t2")
    assert est["calls"] == N_BIG_LLM and est["completion_basis"] == "history"
    priced.server.reset()
    r = daydream(priced, "run", "t2")
    assert r.returncode == 0, r.stderr[-3000:]
    actual = server_spend(priced.server)
    assert len(completions(priced.server)) == N_BIG_LLM
    assert abs(est["cost_usd"] - actual) <= 0.25 * actual, (est, actual)
    assert est["cost_max_usd"] >= actual  # the bound the cap reserves is a bound
    # ... and an estimate without history counts completions at max_tokens: an upper bound, far off
    (priced.root / "cohorts" / "t3" / "spec").mkdir(parents=True)
    (priced.root / "cohorts" / "t3" / "spec" / "config.yaml").write_text(
        BIG_SPEC.replace("[srv-a]", "[srv-c]").replace("e-llm, srv-c", "e-llm, srv-a"))
    (priced.root / "1_raw" / "llm_models.csv").write_text(MODELS + "srv-c,test/model-a,testsrv,Model C,,64,1.0,2.0\n")
    cold = [r for r in daydream_json(priced, "t3") if r["llm_model_id"] == "srv-c"]
    assert cold and all(r["completion_basis"] == "max_tokens" for r in cold)
    assert cold[0]["completion_tokens"] == 64 * cold[0]["calls"]


def daydream_json(project, cohort: str) -> list[dict]:
    r = daydream(project, "estimate", cohort, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["rows"]


def test_costs_are_reported_estimated_or_unknown_in_the_store_status_and_reports(project):
    """srv-a has prices, srv-b has none; the provider reports no cost, then (after the drafts are
    regenerated) its own cost for every call."""
    assert project.run()  # no cost reported: srv-a estimated from its prices, srv-b unknown
    draft = project.membership("draft")[0]["gen_id"]
    rm = project.json("draft", draft, "raw_metadata.json")
    assert rm["cost_source"] == "estimated"
    assert rm["cost_usd"] == pytest.approx((rm["prompt_tokens"] * 1.0 + rm["completion_tokens"] * 2.0) / 1e6)
    ev = project.membership("evaluation")[0]["gen_id"]
    rm = project.json("evaluation", ev, "raw_metadata.json")
    assert rm["cost_source"] == "unknown" and rm["cost_usd"] is None
    copy = next(r for r in project.membership("essay") if r["mode"] == "copy")["gen_id"]
    assert project.json("essay", copy, "raw_metadata.json")["cost_source"] is None

    # the provider reports a cost for the drafts after they are regenerated
    from pipeline.ops.maintenance import invalidate

    invalidate(project.paths, cohort_id="t1", stage="draft")
    project.server.cost = lambda body, usage: 0.001 if body["model"] == "test/model-a" else 0.002
    assert project.run()
    rm = project.json("draft", draft, "raw_metadata.json")
    assert rm["cost_source"] == "reported" and rm["cost_usd"] == 0.001
    import pandas as pd

    table = pd.read_csv(project.paths.reports_dir("t1") / "spend.csv", keep_default_na=False)
    assert list(table.columns) == list(spend.SPEND_COLUMNS)
    rows = {(r.stage, r.llm_model_id): r for r in table.itertuples()}
    assert rows[("draft", "srv-a")].n_cost_reported == 3 and rows[("draft", "srv-a")].cost_reported_usd == pytest.approx(0.003)
    assert rows[("evaluation", "srv-b")].calls == 12 and rows[("evaluation", "srv-b")].n_cost_reported == 12
    total = rows[("(all)", "(all)")]
    assert total.calls == 3 + 3 + 12 and total.cost_usd == pytest.approx(0.003 + 3 * 0.001 + 12 * 0.002)
    assert rows[("essay", "(all)")].calls == 3  # the copy essays made no call
    from pipeline.run.running import cohort_status

    st = cohort_status("t1")
    assert [r for r in st["spend"] if r["stage"] == "(all)"][0]["cost_usd"] == pytest.approx(total.cost_usd)
    # reports built before the spend table existed are rebuilt, so the site finds it
    from pipeline.tasks import CohortReports

    assert CohortReports(cohort_id="t1").complete()
    (project.paths.reports_dir("t1") / "spend.csv").unlink()
    assert not CohortReports(cohort_id="t1").complete()


# -- the ledger ---------------------------------------------------------------------------------------------


def test_decide_waits_for_calls_in_flight_and_then_stops():
    led = spend.new_ledger("c")
    assert spend.decide(led, 1.0, 0.6, "run1") == spend.FITS
    led["reserved"]["a"] = {"usd": 0.6, "expires": 1e18}
    assert spend.decide(led, 1.0, 0.6, "run1") == spend.WAIT  # the call in flight may cost less
    spend.settle(led, "a", 0.1)
    assert led["spent_usd"] == pytest.approx(0.1) and led["calls"] == 1
    assert spend.decide(led, 1.0, 0.6, "run1") == spend.FITS
    assert spend.decide(led, 1.0, 0.95, "run1") == spend.REACHED  # nothing in flight: it can never fit
    spend.mark_reached(led, "run1", 1.0, 0.95, "essay e_1 on m", "t")
    assert spend.decide(led, 1.0, 0.01, "run1") == spend.REACHED  # the run stays stopped
    assert spend.decide(led, 1.0, 0.01, "run2") == spend.FITS  # a new run may go on


def test_abandoned_reservations_are_charged_until_their_call_settles():
    led = spend.new_ledger("c")
    led["reserved"]["a"] = {"usd": 0.5, "expires": 10.0, "host": "h", "pid": 1}
    led["reserved"]["b"] = {"usd": 0.2, "expires": 100.0, "host": "h", "pid": 2}
    spend.expire(led, now=50.0, alive=lambda r: r["pid"] != 2)  # a is past its time, b's process is gone
    assert led["reserved"] == {} and led["spent_usd"] == pytest.approx(0.7)
    spend.settle(led, "a", 0.05)  # a late answer replaces the bound by the cost
    assert led["spent_usd"] == pytest.approx(0.25) and led["abandoned_usd"] == pytest.approx(0.2)
    spend.settle(led, "b", None)  # unknown cost: charged at the bound
    assert led["spent_usd"] == pytest.approx(0.25) and led["unknown_cost_calls"] == 1


def test_cost_source_and_caps():
    assert spend.cost_and_source(None, 0.5) == (0.5, spend.ESTIMATED)
    assert spend.cost_and_source(None, None) == (None, spend.UNKNOWN)
    assert spend.cost_and_source(0.4, 0.5) == (0.4, spend.REPORTED)
    assert spend.cost_and_source(0.5, 0.5) == (0.5, spend.REPORTED)
    legacy = {"mode": "llm", "stage": "draft", "llm_model_id": "m", "prompt_tokens": 1000, "completion_tokens": 0}
    priced = spend.Prices(2.0, 4.0)  # 1000 prompt tokens: $0.002
    assert spend.call_record({**legacy, "cost_usd": 0.002}, priced)["cost_source"] == spend.ESTIMATED  # old fallback
    assert spend.call_record({**legacy, "cost_usd": 0.003}, priced)["cost_source"] == spend.REPORTED
    assert spend.cost_and_source(0.0, None) == (0.0, spend.REPORTED)  # a reported 0 is a cost, not unknown
    prices = spend.Prices(1.0, 2.0)
    assert spend.call_bound(prices, 100, 50) == pytest.approx((116 * 1.0 + 50 * 2.0) / 1e6)
    assert spend.call_bound(spend.Prices(None, 2.0), 100, 50) is None
    assert spend.call_bound(spend.Prices(None, None, free=True), 100, 50) == 0.0
    assert spend.check_cap("2.5", "x") == 2.5 and spend.check_cap(0, "x") == 0.0
    for bad in (-1, "nan", float("inf"), True, "abc", [1]):
        with pytest.raises(ValueError):
            spend.check_cap(bad, "x")
    assert spend.usd(None) == "unknown"


def _hammer(root: str, cap: float, n: int, out) -> None:
    """One process reserving and settling calls until the budget is reached."""
    from pipeline.store.ledger import Budget
    from pipeline.store import DataPaths

    budget = Budget(DataPaths(Path(root)), "c", cap, "run")
    made = 0
    for i in range(n):
        slot = asyncio.run(budget.reserve("draft", f"d{i}", "m", 0.03, 60))
        if slot is None:
            break
        slot.settle(0.01)
        made += 1
    out.put(made)


def test_the_ledger_holds_the_cap_across_processes(tmp_path):
    (tmp_path / "cohorts" / "c").mkdir(parents=True)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), 1.0, 200, out)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    made = sum(out.get(timeout=5) for _ in procs)
    led = json.loads((tmp_path / "cohorts" / "c" / "spend.json").read_text())
    # each call reserves 0.03 and costs 0.01: exactly 98 fit (0.97 + 0.03 = 1.00), then none
    assert made == led["calls"] == 98 and led["spent_usd"] == pytest.approx(0.98) and led["reserved"] == {}
    assert list(led["reached"]) == ["run"]


def test_ctrl_c_mid_run_charges_the_calls_in_flight_and_leaves_no_reservation(priced):
    # the calls run in the executor's own process, which ignores Ctrl-C: the driver's interrupted
    # wait cancels them there, and each call's reservation is charged at its bound (its fate is unknown)
    import signal
    import time

    priced.server.latency = 1.0
    # as in a terminal's foreground job: a suite started in the background inherits Ctrl-C ignored
    p = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "t1", "--max-cost", "1"], cwd=REPO,
                         env=env_for(priced), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 60
        while time.time() < deadline and priced.server.in_flight < 2:
            time.sleep(0.01)
        assert ledger(priced)["reserved"], "calls in flight hold reservations"
        os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the driver and the executor
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, err[-3000:]
    after = ledger(priced)
    assert after["reserved"] == {} and after["abandoned"], err[-3000:]
    with pytest.raises(ProcessLookupError):
        os.killpg(p.pid, 0)  # nothing of the run is left running
