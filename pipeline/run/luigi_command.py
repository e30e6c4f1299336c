"""What a run checks before its build, whichever command starts it, and how the ``luigi``
command reports a mistake: one line through Luigi's logger, no traceback, exit status
``[retcode] unhandled_exception`` (40), apart from a failed generation (``task_failed``, 30).

``daydream run`` calls these checks itself (``running.run_cohort``); under the ``luigi`` command
``RunCohort`` calls ``before_run`` as the process that names the run creates it (the parameters
have been parsed, nothing is scheduled yet). A ``DaydreamError`` raised there ends Luigi's
``run_with_retcodes`` as an "uncaught exception": ``OneLineErrors`` on Luigi's logger turns that
record (and a task failure's) into ``error[<code>]: <message>``.

Every run writes a log file, ``data/logs/<cohort>-<stamp>-<pid>.log`` (``log_file``), at INFO whatever
the console shows; the run's summary names it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from urllib.parse import urlparse

from pipeline import config
from pipeline.errors import DaydreamError

LOGGER = "luigi-interface"
SCHEDULER_TIMEOUT_S = 5.0  # an unreachable luigid is reported within this (Luigi's RPC retries take a minute)


class OneLineErrors(logging.Filter):
    """A ``DaydreamError`` logged with its traceback (Luigi's "Uncaught exception", a task's
    failure) is shown as the one line it stands for."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, DaydreamError):
            record.msg, record.args = f"error[{exc.code}]: {exc.message}", ()
            record.exc_info = record.exc_text = None
        return True


class GenerationsAtDebug(logging.Filter):
    """Luigi logs at INFO each task it tells the scheduler about and each one it runs: for the
    generation tasks that is two to three lines a generation (thousands for a large cohort),
    which the store and ``daydream status`` say better. Those lines are logged at DEBUG
    (``--log-level DEBUG`` shows them); the run's own tasks, warnings and errors stay as they are."""

    TASKS = ("DraftGeneration", "EssayGeneration", "EvaluationGeneration")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and isinstance(record.args, tuple) and any(
                str(a).startswith(self.TASKS) for a in record.args):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def install_filter() -> None:
    log = logging.getLogger(LOGGER)
    for kind in (OneLineErrors, GenerationsAtDebug):
        if not any(isinstance(f, kind) for f in log.filters):
            log.addFilter(kind())


def check_config_layers() -> None:
    """Every file ``LUIGI_CONFIG_PATH`` names exists (Luigi only warns, and its settings silently
    do not apply)."""
    for item in filter(None, os.environ.get("LUIGI_CONFIG_PATH", "").split(os.pathsep)):
        if not os.path.isfile(item):
            raise DaydreamError("config", f"LUIGI_CONFIG_PATH names {item!r}, which is not a file "
                                          "(its settings would not apply)")


def check_workers(workers: int) -> None:
    if workers < 1:
        raise DaydreamError("config", f"--workers must be at least 1, got {workers}")


def check_scheduler_url(url: str) -> str:
    """A luigid URL that answers within ``SCHEDULER_TIMEOUT_S``, or one clear error (not a
    minute of chained RPC retries)."""
    import urllib.request

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise DaydreamError("config", f"scheduler URL {url!r} is not an http(s) URL (e.g. http://127.0.0.1:8082/)")
    try:
        parsed.port
    except ValueError:
        raise DaydreamError("config", f"scheduler URL {url!r} has an invalid port") from None
    try:
        urllib.request.urlopen(url, timeout=SCHEDULER_TIMEOUT_S).close()
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        raise DaydreamError("scheduler", f"no luigid answers at {url} ({reason}); start one (see the README) "
                                         "or run with the local scheduler") from None
    return url


def check_scheduler_resources(url: str, providers) -> None:
    """Every provider the run calls is bounded by a resource luigid knows: one it lacks would
    never be granted, and its tasks would wait until the run gave up ("not granted run
    permission"). luigid reads ``[resources]`` from the luigi.cfg of the directory it started in."""
    try:
        known = {r["name"] for r in _api(url, "resource_list") or []}
    except (OSError, ValueError, KeyError, TypeError):
        return  # an older luigid without the call: the run goes ahead
    missing = sorted(name for name in {config.resource_name(p) for p in providers} if name not in known)
    if missing:
        raise DaydreamError(
            "scheduler", f"luigid at {url} has no resource {', '.join(missing)} (the run would wait for it forever); "
                         "add it to the [resources] of the luigi.cfg luigid reads (its working directory) and "
                         "restart luigid, e.g. `" + " = N`, `".join(missing) + " = N`")


def _api(url: str, method: str, data: dict | None = None):
    import json
    import urllib.parse
    import urllib.request

    query = urllib.parse.quote(json.dumps(data or {}))
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/{method}?data={query}", timeout=SCHEDULER_TIMEOUT_S) as r:
        return json.loads(r.read())["response"]


def wait_for_dead_workers(url: str, say) -> None:
    """Wait while luigid holds running tasks for workers that stopped pinging (a run killed a
    moment ago): until luigid lets them go (``[scheduler] worker_disconnect_delay``) this run
    could not run them, and would end at once with "not run". A worker pings every second, so
    one holding tasks is watched until it pings again (alive: go ahead) or has been silent for
    ``WORKER_SILENT_S``. ``say`` hears what is waited for and for how long."""
    import time

    limit = DISCONNECT_DEFAULT_S
    with contextlib.suppress(DaydreamError):
        limit = config.scheduler_disconnect_delay()
    first: dict[str, float] = {}
    deadline, told = time.monotonic() + limit + 2 * WORKER_SILENT_S, False
    while time.monotonic() < deadline:
        try:
            workers = [w for w in _api(url, "worker_list") or [] if w.get("running")]
        except (OSError, ValueError, KeyError, TypeError):
            return
        now = time.time()
        for w in workers:
            first.setdefault(w["name"], float(w.get("last_active") or now))
        # holding tasks and not heard from since this run first looked (else: alive, or not yet known)
        quiet = [w for w in workers if float(w.get("last_active") or now) <= first[w["name"]]]
        if not quiet:
            return
        dead = [w for w in quiet if now - float(w.get("last_active") or now) > WORKER_SILENT_S]
        if dead and not told:
            held = sum(len(w["running"]) for w in dead)
            silent = max(now - float(w["last_active"]) for w in dead)
            say(f"luigid at {url} holds {held} running task(s) for {len(dead)} worker(s) silent for {silent:.0f} s "
                f"(a run that was stopped); waiting up to {max(0.0, deadline - time.monotonic()):.0f} s for luigid to "
                "release them ([scheduler] worker_disconnect_delay), then this run takes them over")
            told = True
        time.sleep(0.5)


WORKER_SILENT_S = 3.0  # a worker pings luigid every second: silent for this long, it has stopped
DISCONNECT_DEFAULT_S = 60.0  # luigid's own default worker_disconnect_delay


def configured_scheduler_url() -> str:
    import luigi.interface

    core = luigi.interface.core()
    return core.scheduler_url or f"http://{core.scheduler_host}:{core.scheduler_port}/"


def used_providers(paths, cohort_id: str) -> set[str]:
    from pipeline.run.generation import runtime
    from pipeline.run.run_plan import membership

    rt = runtime()
    return {rt.endpoint(r["llm_model_id"]) for r in membership(paths, cohort_id) if r["llm_model_id"]}


def before_run(cohort_id: str, max_cost: float | None, yes: bool) -> None:
    """The ``luigi`` command's checks before its build, as ``daydream run`` makes them: the config
    layers exist, ``--workers``, ``--max-cost``, luigid answers, the cohort compiles (and a search's
    budget can be judged), API keys, luigid knows the run's providers; stale claims are swept and
    a killed run's tasks waited for."""
    import luigi.interface

    from pipeline.design.cohort import compile_cohort, is_compiled
    from pipeline.run.generation import runtime
    from pipeline.run.run_plan import check_max_cost, prepare_providers
    from pipeline.run.search_store import derive, is_search_cohort

    check_config_layers()
    core = luigi.interface.core()
    check_workers(core.workers)
    check_max_cost(max_cost)
    url = None if core.local_scheduler else check_scheduler_url(configured_scheduler_url())
    paths = config.data_paths()
    if not is_compiled(paths, cohort_id):
        compile_cohort(paths, cohort_id, confirm_above=None if yes else config.confirm_above(),
                       seeded=lambda stored: runtime(paths).keep_metadata(stored))
    if is_search_cohort(paths, cohort_id):
        derive(paths, cohort_id)  # a USD budget it cannot judge, or that round 0 exceeds
    prepare_providers(paths, cohort_id)
    sweep_killed_runs(paths, cohort_id)
    if url is not None:
        check_scheduler_resources(url, used_providers(paths, cohort_id))
        wait_for_dead_workers(url, logging.getLogger(LOGGER).warning)


def sweep_killed_runs(paths, cohort_id: str) -> int:
    """Remove what killed runs left: the stale claims of the cohort's generations
    (``claims.sweep``; a kill leaves claims on generations that had finished, which no run takes
    over) and the owner files they link to (``claims.sweep_owners``), and this host's status files
    of processes gone, with the temporary file of one killed as it refreshed its file
    (``run_status.sweep``: an executor's status writer sweeps them as it starts, but a run with
    nothing left to call starts none). Before a run, and again by ``RunCohort`` at its end (a run
    killed meanwhile). Returns how many claims were removed."""
    from pipeline.store import claims
    from pipeline.run import run_status
    from pipeline.run.generation import runtime
    from pipeline.run.run_plan import membership

    timeout = config.claim_timeout()
    rt = runtime(paths)  # its directory names, checked once and kept for the run's generations
    swept = claims.sweep((rt.gen_dir(r["stage"], r["gen_id"]) for r in membership(paths, cohort_id)), timeout)
    claims.sweep_owners(paths.gens, timeout)
    run_status.sweep(run_status.runs_dir(paths))
    return swept


class _LogFile(logging.FileHandler):
    """The run's log file. A write that fails (a full disk) stops it, with no traceback on the
    console: the run reports the store's own write errors, as one line each."""

    def handleError(self, record: logging.LogRecord) -> None:
        self.setLevel(logging.CRITICAL + 1)

    def flush(self) -> None:
        with contextlib.suppress(OSError):
            super().flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            super().close()


def log_file(cohort_id: str, since: str) -> tuple[Path, logging.Handler]:
    """Start this run's log file (INFO and above of Luigi's logger, which the run's tasks use
    too); returns its path and handler (``daydream run`` removes it when its build is over)."""
    paths = config.data_paths()
    stamp = re.sub(r"[^0-9T]", "", since)[:15] or "run"
    path = paths.root / "logs" / f"{cohort_id}-{stamp}-{os.getpid()}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _LogFile(path, encoding="utf-8")
    except OSError as exc:
        raise DaydreamError("store", f"cannot write the run's log file: {exc.strerror or exc}", path=path) from None
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(process)d: %(message)s"))
    handler.addFilter(OneLineErrors())
    logging.getLogger(LOGGER).addHandler(handler)
    return path, handler


def quiet_console(verbose: bool) -> None:
    """``daydream run``'s logging: Luigi's log on the console only with ``--verbose``, and always
    at INFO into the run's log file (Luigi, left to itself, would set its logger to the console's
    level). Set up once per process, as Luigi's own setup is."""
    from luigi.setup_logging import InterfaceLogging

    log = logging.getLogger(LOGGER)
    if not InterfaceLogging._configured:
        InterfaceLogging._configured = True
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        console.addFilter(OneLineErrors())
        log.addHandler(console)
        log.propagate = False
        _CONSOLE.append(console)
    for console in _CONSOLE:
        console.setLevel(logging.INFO if verbose else logging.CRITICAL)
    log.setLevel(logging.INFO)


_CONSOLE: list[logging.Handler] = []  # the console handler quiet_console made (one per process)
