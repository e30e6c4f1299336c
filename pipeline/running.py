"""Running a cohort from the CLI: compile with clean errors, check keys, hand Luigi the work,
then say what happened (counts, failures with their reasons) from the persisted files."""

from __future__ import annotations

import logging
import sys
from collections import Counter

import luigi

from . import config
from .cohort import compile_cohort, read_membership
from .store import read_json

log = logging.getLogger("pipeline.running")


def _progress(total: int):
    """A progress bar fed by Luigi's task events (in-process workers)."""
    from tqdm import tqdm

    from .tasks import _Generation

    bar = tqdm(total=total, unit="gen", desc="generations", file=sys.stderr, disable=total == 0)

    @_Generation.event_handler(luigi.Event.SUCCESS)
    def _ok(task):
        bar.update(1)

    @_Generation.event_handler(luigi.Event.FAILURE)
    def _failed(task, exc):
        bar.update(1)
        bar.set_postfix(failed=bar.postfix or "")

    return bar


def run_cohort(cohort_id: str, *, workers: int = 1, local_scheduler: bool = True,
               scheduler_url: str | None = None, verbose: bool = False) -> int:
    from .tasks import ReportSite, RunCohort, check_keys_for, generation_tasks

    paths = config.data_paths()
    plan, _ = compile_cohort(paths, cohort_id)
    tasks = generation_tasks(cohort_id)
    check_keys_for(tasks)
    config.sync_resources({runtime_model.provider for runtime_model in _models(plan)})
    todo = sum(1 for t in tasks if not t.complete())
    print(f"cohort {cohort_id}: {len(tasks)} generations, {todo} to run", file=sys.stderr)
    bar = _progress(todo) if workers == 1 else None
    kwargs = dict(workers=workers, detailed_summary=True, log_level="DEBUG" if verbose else "WARNING")
    if local_scheduler:
        kwargs["local_scheduler"] = True
    elif scheduler_url:
        kwargs["scheduler_url"] = scheduler_url
    result = luigi.build([RunCohort(cohort_id=cohort_id)], **kwargs)
    if bar is not None:
        bar.close()
    ok = result.status.name in ("SUCCESS", "SUCCESS_WITH_RETRY")
    if not ok:
        # Reports and the site still show what exists, failures included.
        luigi.build([ReportSite()], **kwargs)
    code = print_status(cohort_id)
    return 0 if ok and code == 0 else 1


def _models(plan):
    from .stages import runtime

    catalog = runtime().catalog
    return [catalog.models[g.llm_model_id] for g in plan.all() if g.llm_model_id]


def cohort_status(cohort_id: str) -> dict:
    """Counts per stage, failure reasons, tokens and cost, from persisted files only."""
    paths = config.data_paths()
    stages = {s: Counter() for s in ("draft", "essay", "evaluation")}
    reasons: Counter = Counter()
    tokens = {"prompt": 0, "completion": 0}
    cost = 0.0
    simulated = False
    for row in read_membership(paths, cohort_id):
        stage, gid = row["stage"], row["gen_id"]
        pm = read_json(paths.gen_file(stage, gid, "parsed_metadata.json"))
        rm = read_json(paths.gen_file(stage, gid, "raw_metadata.json")) or {}
        if pm and pm.get("success"):
            stages[stage]["done"] += 1
        elif pm:
            stages[stage]["failed"] += 1
            reasons[(stage, str(pm.get("error")).split("\n")[0][:120])] += 1
        else:
            stages[stage]["pending"] += 1
        tokens["prompt"] += rm.get("prompt_tokens") or 0
        tokens["completion"] += rm.get("completion_tokens") or 0
        cost += rm.get("cost_usd") or 0.0
        simulated |= bool(rm.get("simulated"))
    return {"stages": stages, "reasons": reasons, "tokens": tokens, "cost_usd": cost, "simulated": simulated}


def print_status(cohort_id: str) -> int:
    """Print the status table; exit status 1 if anything failed or is pending."""
    st = cohort_status(cohort_id)
    print(f"cohort {cohort_id}" + ("  (simulated output: offline provider)" if st["simulated"] else ""))
    print(f"  {'stage':<11}{'done':>7}{'failed':>8}{'pending':>9}")
    for stage, c in st["stages"].items():
        print(f"  {stage:<11}{c['done']:>7}{c['failed']:>8}{c['pending']:>9}")
    print(f"  tokens: {st['tokens']['prompt']:,} prompt, {st['tokens']['completion']:,} completion; "
          f"cost: ${st['cost_usd']:.4f}")
    if st["reasons"]:
        print("  failures:")
        for (stage, reason), n in st["reasons"].most_common(20):
            print(f"    {n:>4} × {stage}: {reason}")
    bad = any(c["failed"] or c["pending"] for c in st["stages"].values())
    return 1 if bad else 0
