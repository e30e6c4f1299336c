"""Benchmark: achieved model concurrency against a server with real latency.

    .venv/bin/python bench/throughput.py [--generations 2000] [--latency 0.2]
        [--settings 16:16:1:500,64:64:1:500,...]   # C:batch_size:workers:chunk_size

2,000 independent generations (drafts: concepts × draft_replicate, no dependencies) go through
``pipeline.running.drive`` against the test server (child process, ``--latency`` seconds per
request) with the provider's concurrency limit C ([llm.testsrv] concurrency = [resources]
llm_testsrv = C). For each setting: achieved throughput (generations/s), its fraction of the ideal
C / latency, and the server's ``max_concurrency_seen``, which must never exceed C (the benchmark
fails if it does). The best setting per C is reported with everything tried.

How the drafts-only cohort is made: the spec needs essays and evaluations (copy-mode essays and
one rubric here), so after compiling, the cohort's ``membership.csv`` is cut to its drafts;
``drive`` runs exactly the membership. Between settings the drafts' outputs are deleted (their
seeded metadata stays), so every setting makes all 2,000 model calls.

Runs in ~110 s on 2 cores with the default settings (C=16 alone needs 25 s per setting). Prints one JSON object; progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

# (C, batch_size, workers, chunk_size), chosen from a wider sweep (see bench/README.md). A batch
# holds min(batch_size, C) units of the provider's resource and runs that many threads, so:
#   batch_size = C, 1 worker: one batch at a time, all its calls start and end together;
#   batch_size > C, 1 worker: C threads stream through the batch (a new call as one finishes);
#   batch_size = C/4, 4 workers: four batches at once, each in its own forked process.
DEFAULT_SETTINGS = "16:250:1:500,64:500:1:500,64:16:4:500"
OUTPUT_FILES = ("prompt.txt", "raw.txt", "raw_metadata.json", "parsed.txt", "parsed_metadata.json")


def parse_settings(text: str) -> list[tuple[int, int, int, int]]:
    out = []
    for item in text.split(","):
        parts = [int(x) for x in item.split(":")]
        if len(parts) != 4 or min(parts) < 1:
            raise SystemExit(f"bad setting {item!r}: expected C:batch_size:workers:chunk_size")
        out.append(tuple(parts))
    return out


def drafts_only(root: Path) -> int:
    """Cut the compiled cohort's membership to its drafts; returns how many remain."""
    from pipeline.store import DataPaths, atomic_write_csv, read_csv_rows
    from pipeline.cohort import MEMBERSHIP_COLUMNS

    path = DataPaths(root).membership_csv(c.COHORT)
    rows = [r for r in read_csv_rows(path) if r["stage"] == "draft"]
    atomic_write_csv(path, MEMBERSHIP_COLUMNS, rows)
    return len(rows)


def clear_outputs(root: Path) -> None:
    for d in (root / "gens" / "draft").iterdir():
        for name in OUTPUT_FILES:
            (d / name).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generations", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--settings", default=DEFAULT_SETTINGS, help="C:batch_size:workers:chunk_size,...")
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
        c.configure(server.base_url, concurrency=settings[0][0], batch_size=settings[0][1])
        c.compile_and_prepare()
        n = drafts_only(root)
        c.log(f"{n} drafts, server latency {args.latency} s, data root on {fs}")
        for C, batch, workers, chunk in settings:
            clear_outputs(root)
            c.configure(server.base_url, concurrency=C, batch_size=batch, chunk_size=chunk)
            c.reset_state()
            from pipeline.tasks import generation_tasks, prepare_providers

            prepare_providers(generation_tasks(c.COHORT))
            server.reset()
            seconds, result = c.drive_generations(workers)
            c.check_all_done(result, n)
            stats = server.stats()
            ideal = C / args.latency
            rate = n / seconds
            run = {"concurrency": C, "batch_size": batch, "workers": workers, "chunk_size": chunk,
                   "generations": n, "seconds": round(seconds, 2), "gens_per_s": round(rate, 1),
                   "ideal_gens_per_s": round(ideal, 1), "fraction_of_ideal": round(rate / ideal, 3),
                   "max_concurrency_seen": stats["max_concurrency_seen"], "model_requests": stats["requests"]}
            tried.append(run)
            c.log(f"  C={C:<3} batch={batch:<3} workers={workers} chunk={chunk:<5}: {seconds:6.2f} s, "
                  f"{rate:6.1f} gens/s = {rate / ideal:.0%} of ideal, max in flight {stats['max_concurrency_seen']}")
            if stats["max_concurrency_seen"] > C:
                raise SystemExit(f"concurrency limit exceeded: {stats['max_concurrency_seen']} calls in flight > C={C}")
    best = {}
    for run in tried:
        key = str(run["concurrency"])
        if key not in best or run["gens_per_s"] > best[key]["gens_per_s"]:
            best[key] = run
    c.emit({
        "benchmark": "throughput",
        "data_root_fs": fs,
        "generations": n, "stage": "draft", "server_latency_s": args.latency, "server": "child process",
        "server_tcp_nodelay": c.SERVER_TCP_NODELAY,
        "best": best,
        "tried": tried,
        "limit_respected": all(r["max_concurrency_seen"] <= r["concurrency"] for r in tried),
        "total_s": round(time.perf_counter() - started, 1),
        "machine": c.machine(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
