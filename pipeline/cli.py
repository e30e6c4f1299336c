"""The ``daydream`` command: design, compile, estimate, run, report, status, check, invalidate, reparse, purge.

Conventions: ``--help`` everywhere; errors on stderr as ``error[<code>]: <message>`` with exit
status 2 for user mistakes; exit 1 when work ran but some of it failed; 3 when a run stopped at
its spend cap; 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.errors import DaydreamError
from pipeline.store import STAGES

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _out(text: str, out: str | None) -> None:
    if out:
        from pipeline.store import atomic_write_text

        atomic_write_text(Path(out), text)
    else:
        sys.stdout.write(text)


def cmd_design(args) -> int:
    from pipeline.design.spec import format_design, load_spec, stream_design

    # streamed: with --limit (and no --seed) only the first rows are ever made
    design = stream_design(load_spec(Path(args.spec)))
    _out(format_design(design, fmt=args.format, seed=args.seed, limit=args.limit), args.out)
    return EXIT_OK


def cmd_compile(args) -> int:
    from pipeline import config
    from pipeline.design.cohort import compile_cohort, terminal_progress

    plan, written = compile_cohort(config.data_paths(), args.cohort_id,
                                   confirm_above=None if args.yes else config.confirm_above(),
                                   progress=terminal_progress())
    counts = ", ".join(f"{len(g)} {s}s" for s, g in plan.generations.items())
    print(f"cohort {args.cohort_id}: {counts}; files written: {sum(written.values())}")
    return EXIT_OK


def cmd_run(args) -> int:
    from pipeline.run.running import run_cohort

    _report_task_failures()
    return run_cohort(args.cohort_id, workers=args.workers, local_scheduler=not args.scheduler,
                      scheduler_url=args.scheduler_url, verbose=args.verbose, yes=args.yes, max_cost=args.max_cost,
                      batch=args.batch)


def cmd_estimate(args) -> int:
    import json

    from pipeline import config
    from pipeline.store import spend
    from pipeline.design.cohort import compile_cohort
    from pipeline.run.estimate import estimate

    paths = config.data_paths()
    if args.batch:
        config.force_batch()
    compile_cohort(paths, args.cohort_id, confirm_above=None if args.yes else config.confirm_above())
    rows = estimate(paths, args.cohort_id)
    if args.json:
        print(json.dumps({"cohort_id": args.cohort_id, "rows": rows}, indent=2))
    else:
        sys.stdout.write(spend.format_estimate(args.cohort_id, rows))
    return EXIT_OK


def cmd_status(args) -> int:
    from pipeline import config
    from pipeline.design.cohort import require_known_cohort
    from pipeline.run.running import print_status

    require_known_cohort(config.data_paths(), args.cohort_id)
    return print_status(args.cohort_id)


def _check_known(value: str | None, known, what: str, where) -> None:
    """An id given on the command line that names nothing is an error, never a silent no-op."""
    import difflib

    if value is None or value in known:
        return
    close = difflib.get_close_matches(value, sorted(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(known)[:10]) or 'none'}"
    raise DaydreamError("config", f"unknown {what} {value!r}{hint}", path=where)


def cmd_invalidate(args) -> int:
    from pipeline import config
    from pipeline.design.catalog import load_catalog
    from pipeline.design.cohort import require_known_cohort
    from pipeline.ops.maintenance import cohorts_touched, invalidate

    if not (args.stage or args.template or args.model or args.gen_id):
        raise DaydreamError("config", "invalidate needs at least one of --stage, --template, --model, --gen-id")
    paths = config.data_paths()
    if args.cohort:
        require_known_cohort(paths, args.cohort)
    catalog = load_catalog(paths)
    _check_known(args.model, catalog.models, "model", paths.catalog_csv("llm_models.csv"))
    _check_known(args.template, {t for stage in catalog.templates.values() for t in stage}, "template",
                 paths.raw / "templates")
    for gen_id in args.gen_id or []:
        if not any(paths.gen_dir(stage, gen_id).is_dir() for stage in STAGES):
            raise DaydreamError("config", f"unknown gen_id {gen_id!r}: not in the gens store", path=paths.gens)
    removed = invalidate(paths, cohort_id=args.cohort, stage=args.stage, template_id=args.template,
                         model_id=args.model, gen_ids=args.gen_id or [], dry_run=args.dry_run)
    verb = "would invalidate" if args.dry_run else "invalidated"
    by_stage = {}
    for stage, _ in removed:
        by_stage[stage] = by_stage.get(stage, 0) + 1
    print(f"{verb} {len(removed)} generations (with descendants): "
          + (", ".join(f"{n} {s}" for s, n in by_stage.items()) or "none"))
    # a descendant may belong to other cohorts (or to another one only): say which
    others = {c: n for c, n in cohorts_touched(paths, removed).items() if c != args.cohort}
    if others:
        label = "in other cohorts too" if args.cohort else "in cohorts"
        print(f"  {label}: " + "; ".join(
            f"{c} ({', '.join(f'{k} {s}' for s, k in n.items())})" for c, n in sorted(others.items())))
    if args.list:
        for stage, gid in removed:
            print(f"{stage}\t{gid}")
    return EXIT_OK


def _build_local(tasks) -> bool:
    """Build ``tasks`` with a local scheduler; a task that failed for a reason the user can act
    on (a full disk, say) raises its error."""
    import luigi

    from pipeline.run.running import build_error

    _report_task_failures()
    result = luigi.build(tasks, local_scheduler=True, no_lock=True, log_level="CRITICAL", detailed_summary=True)
    error = build_error(result)
    if error is not None:
        raise error
    return result.scheduling_succeeded


def cmd_report(args) -> int:
    from pipeline import config
    from pipeline.design.cohort import compile_cohort
    from pipeline.tasks import CohortReports

    paths = config.data_paths()
    compile_cohort(paths, args.cohort_id)
    if not _build_local([CohortReports(cohort_id=args.cohort_id)]):
        raise DaydreamError("report", f"building the reports of {args.cohort_id!r} failed (run with luigi for the log)")
    print(f"reports of {args.cohort_id}: {paths.reports_dir(args.cohort_id)}")
    return EXIT_OK


def cmd_site(args) -> int:
    from pipeline import config
    from pipeline.tasks import ReportSite

    paths = config.data_paths()
    if not _build_local([ReportSite()]):
        raise DaydreamError("site", "building the report site failed (run with luigi for the log)")
    print(f"report site: {paths.site_dir / 'build' / 'index.html'}")
    return EXIT_OK


def cmd_ratings_import(args) -> int:
    from pipeline import config
    from pipeline.ops.ratings import import_ratings

    out = import_ratings(config.data_paths(), args.file, args.rater)
    print(f"imported {out['ratings']} ratings by human:{args.rater} into {', '.join(out['cohorts'])}; "
          f"rebuild the reports (`daydream report COHORT`) and the site (`daydream site`) to see them")
    return EXIT_OK


def cmd_preview(args) -> int:
    from pipeline import config
    from pipeline.sitegen import serve

    if not 0 <= args.port <= 65535:
        raise DaydreamError("config", f"--port {args.port} is not a port number (0–65535; 0 picks a free one)")
    paths = config.data_paths()
    build = paths.site_dir / "build"
    import threading

    server, url = serve(build, port=args.port, live=paths)  # serves from a daemon thread
    if (build / "index.html").exists():
        print(f"serving {build} at {url}  (127.0.0.1 only; Ctrl-C to stop)", flush=True)
    else:
        print(f"no built site yet (`daydream run COHORT` or `daydream site` builds it); serving the live run "
              f"view at {url}  (127.0.0.1 only; Ctrl-C to stop)", flush=True)
    print(f"live run view: {url}live.html", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return EXIT_OK


def cmd_check(args) -> int:
    from collections import Counter

    from pipeline import config
    from pipeline.ops.maintenance import check_store

    problems, counts = check_store(config.data_paths(), args.cohort_id)
    kinds = Counter(p.kind for p in problems)
    scope = f"cohort {args.cohort_id}" if args.cohort_id else "gens store"
    print(f"{scope}: {counts['checked']} generations checked, {counts['done']} complete, "
          f"{counts['pending']} pending, {len(problems)} problems"
          + (": " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) if problems else ""))
    if args.list:
        for p in problems:
            print(f"{p.kind}\t{p.stage}\t{p.gen_id}\t{p.detail}")
    elif problems:
        print("(use --list to see each problem)")
    return EXIT_FAILED if problems else EXIT_OK


def cmd_purge(args) -> int:
    from pipeline import config
    from pipeline.ops.maintenance import purge, purge_orphans

    paths = config.data_paths()
    if args.orphans:
        if args.cohort_id:
            raise DaydreamError("config", "purge --orphans takes no cohort (it removes generations no cohort uses)")
        removed = purge_orphans(paths, dry_run=not args.yes)
        print(f"{'removed' if args.yes else 'would remove'} {len(removed)} orphaned generations "
              "(in no compiled cohort, and parent of none)")
    else:
        if not args.cohort_id:
            raise DaydreamError("config", "purge needs a cohort (or --orphans)")
        result = purge(paths, args.cohort_id, dry_run=not args.yes)
        verb = "removed" if args.yes else "would remove"
        print(f"{verb} {len(result['removed'])} generations of {args.cohort_id}; "
              f"{len(result['kept_shared'])} shared with other cohorts are kept")
    if not args.yes:
        print("dry run: nothing was deleted (add --yes to purge)")
    return EXIT_OK


def cmd_reparse(args) -> int:
    from pipeline import config
    from pipeline.design.cohort import require_known_cohort
    from pipeline.ops.reparse import reparse
    from pipeline.tasks import ReportSite

    paths = config.data_paths()
    if args.cohort_id:
        require_known_cohort(paths, args.cohort_id)
    elif args.recall_failures:
        raise DaydreamError("config", "reparse --recall-failures needs a cohort (it runs the cohort to make the calls)")
    result = reparse(paths, args.cohort_id, args.stage)
    print(result.line(f"cohort {args.cohort_id}" if args.cohort_id else "gens store"))
    if args.recall_failures and result.still_failing:
        from pipeline.ops.maintenance import invalidate
        from pipeline.run.running import run_cohort

        # the user chose to pay again: drop the kept responses so the run calls the model
        invalidate(paths, cohort_id=args.cohort_id, gen_ids=[g for _, g in result.still_failing])
        print(f"calling the model again for {len(result.still_failing)} parse failures")
        _report_task_failures()
        return run_cohort(args.cohort_id, yes=args.yes)
    if not _build_local([ReportSite()]):
        raise DaydreamError("site", "building the reports and the site failed (run with luigi for the log)")
    print(f"reports and site rebuilt: {paths.site_dir / 'build' / 'index.html'}")
    return EXIT_FAILED if result.still_failing else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="daydream", description="Run LLM idea-generation cohorts on Luigi.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("design", help="print or write the compiled design rows of a spec")
    d.add_argument("spec", help="path to a cohort spec (YAML or JSON)")
    d.add_argument("--out", help="write to this file instead of stdout")
    d.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    d.add_argument("--seed", type=int, help="shuffle rows with this seed (stable)")
    d.add_argument("--limit", type=int, help="keep at most this many rows")
    d.set_defaults(func=cmd_design)

    c = sub.add_parser("compile", help="compile a cohort: membership, manifest, metadata")
    c.add_argument("cohort_id")
    c.add_argument("--yes", action="store_true", help="go ahead with a cohort above [daydream] confirm_above generations (default 100000)")
    c.set_defaults(func=cmd_compile)

    r = sub.add_parser("run", help="run a cohort end to end (compile, generations, reports, site)")
    r.add_argument("cohort_id")
    r.add_argument("--workers", type=int, default=1, help="Luigi worker processes (default 1)")
    r.add_argument("--scheduler", action="store_true", help="use the central scheduler (luigid) instead of the local one")
    r.add_argument("--scheduler-url", help="luigid URL, e.g. http://127.0.0.1:8082/ (implies --scheduler)")
    r.add_argument("--verbose", "-v", action="store_true", help="show Luigi's own log")
    r.add_argument("--yes", action="store_true", help="go ahead with a cohort above [daydream] confirm_above generations "
                   "(default 100000) or estimated above [daydream] confirm_cost_above USD (default 10)")
    r.add_argument("--max-cost", type=float, metavar="USD",
                   help="spend cap in USD for the cohort (overrides budget_usd in its spec); the run stops "
                        "before a call that could exceed it and exits 3")
    r.add_argument("--batch", action="store_true",
                   help="send the calls as provider batch jobs (about half price, answers within 24 h; "
                        "resumable: run again to pick the same jobs up)")
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("estimate", help="what the model calls still to make will cost (per stage and model)")
    e.add_argument("cohort_id")
    e.add_argument("--json", action="store_true", help="print the rows as JSON")
    e.add_argument("--batch", action="store_true", help="price the calls as batch jobs, as `run --batch` would")
    e.add_argument("--yes", action="store_true", help="compile even above [daydream] confirm_above generations")
    e.set_defaults(func=cmd_estimate)

    s = sub.add_parser("status", help="counts per stage (done, failed with reasons, pending), tokens and cost")
    s.add_argument("cohort_id")
    s.set_defaults(func=cmd_status)

    i = sub.add_parser("invalidate", help="force regeneration of generations and everything downstream")
    i.add_argument("--cohort", help="restrict to the generations of this cohort")
    i.add_argument("--stage", choices=STAGES)
    i.add_argument("--template", help="template id")
    i.add_argument("--model", help="model id")
    i.add_argument("--gen-id", action="append", help="a gen_id (repeatable)")
    i.add_argument("--dry-run", action="store_true", help="only list what would be invalidated")
    i.add_argument("--list", action="store_true", help="print every invalidated gen_id")
    i.set_defaults(func=cmd_invalidate)

    rp = sub.add_parser("report", help="rebuild a cohort's report tables from the persisted files")
    rp.add_argument("cohort_id")
    rp.set_defaults(func=cmd_report)

    st = sub.add_parser("site", help="rebuild the static report site over every compiled cohort")
    st.set_defaults(func=cmd_site)

    pv = sub.add_parser("preview", help="serve the built site on 127.0.0.1")
    pv.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    pv.set_defaults(func=cmd_preview)

    ra = sub.add_parser("ratings", help="human ratings: import a CSV exported by the site's blind rating mode")
    rsub = ra.add_subparsers(dest="ratings_command", required=True, metavar="COMMAND")
    ri = rsub.add_parser("import", help="add a rater's ratings to the store as evaluations by human:NAME")
    ri.add_argument("file", type=Path, help="the CSV the site's rating page exported")
    ri.add_argument("--rater", required=True, help="the rater's name (evaluator human:NAME)")
    ri.set_defaults(func=cmd_ratings_import)

    ck = sub.add_parser("check", help="gens-store health: missing/corrupt files, broken lineage, orphans, stale outputs")
    ck.add_argument("cohort_id", nargs="?", help="check only this cohort's generations")
    ck.add_argument("--list", action="store_true", help="print every problem")
    ck.set_defaults(func=cmd_check)

    rr = sub.add_parser("reparse", help="re-read every stored raw response with today's parsers and scales "
                        "(0 model calls), then rebuild the reports and the site")
    rr.add_argument("cohort_id", nargs="?", help="only this cohort's generations (default: the whole gens store)")
    rr.add_argument("--stage", choices=STAGES, help="only this stage")
    rr.add_argument("--recall-failures", action="store_true",
                    help="then call the model again for the responses that still fail to parse, and run the cohort")
    rr.add_argument("--yes", action="store_true", help="with --recall-failures: as `run --yes`")
    rr.set_defaults(func=cmd_reparse)

    pg = sub.add_parser("purge", help="remove a cohort's outputs and the generations no other cohort uses")
    pg.add_argument("cohort_id", nargs="?")
    pg.add_argument("--orphans", action="store_true",
                    help="instead, remove generations in no compiled cohort (e.g. left by an interrupted compile)")
    pg.add_argument("--yes", action="store_true", help="really delete (the default is a dry run)")
    pg.set_defaults(func=cmd_purge)
    return p


def _print_task_failure(task, exception) -> None:
    """A task that crashed (a bug, not an error the user acts on): one line on stderr, since
    Luigi's own log is silenced. Runs in whichever process ran the task. A ``DaydreamError``, or
    an OSError naming a file, is the command's error once the build is over
    (``running.build_error``), and RunCohort's summary of failed generations is printed by `run`."""
    from pipeline.errors import from_os_error

    if from_os_error(exception) is None:
        print(f"error: {task.task_family} failed: {type(exception).__name__}: {exception}", file=sys.stderr, flush=True)


def _report_task_failures() -> None:
    """Print a crashed task's one line (``_print_task_failure``): called by the commands that
    build with Luigi, just before they do, so the others never import Luigi's tasks."""
    import luigi

    from pipeline.tasks import _DaydreamTask

    _DaydreamTask.event_handler(luigi.Event.FAILURE)(_print_task_failure)  # a set: registering twice is harmless


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline import config

    config.use_project_config()  # started from another directory, still the project's luigi.cfg
    if getattr(args, "scheduler_url", None):
        args.scheduler = True
    try:
        from pipeline.run.luigi_command import check_config_layers

        check_config_layers()  # Luigi only warns, and the missing layer's settings silently do not apply
        return args.func(args)
    except DaydreamError as exc:
        print(f"error[{exc.code}]: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; completed generations are kept", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`daydream status demo | head`): stop quietly, as other tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        # a full disk, a refused permission, a read-only filesystem, wherever in the command:
        # one line naming the path (the one place OSErrors become messages)
        from pipeline.errors import from_os_error

        error = from_os_error(exc)
        if error is None:
            raise
        print(f"error[{error.code}]: {error.message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
