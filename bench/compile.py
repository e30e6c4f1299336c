"""Benchmark: compiling a 100,000-row spec into membership and seeded metadata.

    .venv/bin/python bench/compile.py [--rows 100000]

The spec: k=1 combos over R/80 concepts × one draft template and model × an LLM essay × two
rubrics × four evaluation models × evaluation_replicate 10, i.e. 80 design rows (one evaluation
each) per draft. Times ``pipeline.design.cohort.compile_cohort`` on a fresh data root (every metadata.json
written) and again unchanged (must write 0 files; the benchmark fails otherwise), plus the pure
design step (``load_spec`` + ``compile_design``) on its own. Also counts how often a stored
metadata.json is read (``cohort._stored_metadata``) per compile.

Runs in ~35 s on 2 cores (tmpfs). Prints one JSON object; progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

EVAL_MODELS = c.MODELS  # four
EVAL_REPLICATES = 10
ROWS_PER_DRAFT = 2 * len(EVAL_MODELS) * EVAL_REPLICATES  # two rubrics


class ReadCounter:
    """Counts ``pipeline.design.cohort._stored_metadata`` calls (stored metadata.json reads) while installed."""

    def __init__(self):
        self.calls = 0

    def __enter__(self):
        from pipeline.design import cohort

        self._original = cohort._stored_metadata

        def counted(*args, **kwargs):
            self.calls += 1
            return self._original(*args, **kwargs)

        cohort._stored_metadata = counted
        return self

    def __exit__(self, *exc):
        from pipeline.design import cohort

        cohort._stored_metadata = self._original


def compile_once(paths) -> tuple[float, dict, dict, int]:
    from pipeline.design.cohort import compile_cohort

    with ReadCounter() as reads:
        t0 = time.perf_counter()
        plan, written = compile_cohort(paths, c.COHORT)
        seconds = time.perf_counter() - t0
    return seconds, written, {s: len(g) for s, g in plan.generations.items()}, reads.calls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args(argv)
    concepts = max(1, -(-args.rows // ROWS_PER_DRAFT))

    started = time.perf_counter()
    with c.scratch_dir() as (base, fs):
        root = base / "data"
        c.make_catalogs(root, concepts)
        spec_path = c.write_spec(root, c.spec_text(concepts, evaluation_llm=EVAL_MODELS,
                                                   evaluation_replicate=EVAL_REPLICATES))
        c.set_data_root(root)
        from pipeline import config
        from pipeline.design.spec import compile_design, load_spec

        paths = config.data_paths()
        t0 = time.perf_counter()
        design = compile_design(load_spec(spec_path))
        design_s = time.perf_counter() - t0
        rows = len(design.rows)
        del design
        c.log(f"{rows} design rows in {design_s:.2f} s; compiling (data root on {fs})")

        first_s, first_written, per_stage, first_reads = compile_once(paths)
        c.log(f"first compile: {first_s:.2f} s, written {first_written}")
        again_s, again_written, _, again_reads = compile_once(paths)
        c.log(f"unchanged recompile: {again_s:.2f} s, written {again_written}")
        if sum(again_written.values()):
            raise SystemExit(f"an unchanged recompile wrote files: {again_written}")
        membership_mb = paths.membership_csv(c.COHORT).stat().st_size / 2**20

    generations = sum(per_stage.values())
    c.emit({
        "benchmark": "compile",
        "data_root_fs": fs,
        "rows": rows,
        "generations": per_stage, "generations_total": generations,
        "design_s": round(design_s, 2),
        "first_compile": {"seconds": round(first_s, 2), "files_written": first_written,
                          "files_written_total": sum(first_written.values()),
                          "us_per_row": round(1e6 * first_s / rows, 1), "metadata_reads": first_reads},
        "unchanged_recompile": {"seconds": round(again_s, 2), "files_written": again_written,
                                "files_written_total": sum(again_written.values()),
                                "us_per_row": round(1e6 * again_s / rows, 1), "metadata_reads": again_reads},
        "membership_csv_mb": round(membership_mb, 1),
        "total_s": round(time.perf_counter() - started, 1),
        "machine": c.machine(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
