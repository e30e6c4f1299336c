"""Benchmark: orchestration cost per generation of a ``RunCohort`` build, instant model server.

    .venv/bin/python bench/orchestration.py [--sizes 1000,2000,5000,10000] [--max-size 100000]
        [--schedulers local,luigid] [--local-workers 1] [--luigid-workers 4]
        [--batch-size B] [--chunk-size K] [--concurrency 64] [--budget-s 120]

For each size N (LLM generations: N/4 drafts, N/4 essays, N/2 evaluations, all through the test
server in a child process with latency 0) and each scheduler (the local scheduler with
``--workers 1``; a real luigid on loopback with ``--workers 4``), a fresh data root is compiled
(timed apart, as ``daydream run`` compiles before its build) and ONE
``luigi.build([RunCohort(...)])`` runs the cohort: every generation through lazy ``CohortChunk``
tasks, then the reports and the site. The generations phase is from the build's start to the
first report task's start (``common.PhaseClock``); ms per generation is that phase over N.
``[daydream] batch_size`` / ``chunk_size`` are the pipeline's defaults unless given.

With one worker, tasks run in this process, so the phase splits into the tasks' own work
(``run_batch`` / ``run_generation``: mostly the openai SDK, rendering, fsynced writes),
completeness checks (``GenerationTarget.exists``, ``CohortChunk.complete``) and the rest
(Luigi's scheduling, task construction, chunk bookkeeping); "orchestration" is the phase minus
the tasks' own work. Growth: ms/generation at the largest size over that at the smallest
(linear scaling: ~1).

Budget: a run whose estimate (from the largest earlier run on the same scheduler) would end past
``--budget-s`` is skipped and listed under ``skipped_for_budget``; ``--budget-s 0`` runs all.
``--max-size 100000`` appends a 100,000-generation local run (several minutes; not default).
Prints one JSON object; progress on stderr.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402


def sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()] if text else []


def one_run(args, base: Path, server, n: int, scheduler: str) -> dict:
    from pipeline import config

    workers = args.local_workers if scheduler == "local" else args.luigid_workers
    root, counts = c.sized_root(base, n)
    luigid = None
    try:
        if scheduler == "luigid":
            luigid = c.start_luigid(base / "luigid", {f"llm_{c.PROVIDER}": args.concurrency})
        c.configure(server.base_url, concurrency=args.concurrency, batch_size=args.batch_size,
                    chunk_size=args.chunk_size)
        _, _, compile_s = c.compile_and_prepare()
        batch_size, chunk_size = config.batch_size(), config.chunk_size()  # batch_size None: the default
        per_task = config.calls_per_task(c.PROVIDER)
        server.reset()
        timer = c.InTaskTimer()
        with c.PhaseClock(base / "phases.jsonl") as clock, timer:
            build = c.build_run_cohort(workers, luigid.url if luigid else None)
        if build["status"] != "SUCCESS":
            raise SystemExit(f"RunCohort build ended {build['status']} ({scheduler}, {n})")
        c.check_all_done(counts["total"])
        stats = server.stats()
        reports_start = clock.reports_start()
        reports_wall = clock.reports_wall_s()
    finally:
        if luigid:
            luigid.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(base / "luigid", ignore_errors=True)
    total = counts["total"]
    gen_s = (reports_start - build["started_at"]) if reports_start else build["seconds"]
    run = {
        "scheduler": scheduler, "workers": workers, "generations": total,
        "per_stage": {k: v for k, v in counts.items() if k != "total"},
        "batch_size": batch_size, "calls_per_task": per_task, "chunk_size": chunk_size,
        "chunks": -(-total // chunk_size),
        "compile_s": round(compile_s, 2), "build_s": round(build["seconds"], 2),
        "generations_s": round(gen_s, 2), "reports_site_s": round(build["seconds"] - gen_s, 2),
        "reports_site_task_s": round(reports_wall, 2),
        "ms_per_generation": c.ms_per(gen_s, total),
        "build_cpu_ms_per_generation": c.ms_per(build["cpu_s"], total),
        "model_requests": stats["requests"],
    }
    if workers == 1:
        run["in_task_ms_per_generation"] = c.ms_per(timer.work_s, total)
        run["orchestration_ms_per_generation"] = c.ms_per(gen_s - timer.work_s, total)
        run["complete_checks"] = timer.complete_calls
        run["complete_ms_per_generation"] = c.ms_per(timer.complete_s, total)
    if stats["requests"] != total:
        raise SystemExit(f"{stats['requests']} model requests for {total} generations")
    c.log(f"  {scheduler:<6} w{workers} {total:>6} gens: {gen_s:6.2f} s generations "
          f"({run['ms_per_generation']:.2f} ms/gen), build {build['seconds']:.2f} s"
          + (f", in tasks {run['in_task_ms_per_generation']:.2f} ms/gen" if workers == 1 else ""))
    return run


def growth(runs: list[dict]) -> dict:
    """Per scheduler: ms/generation at each size over that at the smallest (linear: ~1)."""
    out: dict[str, dict] = {}
    for sched in sorted({r["scheduler"] for r in runs}):
        rs = sorted((r for r in runs if r["scheduler"] == sched), key=lambda r: r["generations"])
        if len(rs) < 2:
            continue
        first = rs[0]
        out[sched] = {f"{r['generations']}/{first['generations']}": {
            "size_ratio": round(r["generations"] / first["generations"], 2),
            "time_ratio": c.ratio(r["generations_s"], first["generations_s"]),
            "ms_per_generation_ratio": c.ratio(r["ms_per_generation"], first["ms_per_generation"])}
            for r in rs[1:]}
    return out


def estimated_s(runs: list[dict], scheduler: str, n: int) -> float | None:
    same = [r for r in runs if r["scheduler"] == scheduler]
    if not same:
        return None
    last = max(same, key=lambda r: r["generations"])
    return (last["build_s"] + last["compile_s"]) * n / last["generations"] + 1.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,2000,5000,10000", help="cohort sizes (generations), comma-separated")
    ap.add_argument("--max-size", type=int, default=0,
                    help="also run this size, local scheduler only (e.g. 100000; not default)")
    ap.add_argument("--schedulers", default="local,luigid", help="local, luigid or both")
    ap.add_argument("--local-workers", type=int, default=1)
    ap.add_argument("--luigid-workers", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=None, help="[daydream] batch_size (default: the pipeline's)")
    ap.add_argument("--chunk-size", type=int, default=None, help="[daydream] chunk_size (default: the pipeline's)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--budget-s", type=float, default=120.0,
                    help="skip a run whose estimate would end past this many seconds; 0 runs everything")
    args = ap.parse_args(argv)
    schedulers = [s for s in args.schedulers.split(",") if s]
    if set(schedulers) - {"local", "luigid"}:
        ap.error("--schedulers takes local and/or luigid")
    plan = [(n, s) for n in sizes(args.sizes) for s in schedulers]
    if args.max_size:
        plan.append((args.max_size, "local"))

    c.quiet_luigi()
    started = time.perf_counter()
    runs: list[dict] = []
    skipped: list[dict] = []
    with c.scratch_dir() as (base, fs), c.ServerProcess(latency=0.0) as server:
        for n, scheduler in plan:
            estimate = estimated_s(runs, scheduler, n)
            elapsed = time.perf_counter() - started
            forced = args.max_size and n == args.max_size
            if args.budget_s and not forced and estimate is not None and elapsed + estimate > args.budget_s:
                skipped.append({"scheduler": scheduler, "generations": n, "estimated_s": round(estimate, 1)})
                c.log(f"  skipped {scheduler} {n} gens: ~{estimate:.0f} s would pass --budget-s {args.budget_s:g}")
                continue
            runs.append(one_run(args, base, server, n, scheduler))
    c.emit({
        "benchmark": "orchestration",
        "data_root_fs": fs,
        "settings": {"local_workers": args.local_workers, "luigid_workers": args.luigid_workers,
                     "concurrency": args.concurrency, "server_latency_s": 0.0, "server": "child process",
                     "server_tcp_nodelay": c.SERVER_TCP_NODELAY, "build": "luigi.build([RunCohort])"},
        "sizes_run": sorted({r["generations"] for r in runs}), "schedulers_run": schedulers,
        "runs": runs,
        "skipped_for_budget": skipped, "budget_s": args.budget_s,
        "growth": growth(runs),
        "total_s": round(time.perf_counter() - started, 1),
        "machine": c.machine(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
