"""Benchmark: orchestration cost of a cohort against an instant model server.

    .venv/bin/python bench/orchestration.py [--sizes 1000,5000,10000] [--schedulers local,luigid]
        [--workers 1] [--batch-size 32] [--concurrency 64] [--chunk-size 500]
        [--flat 1000,3000] [--flat-batch-size 1]

For each size N (LLM generations: N/4 drafts, N/4 essays, N/2 evaluations, all through the test
server with latency 0) and each scheduler (the local scheduler, a real luigid on loopback), a fresh
data root is compiled and ``pipeline.running.drive`` runs every generation; the generations phase
is timed (compile and reports/site are not part of it). Reported: seconds, ms per generation, the
share spent inside the tasks' own work vs orchestration (workers=1 only: tasks run in-process), and
growth ratios between consecutive sizes (linear: time ratio = size ratio).

``--flat`` adds the contrast the chunked driver replaced: ONE ``luigi.build`` over every
generation task (local scheduler), next to the chunked driver at the same sizes and batch size.
The default flat batch size is 1 (one task per scheduler request, as in the issue's measurement);
with batching the quadratic term shrinks by the batch size.

The full set (6 runs, 32,000 generations, each through the openai SDK) takes ~4 minutes on
2 cores, so by default a run whose estimate (from the previous size on the same scheduler) would
end past ``--budget-s 110`` is skipped and listed under ``skipped_for_budget``: the default
command finishes in under two minutes with the 1,000 and 5,000 runs of both schedulers.
``--budget-s 0`` runs everything (the figures in bench/README.md). Prints one JSON object;
progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402


def sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()] if text else []


def chunked_run(args, base: Path, server, n: int, scheduler: str, batch_size: int) -> dict:
    import shutil

    root, counts = c.sized_root(base, n)
    luigid = None
    try:
        if scheduler == "luigid":
            luigid = c.start_luigid(base / "luigid", {f"llm_{c.PROVIDER}": args.concurrency})
        c.configure(server.base_url, concurrency=args.concurrency, batch_size=batch_size, chunk_size=args.chunk_size)
        plan, written, compile_s = c.compile_and_prepare()
        server.reset()
        timer = c.InTaskTimer()
        with timer:
            seconds, result = c.drive_generations(args.workers, luigid.url if luigid else None)
        c.check_all_done(result, counts["total"])
        stats = server.stats()
    finally:
        if luigid:
            luigid.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(base / "luigid", ignore_errors=True)
    total = counts["total"]
    run = {
        "approach": "chunked", "scheduler": scheduler, "generations": total, "per_stage": {k: v for k, v in counts.items() if k != "total"},
        "batch_size": batch_size, "compile_s": round(compile_s, 2), "generations_s": round(seconds, 2),
        "ms_per_generation": c.ms_per(seconds, total), "chunks": -(-total // args.chunk_size),
        "model_requests": stats["requests"],
    }
    if args.workers == 1:
        run["in_task_ms_per_generation"] = c.ms_per(timer.work_s, total)
        run["complete_checks"] = timer.complete_calls
        run["complete_ms_per_generation"] = c.ms_per(timer.complete_s, total)
        run["orchestration_ms_per_generation"] = c.ms_per(seconds - timer.work_s, total)
    c.log(f"  chunked {scheduler:<6} {total:>6} gens: {seconds:6.2f} s, {run['ms_per_generation']:.2f} ms/gen")
    return run


def flat_run(args, base: Path, server, n: int, batch_size: int) -> dict:
    """One luigi.build over every generation task: the approach the chunked driver replaced."""
    import shutil

    import luigi

    from pipeline.tasks import generation_tasks

    root, counts = c.sized_root(base, n)
    try:
        c.configure(server.base_url, concurrency=args.concurrency, batch_size=batch_size, chunk_size=args.chunk_size)
        plan, written, compile_s = c.compile_and_prepare()
        server.reset()
        c.reset_state()
        t0 = time.perf_counter()
        tasks = generation_tasks(c.COHORT)
        ok = luigi.build(tasks, **c.build_kwargs(args.workers))
        seconds = time.perf_counter() - t0
        done = sum(t.complete() for t in tasks)
        stats = server.stats()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if not ok or done != counts["total"]:
        raise SystemExit(f"flat run incomplete: {done} of {counts['total']} done")
    c.log(f"  flat    local  {n:>6} gens: {seconds:6.2f} s (batch_size {batch_size})")
    return {"approach": "flat", "scheduler": "local", "generations": counts["total"], "batch_size": batch_size,
            "generations_s": round(seconds, 2), "ms_per_generation": c.ms_per(seconds, counts["total"]),
            "model_requests": stats["requests"]}


def growth(runs: list[dict]) -> dict:
    """Time ratio vs size ratio between consecutive sizes, per (approach, scheduler, batch_size)."""
    out: dict[str, dict] = {}
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(f"{r['approach']}/{r['scheduler']}/batch{r['batch_size']}", []).append(r)
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["generations"])
        out[key] = {f"{b['generations']}/{a['generations']}": {
            "size_ratio": round(b["generations"] / a["generations"], 2),
            "time_ratio": c.ratio(b["generations_s"], a["generations_s"])} for a, b in zip(rs, rs[1:])}
    return {k: v for k, v in out.items() if v}


def estimated_s(runs: list[dict], scheduler: str, n: int) -> float | None:
    """Seconds a chunked run of ``n`` generations should take (setup included), from the largest
    earlier run on the same scheduler; None before the first one."""
    same = [r for r in runs if r["approach"] == "chunked" and r["scheduler"] == scheduler]
    if not same:
        return None
    last = max(same, key=lambda r: r["generations"])
    return (last["generations_s"] + last["compile_s"]) * n / last["generations"] + 1.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000,10000", help="cohort sizes (generations), comma-separated")
    ap.add_argument("--schedulers", default="local,luigid", help="local, luigid or both")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--chunk-size", type=int, default=500)
    ap.add_argument("--flat", default="", help="sizes for the flat contrast (one luigi.build), e.g. 1000,3000")
    ap.add_argument("--flat-batch-size", type=int, default=1)
    ap.add_argument("--budget-s", type=float, default=110.0,
                    help="skip a run whose estimated time (from the previous size) would end past this "
                         "many seconds; 0 runs everything")
    args = ap.parse_args(argv)
    schedulers = [s for s in args.schedulers.split(",") if s]
    if set(schedulers) - {"local", "luigid"}:
        ap.error("--schedulers takes local and/or luigid")

    c.quiet_luigi()
    started = time.perf_counter()
    runs: list[dict] = []
    skipped: list[dict] = []
    with c.scratch_dir() as (base, fs), c.ServerProcess(latency=0.0) as server:
        for n in sizes(args.sizes):
            for scheduler in schedulers:
                estimate = estimated_s(runs, scheduler, n)
                elapsed = time.perf_counter() - started
                if args.budget_s and estimate is not None and elapsed + estimate > args.budget_s:
                    skipped.append({"scheduler": scheduler, "generations": n, "estimated_s": round(estimate, 1)})
                    c.log(f"  skipped {scheduler} {n} gens: ~{estimate:.0f} s would pass --budget-s {args.budget_s:g}")
                    continue
                runs.append(chunked_run(args, base, server, n, scheduler, args.batch_size))
        for n in sizes(args.flat):
            runs.append(flat_run(args, base, server, n, args.flat_batch_size))
            runs.append(chunked_run(args, base, server, n, "local", args.flat_batch_size))
    c.emit({
        "benchmark": "orchestration",
        "data_root_fs": fs,
        "settings": {"workers": args.workers, "batch_size": args.batch_size, "concurrency": args.concurrency,
                     "chunk_size": args.chunk_size, "server_latency_s": 0.0, "server": "child process",
                     "server_tcp_nodelay": c.SERVER_TCP_NODELAY},
        "sizes_run": sizes(args.sizes), "schedulers_run": schedulers, "flat_sizes_run": sizes(args.flat),
        "runs": runs,
        "skipped_for_budget": skipped, "budget_s": args.budget_s,
        "growth": growth(runs),
        "total_s": round(time.perf_counter() - started, 1),
        "machine": c.machine(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
