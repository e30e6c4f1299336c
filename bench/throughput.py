"""Benchmark: model-call throughput of a ``RunCohort`` build against a server with real latency.

    .venv/bin/python bench/throughput.py [--generations 3200] [--latency 0.2]
        [--settings 16:1,64:1,64:4]   # C:workers[:batch_size], batch size default: the pipeline's

``--generations`` independent drafts (concepts × draft_replicate, no dependencies) run through
ONE ``luigi.build([RunCohort(...)])`` (what the ``luigi`` command and ``daydream run`` make;
local scheduler) against the test server (child process, ``--latency`` seconds per request). The
provider's limit C is ``[llm.testsrv] concurrency`` = ``[resources] llm_testsrv`` = C; batch and
chunk sizes are the pipeline's defaults unless a setting names a batch size. A batch task holds
``config.calls_per_task`` units of the provider's resource (min(batch size, C); reported as
``calls_per_task``), so one worker has at most that many calls in flight.

Per setting:

* achieved calls/s over the generations phase (from the build's start to the server's last
  answer) and its share of the ideal C / latency; ``window_*`` is the same from the first request
  to the last answer (start-up excluded);
* the server's ``max_concurrency_seen``, which must never exceed C (the benchmark fails if it does);
* client CPU ms per generation: CPU time of this process (all threads) plus reaped children
  (``resource.getrusage(RUSAGE_CHILDREN)``: Luigi's forked task processes when workers > 1) over
  the build, minus the report and site tasks' own CPU (``common.PhaseClock``), over the calls:
  the whole pipeline's cost (Luigi, rendering, five fsynced files, the model client).

``model_client`` is the model client alone, for each C: the same requests through the pipeline's
own provider (``make_provider`` for ``[llm.testsrv]``: the retrying provider over the openai SDK),
C at a time on one event loop as a batch makes them, with its CPU ms per call and its share of
the ideal.

How the drafts-only cohort is made: the spec needs essays and evaluations (copy-mode essays and
one rubric here), so after compiling, the cohort's ``membership.csv`` is cut to its drafts (the
manifest, hence ``CompileCohort``, still matches). Between settings the drafts' outputs are
deleted (their seeded metadata stays), so every setting makes every model call.

Runs in ~2 minutes on 2 cores. Prints one JSON object; progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

DEFAULT_SETTINGS = "16:1,64:1,64:4"
OUTPUT_FILES = ("prompt.txt", "raw.txt", "raw_metadata.json", "parsed.txt", "parsed_metadata.json")


def parse_settings(text: str) -> list[tuple[int, int, int | None]]:
    out = []
    for item in text.split(","):
        parts = [int(x) for x in item.split(":")]
        if len(parts) not in (2, 3) or min(parts) < 1:
            raise SystemExit(f"bad setting {item!r}: expected C:workers[:batch_size]")
        out.append((parts[0], parts[1], parts[2] if len(parts) == 3 else None))
    return out


def drafts_only(root: Path) -> int:
    """Cut the compiled cohort's membership to its drafts; returns how many remain."""
    from pipeline.design.cohort import MEMBERSHIP_COLUMNS
    from pipeline.store import DataPaths, atomic_write_csv, read_csv_rows

    path = DataPaths(root).membership_csv(c.COHORT)
    rows = [r for r in read_csv_rows(path) if r["stage"] == "draft"]
    atomic_write_csv(path, MEMBERSHIP_COLUMNS, rows)
    return len(rows)


def clear_outputs(root: Path) -> None:
    for d in (root / "gens" / "draft").iterdir():
        for name in OUTPUT_FILES:
            (d / name).unlink(missing_ok=True)


def one_setting(base: Path, root: Path, server, n: int, latency: float, C: int, workers: int,
                batch: int | None) -> dict:
    from pipeline import config
    from pipeline.run.run_plan import prepare_providers

    clear_outputs(root)
    c.configure(server.base_url, concurrency=C, batch_size=batch)
    c.reset_state()
    prepare_providers(config.data_paths(), c.COHORT)
    # the configured cap (None: the pipeline's default) and what a batch task may have in flight
    batch_size, chunk_size = config.batch_size(), config.chunk_size()
    per_task = config.calls_per_task(c.PROVIDER)
    server.reset()
    with c.PhaseClock(base / "phases.jsonl") as clock:
        build = c.build_run_cohort(workers)
        reports_cpu = clock.reports_cpu_s()
    c.check_all_done(n)
    stats = server.stats()
    ideal = C / latency
    phase = stats["last_response_at"] - build["started_at"]
    window = stats["last_response_at"] - stats["first_request_at"]
    calls = stats["requests"]
    client_cpu = build["cpu_s"] - reports_cpu
    run = {"concurrency": C, "workers": workers, "batch_size": batch_size, "calls_per_task": per_task,
           "chunk_size": chunk_size,
           "generations": n, "model_requests": calls, "build_status": build["status"],
           "build_s": round(build["seconds"], 2), "generations_s": round(phase, 2),
           "calls_per_s": round(calls / phase, 1), "ideal_calls_per_s": round(ideal, 1),
           "fraction_of_ideal": round(calls / phase / ideal, 3),
           "first_call_after_s": round(stats["first_request_at"] - build["started_at"], 2),
           "window_calls_per_s": round(calls / window, 1), "window_fraction_of_ideal": round(calls / window / ideal, 3),
           "max_concurrency_seen": stats["max_concurrency_seen"],
           "client_cpu_ms_per_generation": c.ms_per(client_cpu, calls),
           "reports_site_cpu_s": round(reports_cpu, 2)}
    c.log(f"  C={C:<3} workers={workers} calls/task={per_task:<3}: {phase:6.2f} s, {calls / phase:6.1f} calls/s = "
          f"{calls / phase / ideal:.1%} of ideal (window {calls / window / ideal:.1%}), max in flight "
          f"{stats['max_concurrency_seen']}, client CPU {run['client_cpu_ms_per_generation']:.2f} ms/gen")
    if stats["max_concurrency_seen"] > C:
        raise SystemExit(f"concurrency limit exceeded: {stats['max_concurrency_seen']} calls in flight > C={C}")
    if calls != n or build["status"] != "SUCCESS":
        raise SystemExit(f"{calls} model requests for {n} generations; build {build['status']}")
    return run


def model_client(server, n: int, latency: float, C: int) -> dict:
    """``n`` calls through the pipeline's provider alone, at most C in flight on one event loop."""
    import asyncio

    from pipeline import config
    from pipeline.llm import CompletionRequest, make_provider

    c.configure(server.base_url, concurrency=C)
    provider = make_provider(config.provider_settings(c.PROVIDER))
    prompt = "TASK:DRAFT " + "Combine these concepts into one idea. " * 20

    async def calls(k: int) -> None:
        await asyncio.gather(*(provider.generate(CompletionRequest(prompt=prompt, model_slug="srv-a"))
                               for _ in range(k)))

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(calls(C))  # connections opened, as a running batch has them
        server.reset()
        cpu0, t0 = c.cpu_s(), time.perf_counter()
        loop.run_until_complete(calls(n))
        seconds, cpu = time.perf_counter() - t0, c.cpu_s() - cpu0
    finally:
        loop.run_until_complete(provider.aclose())
        loop.close()
    stats = server.stats()
    out = {"concurrency": C, "calls": n, "seconds": round(seconds, 2),
           "fraction_of_ideal": round(n / seconds / (C / latency), 3),
           "max_concurrency_seen": stats["max_concurrency_seen"], "cpu_ms_per_call": c.ms_per(cpu, n)}
    c.log(f"  model client alone, C={C}: {out['fraction_of_ideal']:.1%} of ideal, {out['cpu_ms_per_call']:.2f} ms CPU/call")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generations", type=int, default=3200)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--settings", default=DEFAULT_SETTINGS, help="C:workers[:batch_size],...")
    args = ap.parse_args(argv)
    settings = parse_settings(args.settings)
    replicates = 10
    concepts = max(1, -(-args.generations // replicates))

    c.quiet_luigi()
    started = time.perf_counter()
    tried: list[dict] = []
    with c.scratch_dir() as (base, fs), c.ServerProcess(latency=args.latency) as server:
        root = base / "data"
        c.make_catalogs(root, concepts)
        c.write_spec(root, c.spec_text(concepts, draft_replicate=replicates, essay="copy",
                                       evaluation_templates=("v-a",)))
        c.set_data_root(root)
        c.configure(server.base_url, concurrency=settings[0][0])
        c.compile_and_prepare()
        n = drafts_only(root)
        c.log(f"{n} drafts, server latency {args.latency} s, data root on {fs}")
        for C, workers, batch in settings:
            tried.append(one_setting(base, root, server, n, args.latency, C, workers, batch))
        clients = [model_client(server, min(n, 1600), args.latency, C) for C in sorted({s[0] for s in settings})]
    c.emit({
        "benchmark": "throughput",
        "data_root_fs": fs,
        "generations": n, "stage": "draft", "server_latency_s": args.latency, "server": "child process",
        "server_tcp_nodelay": c.SERVER_TCP_NODELAY, "build": "luigi.build([RunCohort]), local scheduler",
        "runs": tried,
        "model_client": clients,
        "limit_respected": all(r["max_concurrency_seen"] <= r["concurrency"] for r in tried),
        "total_s": round(time.perf_counter() - started, 1),
        "machine": c.machine(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
