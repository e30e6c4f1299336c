"""Compiling large cohorts: the ``confirm_above`` size check and ``--yes`` (daydream compile, daydream
run, the CompileCohort task), the compile progress bar, and the speed-ups changing no output byte."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from datafactory import SPEC, make_data_root, write

REPO = Path(__file__).resolve().parents[1]

# The datafactory spec with draft and evaluation replicates and two evaluation models: 12 drafts,
# 24 essays, 1920 evaluations, so every code path of a compile runs on many rows.
MEDIUM = (SPEC.replace("  draft_llm: [srv-a]\n", "  draft_llm: [srv-a]\n  draft_replicate: 4\n  evaluation_replicate: 20\n")
          .replace("evaluation_llm: [srv-b]", "evaluation_llm: [srv-a, srv-b]"))
SMALL_TOTAL = 3 + 6 + 12  # the datafactory spec: 3 drafts, 6 essays, 12 evaluations


def run_cli(root, *args, cfg=None, module=("pipeline.cli",)):
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(root))
    if cfg is not None:
        env["LUIGI_CONFIG_PATH"] = str(cfg)
    return subprocess.run([sys.executable, "-m", *module, *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def threshold_cfg(tmp_path, n) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "size.cfg"
    cfg.write_text(f"[daydream]\nconfirm_above = {n}\n")
    return cfg


def digest(root: Path) -> str:
    """Every file a compile writes (membership, manifest, metadata), with its path (not the
    empty lock file it takes)."""
    h = hashlib.sha256()
    for p in sorted(q for d in ("cohorts", "gens") for q in (root / d).rglob("*")
                    if q.is_file() and q.suffix not in (".yaml", ".lock")):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def file_times(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for d in ("cohorts", "gens") for p in (root / d).rglob("*") if p.is_file()}


# -- the size check ---------------------------------------------------------------------------------


def test_compile_above_threshold_needs_yes(tmp_path):
    root = make_data_root(tmp_path / "data", provider="offline")
    # 12 design rows fit under 15; the 21 generations they make do not (counted once planned)
    cfg = threshold_cfg(tmp_path, 15)
    r = run_cli(root, "compile", "t1", cfg=cfg)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error[cohort]: "), r.stderr
    assert f"{SMALL_TOTAL} generations" in lines[0] and "confirm_above = 15" in lines[0]
    assert f"writes {SMALL_TOTAL + 2} files" in lines[0] and f"{5 * SMALL_TOTAL} more" in lines[0]
    assert "--yes" in lines[0]
    assert not (root / "gens").exists() and not (root / "cohorts/t1/membership.csv").exists()

    r = run_cli(root, "compile", "t1", "--yes", cfg=cfg)
    assert r.returncode == 0, r.stderr
    assert f"files written: {SMALL_TOTAL + 2}" in r.stdout
    # compiled at that size already: no new confirmation, and nothing to write
    r = run_cli(root, "compile", "t1", cfg=cfg)
    assert r.returncode == 0 and "files written: 0" in r.stdout, r.stderr
    # growing it needs --yes again
    edit = root / "cohorts/t1/spec/config.yaml"
    edit.write_text(edit.read_text().replace("evaluation_llm: [srv-b]", "evaluation_llm: [srv-a, srv-b]"))
    r = run_cli(root, "compile", "t1", cfg=threshold_cfg(tmp_path / "c25", 25))
    assert r.returncode == 2 and f"{SMALL_TOTAL + 12} generations" in r.stderr
    # past the threshold in design rows as well (24 rows, more than the 21 generations compiled
    # before): refused on the row count, before any row is made
    r = run_cli(root, "compile", "t1", cfg=cfg)
    assert r.returncode == 2 and "its design has 24 rows" in r.stderr and "--yes" in r.stderr, r.stderr


def test_at_or_below_threshold_needs_nothing(tmp_path):
    root = make_data_root(tmp_path / "data", provider="offline")
    r = run_cli(root, "compile", "t1", cfg=threshold_cfg(tmp_path, SMALL_TOTAL))
    assert r.returncode == 0, r.stderr


def test_run_above_threshold_needs_yes(tmp_path):
    root = make_data_root(tmp_path / "data", provider="offline")
    r = run_cli(root, "run", "t1", cfg=threshold_cfg(tmp_path, 1))
    assert r.returncode == 2 and r.stderr.startswith("error[cohort]: ") and "--yes" in r.stderr, r.stderr
    assert not (root / "gens").exists()
    assert "--yes" in run_cli(root, "run", "--help").stdout


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_invalid_confirm_above(tmp_path, value):
    root = make_data_root(tmp_path / "data", provider="offline")
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(f"[daydream]\nconfirm_above = {value}\n")
    r = run_cli(root, "compile", "t1", cfg=cfg)
    assert r.returncode == 2 and r.stderr.startswith("error[config]") and "confirm_above" in r.stderr, r.stderr


def test_compile_cohort_task_takes_yes(tmp_path):
    root = make_data_root(tmp_path / "data", provider="offline")
    cfg = threshold_cfg(tmp_path, 5)
    luigi_cmd = ("luigi", "--module", "pipeline.tasks", "CompileCohort", "--cohort-id", "t1", "--local-scheduler", "--no-lock")
    r = run_cli(root, *luigi_cmd[1:], cfg=cfg, module=luigi_cmd[:1])
    assert "more than [daydream] confirm_above = 5" in r.stderr and "add --yes" in r.stderr, r.stderr
    assert not (root / "cohorts/t1/membership.csv").exists()
    r = run_cli(root, *luigi_cmd[1:], "--yes", cfg=cfg, module=luigi_cmd[:1])
    assert r.returncode == 0, r.stderr
    assert (root / "cohorts/t1/membership.csv").exists()


def test_run_cohort_passes_yes_to_compile(tmp_path):
    root = make_data_root(tmp_path / "data", provider="offline")
    cfg = threshold_cfg(tmp_path, 5)
    # --no-lock: Luigi refuses a command line that another test is running at the same moment
    luigi_cmd = ("luigi", "--module", "pipeline.tasks", "RunCohort", "--cohort-id", "t1", "--local-scheduler", "--no-lock")
    r = run_cli(root, *luigi_cmd[1:], cfg=cfg, module=luigi_cmd[:1])
    assert r.returncode != 0 and "add --yes" in r.stderr, r.stderr[-2000:]
    r = run_cli(root, *luigi_cmd[1:], "--yes", cfg=cfg, module=luigi_cmd[:1])
    assert r.returncode == 0, r.stderr[-2000:]
    assert (root / "site" / "build" / "index.html").exists()


def test_yes_is_not_significant():
    from pipeline.tasks import CompileCohort

    assert CompileCohort(cohort_id="t1", yes=True).task_id == CompileCohort(cohort_id="t1").task_id


# -- progress ---------------------------------------------------------------------------------------


def test_progress_only_when_asked(tmp_path):
    from pipeline.design.cohort import compile_cohort, terminal_progress
    from pipeline.store import DataPaths

    assert terminal_progress(stream=io.StringIO()) is None  # not a terminal: no bar
    root = make_data_root(tmp_path / "data", spec=MEDIUM, provider="offline")
    calls = []
    compile_cohort(DataPaths(root), "t1", progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (1956, 1956) and [d for d, _ in calls] == sorted(d for d, _ in calls)

    shown = io.StringIO()
    compile_cohort(DataPaths(root), "t1", progress=terminal_progress(force=True, min_total=100, stream=shown))
    assert "/1956" in shown.getvalue()
    quiet = io.StringIO()
    compile_cohort(DataPaths(root), "t1", progress=terminal_progress(force=True, stream=quiet))
    assert quiet.getvalue() == ""  # 1956 generations: too few for a bar by default


def test_compile_prints_nothing_on_stderr(tmp_path):
    root = make_data_root(tmp_path / "data", spec=MEDIUM, provider="offline")
    r = run_cli(root, "compile", "t1")
    assert r.returncode == 0 and r.stderr == ""


# -- output bytes -----------------------------------------------------------------------------------


def test_outputs_match_the_code_before_the_speedup(tmp_path):
    """Digests computed with the compile as it was before its speed-ups (fast metadata JSON,
    string paths, one read per file, memoised lineages, per-part sorting of the design)."""
    from pipeline.design.cohort import compile_cohort
    from pipeline.store import DataPaths

    root = make_data_root(tmp_path / "data", spec=MEDIUM)  # the catalog the digests were taken with
    write(root / "cohorts" / "t2" / "spec" / "config.yaml", SPEC)
    paths = DataPaths(root)
    _, written = compile_cohort(paths, "t1")
    assert written == {"metadata": 1956, "membership": 1, "manifest": 1}
    _, written = compile_cohort(paths, "t2")  # shares drafts and essays with t1
    assert written == {"metadata": 21, "membership": 1, "manifest": 1}
    assert digest(root) == "a3767a562c8a6fb3153d5afe2a060a746ecf9d28cbd925f56b6690abf9321038"
    before = file_times(root)
    _, written = compile_cohort(paths, "t1")
    assert written == {"metadata": 0, "membership": 0, "manifest": 0}
    assert file_times(root) == before
    write(root / "cohorts" / "t2" / "spec" / "config.yaml", SPEC.replace("[v-nine, v-ten]", "[v-nine]"))
    _, written = compile_cohort(paths, "t2")  # drops t2 from six evaluations' cohorts
    assert written == {"metadata": 6, "membership": 1, "manifest": 1}
    assert digest(root) == "b551150bc96c47eb53db94fcf2b493fea3d7e79a962c0de168fa07c83dcfca65"


# -- guards before work: a design of ten million rows ------------------------------------------------

HUGE = SPEC.replace("  draft_llm: [srv-a]\n",
                    "  draft_llm: [srv-a]\n  draft_replicate: 100\n  essay_replicate: 100\n  evaluation_replicate: 83\n")
HUGE_ROWS = 3 * 2 * 2 * 100 * 100 * 83  # combos x essay modes x rubrics x replicates: 9,960,000


def _bounded(limit_bytes: int):
    """A child's address space capped: materialising ten million rows could not fit in it."""
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    return cap


def test_huge_design_is_refused_before_any_row_is_made(tmp_path):
    root = make_data_root(tmp_path / "data", spec=HUGE, provider="offline")
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(root))
    for command in ("compile", "run", "estimate"):
        r = subprocess.run([sys.executable, "-m", "pipeline.cli", command, "t1"], capture_output=True, text=True,
                           env=env, cwd=REPO, timeout=60, preexec_fn=_bounded(1 << 30))
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error[cohort]: "), r.stderr
        assert f"its design has {HUGE_ROWS:,} rows" in lines[0] and "--yes" in lines[0]
        assert not (root / "gens").exists() and not (root / "cohorts/t1/membership.csv").exists()


def test_design_limit_streams(tmp_path):
    import time

    from pipeline.design.spec import compile_design, count_design, load_spec, stream_design

    root = make_data_root(tmp_path / "data", spec=HUGE, provider="offline")
    spec_path = root / "cohorts/t1/spec/config.yaml"
    assert count_design(load_spec(spec_path)) == HUGE_ROWS
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "design", str(spec_path), "--limit", "5"],
                       capture_output=True, text=True, cwd=REPO, timeout=60, preexec_fn=_bounded(1 << 30))
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - start < 10
    lines = r.stdout.splitlines()
    assert len(lines) == 6 and lines[0].startswith("combo_id,")
    # the streamed rows are the compiled ones, in the same order (a small spec)
    small = load_spec(make_data_root(tmp_path / "small", spec=MEDIUM) / "cohorts/t1/spec/config.yaml")
    assert list(stream_design(small).rows) == compile_design(small).rows
    assert count_design(small) == len(compile_design(small).rows)


# -- cohort lists: merged under a lock ----------------------------------------------------------------

def _compile_in_child(root: str, cohort: str, go) -> None:
    from pipeline.design.cohort import compile_cohort
    from pipeline.store import DataPaths

    go.wait()
    compile_cohort(DataPaths(Path(root)), cohort)


@pytest.mark.slow
def test_cohorts_compiled_at_once_both_stay_in_every_shared_generation(tmp_path):
    """Two cohorts over the same generations compiled at the same moment by two processes: each
    generation's ``cohorts`` list ends up holding both (a read-modify-write without the lock
    loses one of them in some files)."""
    import multiprocessing

    spec = SPEC.replace("  draft_llm: [srv-a]\n", "  draft_llm: [srv-a]\n  evaluation_replicate: 10\n")
    ctx = multiprocessing.get_context("fork")
    for attempt in range(3):
        root = make_data_root(tmp_path / f"data{attempt}", spec=spec)
        write(root / "cohorts" / "t2" / "spec" / "config.yaml", spec)
        go = ctx.Event()
        procs = [ctx.Process(target=_compile_in_child, args=(str(root), c, go)) for c in ("t1", "t2")]
        for p in procs:
            p.start()
        go.set()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        lists = [json.loads(p.read_text())["cohorts"] for p in (root / "gens").rglob("metadata.json")]
        assert len(lists) == 3 + 6 + 120 and all(c == ["t1", "t2"] for c in lists), attempt
