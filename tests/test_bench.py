"""The benchmarks at toy sizes: each runs as a command, prints one JSON object, and its own
invariants hold (one request per generation, none on a re-run, the concurrency limit kept, an
unchanged recompile writing nothing). Their timings are not asserted: bench/README.md has those."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def bench(name: str, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DAYDREAM_DATA_ROOT", "LUIGI_CONFIG_PATH")}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / f"{name}.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert out["benchmark"] == name and out["machine"]["nproc"] >= 1
    return out


def test_orchestration_runs_both_schedulers_and_reports_growth():
    out = bench("orchestration", "--sizes", "40,80", "--budget-s", "0", "--chunk-size", "30",
                "--luigid-workers", "2")
    runs = {(r["scheduler"], r["generations"]): r for r in out["runs"]}
    assert set(runs) == {("local", 40), ("luigid", 40), ("local", 80), ("luigid", 80)}
    for (sched, n), r in runs.items():
        assert r["model_requests"] == n and r["chunks"] == -(-n // 30) and r["chunk_size"] == 30
        assert r["workers"] == (1 if sched == "local" else 2)
        assert 0 < r["generations_s"] <= r["build_s"] and r["ms_per_generation"] > 0
        if sched == "local":  # tasks run in-process: their own work is measured apart
            assert 0 < r["in_task_ms_per_generation"] < r["ms_per_generation"]
            assert r["orchestration_ms_per_generation"] > 0 and r["complete_checks"] > 0
    assert set(out["growth"]) == {"local", "luigid"}
    assert out["growth"]["local"]["80/40"]["size_ratio"] == 2.0
    assert out["growth"]["local"]["80/40"]["ms_per_generation_ratio"] > 0


def test_orchestration_skips_what_would_pass_the_budget():
    out = bench("orchestration", "--sizes", "40,100000", "--schedulers", "local", "--budget-s", "60")
    assert [r["generations"] for r in out["runs"]] == [40]
    assert out["skipped_for_budget"][0]["generations"] == 100000


def test_throughput_keeps_the_concurrency_limit():
    out = bench("throughput", "--generations", "60", "--latency", "0.05", "--settings", "4:1,8:2:4")
    assert out["limit_respected"] and len(out["runs"]) == 2
    assert [(r["concurrency"], r["workers"], r["calls_per_task"]) for r in out["runs"]] == [(4, 1, 4), (8, 2, 4)]
    assert out["runs"][1]["batch_size"] == 4
    for run in out["runs"]:
        assert run["model_requests"] == 60 and 1 <= run["max_concurrency_seen"] <= run["concurrency"]
        assert 0 < run["fraction_of_ideal"] <= 1.0 and run["client_cpu_ms_per_generation"] > 0


def test_noop_rerun_makes_no_request():
    out = bench("noop", "--generations", "40")
    assert out["first_run"]["model_requests"] == 40
    assert set(out["reruns"]) == {"run_cohort", "daydream_run", "luigi_command", "build"}
    for r in out["reruns"].values():
        assert r["model_requests"] == 0 and r["returncode"] == 0 and r["seconds"] > 0
    assert out["reruns"]["luigi_command"]["command"].startswith("luigi --module pipeline.tasks RunCohort")


def test_compile_reads_each_metadata_once_and_rewrites_nothing():
    out = bench("compile", "--rows", "800")
    assert out["rows"] == 800
    n = out["generations_total"]
    assert out["first_compile"]["files_written"]["metadata"] == n
    assert out["unchanged_recompile"]["files_written_total"] == 0
    # each stored metadata.json is read at most once per compile (none is stored before the first)
    assert out["first_compile"]["metadata_reads"] <= n
    assert out["unchanged_recompile"]["metadata_reads"] == n


def test_reports_site():
    out = bench("reports_site", "--evaluations", "80")
    assert out["n_evaluations"] == 80 and out["pages"] > out["n_essays"]
    assert out["largest_search_index"]["kb"] > 0


def test_search_calibration_reports_each_world_with_its_interval():
    out = bench("search_calibration", "--runs", "20")
    worlds = {(r["world"], r["statistic"]): r for r in out["results"]}
    assert set(worlds) == {(w, s) for w in ("null", "planted", "null_selection_only") for s in ("ci_low", "mean")}
    for r in worlds.values():
        assert r["runs"] == 20 and 0 <= r["claims"] <= 20 and r["rate"] == r["claims"] / 20
        assert r["rate_ci95"][0] <= r["rate"] <= r["rate_ci95"][1]
    assert out["design"]["confirm"] == 10 and out["design"]["target"] == 0.6


def test_stats_calibration():
    out = bench("stats_calibration", "--fast-seeds", "40", "--table-seeds", "2", "--mixed-seeds", "2")
    assert set(out["coverage_statistics_layer"]) == {"3", "4", "6", "12"}
    for kinds in out["coverage_statistics_layer"].values():
        assert set(kinds) == {"mean", "diff", "paired"} and all(0 <= v <= 1 for v in kinds.values())
    for kinds in out["coverage_tables"].values():  # and how often the tables used the mixed model
        assert set(kinds) == {"mean", "diff", "paired", "mixed_model_share"} and all(0 <= v <= 1 for v in kinds.values())
    assert 0 <= out["template_coverage_with_draft_effect"] <= 1
    assert set(out["tables_with_a_false_flag"]) == {"factor_effects", "paired_comparisons", "factor_effects_unadjusted"}
    for design in out["mixed_model"].values():  # the mixed model's own intervals, per design and size
        assert design and all(0 <= v <= 1 for size in design.values() for k, v in size.items() if k != "s_per_fit")


def _cohort_run_invariants(r: dict, concurrency: int) -> None:
    assert r["calls"] == r["generations"] == 40  # every call made once
    assert r["max_concurrency_seen"] <= concurrency and 0 < r["busy"] <= 1.05
    assert 0 < r["busy_before_drain"] <= 1.05 and 0 <= r["drain_s"] < r["window_s"]
    # the generations' CPU is measured up to the reports' start, inside the whole command's
    assert 0 < r["generations_s"] < r["seconds"]
    assert 0 < r["cpu_ms_per_generation"] < r["cpu_ms_per_generation_with_reports"]
    assert r["reports_site_cpu_s"] > 0
    ideal = r["busy_zero_overhead"]
    assert 0 < ideal["low"] <= ideal["mean"] <= ideal["high"] <= 1


def test_cohort_runs_the_luigi_command_on_tmpfs_and_on_disk():
    out = bench("cohort", "--modes", "cohort", "--roots", "tmpfs,disk", "--generations", "40", "--concurrency", "8",
                "--latency", "0.05")
    assert [(r["mode"], r["data_root_fs"]) for r in out["runs"]] == [("cohort", "tmpfs"), ("cohort", "disk")]
    for r in out["runs"]:
        _cohort_run_invariants(r, 8)
        assert r["latency_sigma"] == 0


def test_cohort_drafts_only_and_heavy_tailed_latency():
    out = bench("cohort", "--modes", "drafts,lognormal-64", "--roots", "tmpfs", "--generations", "40",
                "--concurrency", "8", "--latency", "0.05")
    drafts, lognormal = out["runs"]
    assert (drafts["mode"], lognormal["mode"]) == ("drafts", "lognormal-64")
    assert drafts["latency_sigma"] == 0 and lognormal["latency_sigma"] == 0.8
    for r in out["runs"]:
        _cohort_run_invariants(r, 8)


def test_the_zero_overhead_yardstick_counts_slots_as_a_perfect_runner_would():
    sys.path.insert(0, str(REPO / "bench"))
    from ideal import busy, ideal_busy

    # whole rounds of fixed-latency calls fill every slot; a lone lineage of three fills one of four
    assert busy({"draft": 128}, 64, 0.2, 0.0, seed=0) == pytest.approx(1.0)
    assert busy({"draft": 1, "essay": 1, "evaluation": 1}, 4, 1.0, 0.0, seed=0) == pytest.approx(1 / 4)
    # one draft, its essay, then its two evaluations side by side: 4 calls in 3 rounds of 2 slots
    assert busy({"draft": 1, "essay": 1, "evaluation": 2}, 2, 1.0, 0.0, seed=0) == pytest.approx(4 / 6)
    # heavy-tailed latency: the drain leaves slots idle, the more so the fewer calls per slot
    small = ideal_busy({"draft": 288, "essay": 288, "evaluation": 576}, 64, 1.0, 0.8)
    large = ideal_busy({"draft": 720, "essay": 720, "evaluation": 1440}, 64, 1.0, 0.8)
    wide = ideal_busy({"draft": 720, "essay": 720, "evaluation": 1440}, 256, 1.0, 0.8)
    assert small["low"] < small["mean"] < large["mean"] < 1 and wide["mean"] < large["mean"]
