"""Benchmark: whole cohorts through the ``luigi`` command, with the data root on tmpfs and on a
disk: the call slots kept busy, the wall time, and the pipeline's CPU per generation.

    .venv/bin/python bench/cohort.py [--modes drafts,cohort,lognormal-64,lognormal-256]
        [--roots disk|tmpfs,disk] [--full] [--workers 1]
        [--generations N] [--latency S] [--sigma X] [--concurrency C]   # override every mode's

Modes (issue 26's goal table), each run once per data root:

* ``drafts``: 2,304 independent drafts, 200 ms fixed latency, C = 64 (compiled beforehand with
  copy essays and one rubric, then the membership cut to its drafts: no call waits on another);
* ``cohort``: 2,880 model calls, 200 ms fixed, C = 64: per concept one draft, one LLM essay and
  two evaluations, so three quarters of the calls wait on a parent;
* ``lognormal-64`` / ``lognormal-256``: the same shape with heavy-tailed latency (lognormal,
  median 1 s, σ 0.8: mean 1.38 s, 1 call in 100 over 6.4 s; ``tests/llm_server.py``, each
  request's draw fixed by the request, so runs wait the same) at C = 64 (1,152 calls) and
  C = 256 (2,304); ``--full`` runs 5,760 and 23,040, sizes at which a runner with no overhead
  keeps over 90 % of the slots busy (``busy_zero_overhead``: 96 % and 91 %; about 150 s and 200 s
  per root).

Each run is the user's command, ``luigi --module pipeline.tasks RunCohort --cohort-id bench
--local-scheduler --workers N`` (through ``bench/luigi_phases.py``: the same ``luigi_run`` with a
probe at the start of the reports), in a fresh data root, against the test server in a child
process; ``[llm.testsrv] concurrency`` = ``[resources] llm_testsrv`` = C. Per run:

* ``busy``: the share of the C call slots in use from the first request to the last answer (the
  latencies the server waited, summed, over C × that window); ``busy_before_drain``: the same up
  to the last request, leaving out the drain (``drain_s``, from the last request to the last
  answer), when fewer calls are left than slots: with heavy-tailed latency and three stages a
  lineage, a small cohort's drain is a large share of its window; ``busy_zero_overhead``: what
  a runner with no overhead at all keeps busy on the same workload (``bench/ideal.py``: mean,
  lowest and highest over 20 latency draws), the ceiling ``busy`` is read against;
* ``seconds``: the whole command; ``generations_s``: from its start to its reports' start;
* ``cpu_ms_per_generation``: the command's CPU (it, its executor process and any process it
  forked) from its start, interpreter start-up and compile included, to the moment its reports
  begin, per generation: the whole pipeline's cost of a generation, reports and site excluded;
  ``..._luigi_process``: of it, the command's own process (Luigi, the tasks, compiling);
  ``..._executor``: its children (the executor's process: the calls and the store writes);
  ``..._kernel``: the kernel's share of the whole (system time: on a disk, mostly the store's
  file creations and syncs);
  ``cpu_ms_per_generation_with_reports``: the whole command's; ``reports_site_cpu_s``: the
  difference;
* ``data_root_fs``: ``tmpfs`` (/dev/shm) or ``disk`` (the system's temporary directory), where
  every store write is fsynced.

Prints one JSON object; progress on stderr. By default every mode runs on the disk, where users
keep their data (about two and a half minutes here: each lognormal run ~35 s, the calls' 1.4 s
mean latency); ``--roots tmpfs,disk`` runs each on tmpfs as well, twice as long.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402
from ideal import ideal_busy  # noqa: E402

ROOTS = {"tmpfs": "/dev/shm", "disk": tempfile.gettempdir()}
# generations (default, --full), median latency s, σ of its log, C
MODES = {
    "drafts": {"shape": "drafts", "generations": (2304, 2304), "latency": 0.2, "sigma": 0.0, "concurrency": 64},
    "cohort": {"shape": "cohort", "generations": (2880, 2880), "latency": 0.2, "sigma": 0.0, "concurrency": 64},
    "lognormal-64": {"shape": "cohort", "generations": (1152, 5760), "latency": 1.0, "sigma": 0.8, "concurrency": 64},
    "lognormal-256": {"shape": "cohort", "generations": (2304, 23040), "latency": 1.0, "sigma": 0.8,
                      "concurrency": 256},
}
DRAFT_REPLICATES = 8
PROBE = Path(__file__).resolve().parent / "luigi_phases.py"


def drafts_root(base: Path, generations: int) -> tuple[Path, dict]:
    """A data root whose compiled cohort is ``generations`` independent drafts (concepts ×
    replicates): compiled here, then its membership cut to its drafts (the manifest, hence
    ``CompileCohort``, still matches)."""
    from pipeline import config
    from pipeline.design.cohort import MEMBERSHIP_COLUMNS, compile_cohort
    from pipeline.store import atomic_write_csv, read_csv_rows

    root = base / "data"
    concepts = max(1, -(-generations // DRAFT_REPLICATES))
    c.make_catalogs(root, concepts)
    c.write_spec(root, c.spec_text(concepts, draft_replicate=DRAFT_REPLICATES, essay="copy",
                                   evaluation_templates=("v-a",)))
    c.set_data_root(root)
    paths = config.data_paths()
    compile_cohort(paths, c.COHORT)
    rows = [r for r in read_csv_rows(paths.membership_csv(c.COHORT)) if r["stage"] == "draft"][:generations]
    atomic_write_csv(paths.membership_csv(c.COHORT), MEMBERSHIP_COLUMNS, rows)
    return root, {"draft": len(rows), "total": len(rows)}


def run_once(mode: str, where: str, generations: int, latency: float, sigma: float, concurrency: int,
             workers: int, base: Path) -> dict:
    if MODES[mode]["shape"] == "drafts":
        root, counts = drafts_root(base, generations)
    else:
        root, counts = c.sized_root(base, generations)
    speed = c.speed_index()
    with c.ServerProcess(latency, sigma=sigma) as server:
        cfg = c.write_luigi_cfg(base / "bench.cfg", server.base_url, concurrency=concurrency)
        c.log(f"{mode} on {where}: {counts['total']} generations, C = {concurrency}, latency {latency} s"
              + (f" lognormal σ {sigma}" if sigma else "") + f", workers = {workers}")
        phases = base / "phases.json"
        cmd = [sys.executable, str(PROBE), *c.luigi_command(workers)[1:]]
        os.environ["DAYDREAM_BENCH_PHASES"] = str(phases)
        try:
            started_at = time.time()
            out = c.run_command(cmd, cfg, root)
        finally:
            del os.environ["DAYDREAM_BENCH_PHASES"]
        stats = server.stats()
    if out["returncode"] != 0:
        raise SystemExit(f"{mode} on {where}: the command failed ({out['returncode']}):\n{out['stderr_tail']}")
    probe = json.loads(phases.read_text())
    n = counts["total"]
    window = stats["last_response_at"] - stats["first_request_at"]
    run = {"mode": mode, "data_root_fs": where, "generations": n, "calls": stats["requests"],
           "concurrency": concurrency, "latency_s": latency, "latency_sigma": sigma,
           "max_concurrency_seen": stats["max_concurrency_seen"], "window_s": round(window, 2),
           "busy": round(stats["latency_served_s"] / (concurrency * window), 3),
           "busy_before_drain": round(stats["latency_before_last_request_s"] / (concurrency * (
               stats["last_request_at"] - stats["first_request_at"])), 3),
           "drain_s": round(stats["last_response_at"] - stats["last_request_at"], 2),
           "busy_zero_overhead": ideal_busy(counts, concurrency, latency, sigma),
           "seconds": round(out["seconds"], 2),
           "generations_s": round(probe["reports_start_at"] - started_at, 2),
           "cpu_ms_per_generation": round(1000 * probe["cpu_s"] / n, 2),
           "cpu_ms_per_generation_luigi_process": round(1000 * probe["main_cpu_s"] / n, 2),
           "cpu_ms_per_generation_executor": round(1000 * probe["children_cpu_s"] / n, 2),
           "cpu_ms_per_generation_kernel": round(1000 * probe["kernel_cpu_s"] / n, 2),
           "cpu_ms_per_generation_with_reports": round(1000 * out["cpu_s"] / n, 2),
           "reports_site_cpu_s": round(out["cpu_s"] - probe["cpu_s"], 2),
           "speed_before": speed, "speed_after": c.speed_index()}
    c.log(f"  busy {run['busy']:.1%} ({run['busy_before_drain']:.1%} before a {run['drain_s']} s drain; "
          f"with no overhead at all {run['busy_zero_overhead']['mean']:.1%}), "
          f"{run['seconds']} s ({run['generations_s']} s to the reports), "
          f"CPU {run['cpu_ms_per_generation']} ms/gen ({run['cpu_ms_per_generation_kernel']} in the kernel; "
          f"{run['cpu_ms_per_generation_with_reports']} with reports); machine speed index before/after: "
          f"{speed['python_loop_us']}/{run['speed_after']['python_loop_us']} µs a loop")
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated: {', '.join(MODES)}")
    p.add_argument("--roots", default="disk", help="comma-separated: tmpfs, disk")
    p.add_argument("--full", action="store_true", help="the lognormal modes at their larger sizes")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--generations", type=int, help="override every mode's size")
    p.add_argument("--latency", type=float, help="override every mode's (median) latency, seconds")
    p.add_argument("--sigma", type=float, help="override every mode's σ (0: fixed latency)")
    p.add_argument("--concurrency", type=int, help="override every mode's C")
    a = p.parse_args()
    modes, roots = a.modes.split(","), a.roots.split(",")
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"unknown mode {m!r}: {', '.join(MODES)}")
    for r in roots:
        if r not in ROOTS:
            raise SystemExit(f"unknown root {r!r}: {', '.join(ROOTS)}")
    c.cache_bytecode()
    started = time.perf_counter()
    runs, bases = [], []
    try:
        for m in modes:
            spec = MODES[m]
            for where in roots:
                bases.append(Path(tempfile.mkdtemp(prefix="daydream-bench-cohort-", dir=ROOTS[where])))
                runs.append(run_once(
                    m, where,
                    a.generations or spec["generations"][1 if a.full else 0],
                    spec["latency"] if a.latency is None else a.latency,
                    spec["sigma"] if a.sigma is None else a.sigma,
                    a.concurrency or spec["concurrency"], a.workers, bases[-1]))
    finally:
        # Only once every run is over: on ext4 without a journal, creating files where many were
        # deleted in the last minutes makes the kernel skip each recently freed inode, which
        # would bill one run's clean-up to the next run's CPU.
        for base in bases:
            shutil.rmtree(base, ignore_errors=True)
    c.emit({"benchmark": "cohort", "machine": c.machine(), "workers": a.workers, "full": a.full, "runs": runs,
            "total_s": round(time.perf_counter() - started, 1)})


if __name__ == "__main__":
    main()
