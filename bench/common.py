"""Shared helpers for the benchmarks in ``bench/`` (not a benchmark itself: it prints nothing).

Each benchmark is a standalone script that prints ONE JSON object on stdout (progress goes to
stderr), talks only to loopback, and removes everything it created. The pieces here:

* ``scratch_dir()``: a temporary directory on /dev/shm when writable (every store write is
  fsynced: ~0.08 ms per file on tmpfs vs ~0.4 ms on disk), reported as ``data_root_fs``.
* ``make_catalogs()`` / ``write_spec()`` / ``size_spec()`` / ``sized_root()``: bench-owned catalogs (N concepts,
  one template per stage, models of provider ``testsrv``) and cohort specs sized to a target.
* ``respond()``: the test server's answers, in the format each bench template asks for;
  ``ServerProcess``: that server in a child process, with fixed or lognormal latency.
* ``configure()``: the ``[llm.testsrv]``, ``[resources]`` and ``[daydream]`` settings, in-process.
* ``reset_state()``: Luigi's task-instance cache and the pipeline's runtime cache.
* ``start_luigid()``: a real luigid on a free loopback port (tests/conftest.py's ``Luigid``)
  with the benchmark's resources.
* ``build_run_cohort()``: one ``luigi.build([RunCohort(...)])``, as ``daydream run`` and the
  ``luigi`` command make it, timed (wall and CPU); ``run_command()``: the real ``luigi`` or
  ``daydream`` command as a subprocess, with ``write_luigi_cfg()``'s settings layered on the project's luigi.cfg.
* ``InTaskTimer`` (time inside generation work and completeness checks, workers=1) and
  ``PhaseClock`` (when the reports phase starts, from any worker process).
* ``check_all_done()`` / ``cohort_counts()``: ``run_plan.cohort_counts`` over the membership.

Only ``tests/llm_server.py`` (the OpenAI-compatible server) and ``tests/conftest.py``'s ``Luigid``
are taken from the tests; catalogs and specs are defined here.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

PROVIDER = "testsrv"
COHORT = "bench"

# -- output ---------------------------------------------------------------------------------------


def log(*args) -> None:
    """Progress on stderr; stdout carries only the final JSON."""
    print(*args, file=sys.stderr, flush=True)


def emit(obj: dict) -> None:
    print(json.dumps(obj, indent=2))


def cache_bytecode() -> None:
    """Byte-compile the project's modules (``pipeline/``, ``bench/``) into their ``__pycache__``,
    as Python does on a module's first import: a machine that sets ``PYTHONDONTWRITEBYTECODE``
    (this one does) never caches them, so every process of a run would compile them again
    (about 0.1 s of CPU each), which no usual install pays."""
    import compileall

    for d in ("pipeline", "bench"):
        compileall.compile_dir(str(REPO / d), quiet=1)


def speed_index() -> dict:
    """How fast this machine is right now, apart from load: CPU microseconds of a fixed Python
    loop and of one ``os.stat`` (median of several tries). On a shared VM both change with the
    host's load, invisible in the load average (at 16:02 and 16:08 on 2026-12-06: 29.7 and
    51.5 µs, 2.0 and 4.0 µs), and a run's CPU per generation moves with them."""
    import statistics

    def loop() -> None:
        x = 0
        for i in range(1000):
            x += i * i % 7

    def per_call_us(fn, n: int) -> float:
        tries = []
        for _ in range(5):
            t = time.process_time()
            for _ in range(n):
                fn()
            tries.append((time.process_time() - t) / n * 1e6)
        return round(statistics.median(tries), 2)

    return {"python_loop_us": per_call_us(loop, 200), "stat_us": per_call_us(lambda: os.stat(REPO), 5000)}


def machine() -> dict:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem_gb = round(kb / 2**20, 1)
    import luigi

    return {"nproc": os.cpu_count(), "cpu": model, "ram_gb": mem_gb, "python": platform.python_version(),
            "luigi": luigi.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            # other processes on the machine compete for its cores: a load near nproc or above
            # while a benchmark ran makes its timings pessimistic
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


# -- scratch space --------------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_dir(prefix: str = "daydream-bench-"):
    """A temporary directory, on tmpfs when /dev/shm is writable; yields (path, "tmpfs"|"disk")."""
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path, ("tmpfs" if base else "disk")
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- catalogs and specs ---------------------------------------------------------------------------

DRAFT_TEMPLATE = "TASK:DRAFT\n{% for c in concepts %}- {{ c.name }}: {{ c.content }}\n{% endfor %}Answer inside <essay> tags.\n"
ESSAY_TEMPLATE = "TASK:ESSAY\nExpand this draft:\n{{ draft_block }}\n"
EVAL_TEMPLATE = "TASK:EVAL scale 0-9\n{{ response }}\nEnd with SCORE: X\n"
MODELS = ("srv-a", "srv-b", "srv-c", "srv-d")


def concept_ids(n: int) -> list[str]:
    return [f"c{i:05d}" for i in range(n)]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_catalogs(root: Path, n_concepts: int, *, provider: str = PROVIDER) -> Path:
    """Catalogs for ``n_concepts`` concepts: one draft template (d-bench), essay templates e-llm and
    e-copy, evaluation templates v-a and v-b (0-9), models srv-a..srv-d of ``provider``."""
    raw = root / "1_raw"
    ids = concept_ids(n_concepts)
    _write(raw / "concepts_metadata.csv", "concept_id,name\n" + "".join(f"{c},Concept {c}\n" for c in ids))
    desc = raw / "concepts" / "descriptions-paragraph"
    desc.mkdir(parents=True, exist_ok=True)
    for c in ids:
        (desc / f"{c}.txt").write_text(f"Concept {c} is about one idea worth combining with others.\n")
    _write(raw / "draft_templates.csv", "template_id,template_name,description,parser,generator\n"
           "d-bench,Draft,bench draft,essay_block,llm\n")
    _write(raw / "essay_templates.csv", "template_id,template_name,description,parser,generator\n"
           "e-llm,Essay,bench essay,identity,llm\ne-copy,Copy,copies the draft,,copy\n")
    _write(raw / "evaluation_templates.csv",
           "template_id,template_name,description,parser,generator,score_min,score_max\n"
           "v-a,Eval A,bench rubric,score,llm,0,9\nv-b,Eval B,bench rubric,score,llm,0,9\n")
    _write(raw / "templates" / "draft" / "d-bench.txt", DRAFT_TEMPLATE)
    _write(raw / "templates" / "essay" / "e-llm.txt", ESSAY_TEMPLATE)
    for t in ("v-a", "v-b"):
        # the rubrics' prompts differ, so their scores of one essay do too (see ``respond``)
        _write(raw / "templates" / "evaluation" / f"{t}.txt", EVAL_TEMPLATE.replace("TASK:EVAL", f"TASK:EVAL {t}"))
    _write(raw / "llm_models.csv",
           "id,model,provider,display_name,temperature,max_tokens,input_price_per_mtok,output_price_per_mtok\n"
           + "".join(f"{m},bench/{m},{provider},{m},,,,\n" for m in MODELS))
    return root


def spec_text(n_concepts: int, *, k: int = 1, draft_llm=("srv-a",), draft_replicate: int = 1,
              essay: str = "llm", evaluation_templates=("v-a", "v-b"), evaluation_llm=("srv-b",),
              evaluation_replicate: int = 1) -> str:
    """A cohort spec over the first ``n_concepts`` concepts. ``essay``: "llm" (e-llm by srv-c) or
    "copy" (e-copy: no model call)."""
    concepts = ", ".join(concept_ids(n_concepts))
    essay_item = "[e-llm, srv-c]" if essay == "llm" else "[e-copy, None]"
    return (
        f"combos:\n  - concepts: [{concepts}]\n    k: {k}\n    level: paragraph\n"
        "axes:\n"
        "  draft_template: [d-bench]\n"
        f"  draft_llm: [{', '.join(draft_llm)}]\n"
        f"  draft_replicate: {draft_replicate}\n"
        f"  evaluation_template: [{', '.join(evaluation_templates)}]\n"
        f"  evaluation_llm: [{', '.join(evaluation_llm)}]\n"
        f"  evaluation_replicate: {evaluation_replicate}\n"
        "rules:\n  tuples:\n    essay_modes:\n      axes: [essay_template, essay_llm]\n"
        f"      items: [{essay_item}]\n"
    )


def size_spec(target: int) -> tuple[int, str, dict]:
    """A spec of about ``target`` LLM generations: one draft, one essay, two evaluations per
    concept (k=1 combos), so 4 generations per concept. Returns (concepts, spec text, counts)."""
    n = max(1, round(target / 4))
    return n, spec_text(n), {"draft": n, "essay": n, "evaluation": 2 * n, "total": 4 * n}


def write_spec(root: Path, text: str, cohort: str = COHORT) -> Path:
    path = root / "cohorts" / cohort / "spec" / "config.yaml"
    _write(path, text)
    return path


def sized_root(base: Path, target: int) -> tuple[Path, dict]:
    """A data root under ``base`` holding catalogs and the ``size_spec(target)`` cohort, made the
    configured one; returns (root, counts per stage)."""
    root = base / "data"
    concepts, spec, counts = size_spec(target)
    make_catalogs(root, concepts)
    write_spec(root, spec)
    set_data_root(root)
    return root, counts


# -- the test LLM server ---------------------------------------------------------------------------

_DRAFT = "Thinking.\n<essay>\nFirst line of the idea ({tag}).\nSecond line of the idea.\nThird line.\n</essay>\n"
_ESSAY = "Essay on idea {tag}.\n" + "".join(f"Essay paragraph {i}.\n" for i in range(1, 7))
_EVAL = "Reasoning about the essay.\nSCORE: {score}\n"


def respond(body: dict) -> str:
    """Answers in the format each bench template asks for (cheap: benchmarks measure the pipeline).

    Each answer depends on its prompt (a CRC of it), so drafts, essays and scores differ as real
    ones do: with every score equal, the reports' mixed models would fit degenerate data, far
    slower than a real cohort's."""
    prompt = body["messages"][-1]["content"]
    tag = zlib.crc32(prompt.encode())
    if prompt.startswith("TASK:DRAFT"):
        return _DRAFT.format(tag=tag)
    if prompt.startswith("TASK:ESSAY"):
        return _ESSAY.format(tag=tag)
    return _EVAL.format(score=tag % 10)


# tests/llm_server.py writes a response's headers and body in two send() calls on a keep-alive
# connection; without TCP_NODELAY, Nagle's algorithm holds the body until the client's delayed ACK
# (~40 ms on Linux), so an "instant" server answered in ~48 ms. The benchmarks turn Nagle off on
# the server's sockets (a standard socketserver switch, set at run time; the file is unchanged).
SERVER_TCP_NODELAY = True


def start_llm_server(latency: float = 0.0, sigma: float = 0.0, seed: int = 0):
    """The test server in this process (``tests/llm_server.py``), answering with ``respond``;
    ``sigma`` > 0: lognormal latencies of median ``latency`` (each request's draw fixed by the
    request and ``seed``, so runs making the same calls wait the same)."""
    import llm_server
    from llm_server import LLMServer

    llm_server._Handler.disable_nagle_algorithm = SERVER_TCP_NODELAY
    server = LLMServer(latency=latency, latency_sigma=sigma, latency_seed=seed)
    server.responder = respond
    return server.start()


class ServerProcess:
    """The same test server in a child process, so its request handling does not compete with the
    pipeline for this process's GIL. Counters are fetched over a pipe: ``stats()`` returns
    ``{"requests", "successes", "max_concurrency_seen", "in_flight", "first_request_at",
    "last_request_at", "last_response_at", "latency_served_s", "latency_before_last_request_s"}``
    (wall-clock times, ``time.time()``; the latencies waited, summed, and the part of them before
    the last request came in); ``reset()`` zeroes them."""

    def __init__(self, latency: float = 0.0, sigma: float = 0.0, seed: int = 0):
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, "-u", __file__, "--serve", str(latency), str(sigma), str(seed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        NOT_THE_PIPELINE.add(self.proc.pid)
        self.base_url = self.proc.stdout.readline().strip()
        if not self.base_url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"test server did not start: {self.base_url!r}")

    def _ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stats(self) -> dict:
        return self._ask("stats")

    def reset(self) -> dict:
        return self._ask("reset")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _serve(latency: float, sigma: float = 0.0, seed: int = 0) -> None:
    """Child side of ``ServerProcess``: one command per stdin line, one JSON line back; EOF stops."""
    server = start_llm_server(latency, sigma, seed)
    times = {"first_request_at": None, "last_request_at": None, "last_response_at": None}
    begin, responder = server._begin, server.responder

    def timed_begin(record):
        record["at"] = times["last_request_at"] = time.time()
        if times["first_request_at"] is None:
            times["first_request_at"] = record["at"]
        return begin(record)

    def timed_responder(body):
        try:
            return responder(body)
        finally:
            times["last_response_at"] = time.time()

    server._begin, server.responder = timed_begin, timed_responder
    print(server.base_url, flush=True)

    def stats() -> dict:
        # the latencies waited before the last request came in: a busy share that leaves out the
        # drain at the end, when fewer calls are left than slots
        last = times["last_request_at"]
        before_last = sum(min(r["at"] + r.get("latency_s", 0.0), last) - r["at"]
                          for r in list(server.requests) if "at" in r) if last else 0.0
        return {"requests": len(server.requests), "successes": server.successes,
                "max_concurrency_seen": server.max_concurrency_seen, "in_flight": server.in_flight,
                "latency_served_s": server.latency_served, "latency_before_last_request_s": before_last, **times}

    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "reset":
                server.reset()
                times.update(first_request_at=None, last_request_at=None, last_response_at=None)
            print(json.dumps(stats()), flush=True)
    finally:
        server.stop()


# -- configuration --------------------------------------------------------------------------------


def configure(base_url: str, *, concurrency: int, batch_size: int | None = None, chunk_size: int | None = None,
              timeout: float = 30.0, max_attempts: int = 3) -> None:
    """Point provider ``testsrv`` at the test server, in-process: ``[llm.testsrv] concurrency`` =
    ``[resources] llm_testsrv`` = ``concurrency``; ``[daydream] batch_size`` / ``chunk_size`` when
    given, else the pipeline's defaults."""
    import luigi.configuration

    cfg = luigi.configuration.get_config()
    for section in (f"llm.{PROVIDER}", "resources", "daydream"):
        if not cfg.has_section(section):
            cfg.add_section(section)
    for key, value in {"base_url": base_url, "api_key_env": "", "concurrency": concurrency, "timeout": timeout,
                       "max_attempts": max_attempts, "backoff_base": 0.05, "backoff_max": 1.0}.items():
        cfg.set(f"llm.{PROVIDER}", key, str(value))
    cfg.set("resources", f"llm_{PROVIDER}", str(concurrency))
    for key, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if value:
            cfg.set("daydream", key, str(value))
        else:
            cfg.remove_option("daydream", key)


def set_data_root(root: Path) -> None:
    os.environ["DAYDREAM_DATA_ROOT"] = str(root)
    reset_state()


def reset_state() -> None:
    """Luigi caches task instances per process and the pipeline caches its runtime: start clean."""
    import luigi.task_register

    from pipeline.run import generation

    luigi.task_register.Register.clear_instance_cache()
    generation.forget_runtimes()


def quiet_luigi() -> None:
    """Luigi's own loggers at CRITICAL (build(log_level=...) sets only the root handler)."""
    import logging

    for name in ("luigi", "luigi-interface", "luigi.scheduler", "luigi.worker", "pipeline"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


# -- luigid ---------------------------------------------------------------------------------------


def start_luigid(base: Path, resources: dict[str, int]):
    """A real luigid on a free loopback port (tests/conftest.py's ``Luigid``: the project's
    luigi.cfg with short test timeouts), with the benchmark's ``[resources]`` (luigid reads them
    from its own working directory). ``prune_on_get_work`` is put back to the project's value
    (Luigi's default, false; the tests turn it on): with it on, every work request walks every
    task luigid knows, done ones included, which makes a run's cost grow faster than its size."""
    import configparser

    from conftest import Luigid

    d = Luigid(base)
    cfg = configparser.ConfigParser()
    cfg.read(base / "luigi.cfg")
    cfg.read_dict({"resources": {k: str(v) for k, v in resources.items()},
                   "scheduler": {"record_task_history": "false", "prune_on_get_work": "false"}})
    with open(base / "luigi.cfg", "w") as fh:
        cfg.write(fh)
    return d.start()


# -- running --------------------------------------------------------------------------------------


def compile_and_prepare(cohort: str = COHORT):
    """Compile the cohort and prepare providers (what ``daydream run`` does before its build);
    returns (plan, written, seconds)."""
    from pipeline import config
    from pipeline.design.cohort import compile_cohort
    from pipeline.run.run_plan import prepare_providers

    t0 = time.perf_counter()
    paths = config.data_paths()
    plan, written = compile_cohort(paths, cohort)
    prepare_providers(paths, cohort)
    return plan, written, time.perf_counter() - t0


NOT_THE_PIPELINE: set[int] = set()  # child processes whose CPU is not the pipeline's (the test server)


def cpu_s() -> float:
    """CPU seconds of this process (every thread) plus its children: the reaped ones (Luigi's
    forked task processes when workers > 1; commands run by ``run_command``) and the ones still
    running but the test server (the pipeline's executor process, which lives as long as its runtime)."""
    return sum(cpu_split())


def cpu_split() -> tuple[float, float]:
    """``cpu_s`` as (user, kernel) seconds: on a disk the store's writes cost kernel time."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, kernel = _running_children_cpu_s()
    return own.ru_utime + kids.ru_utime + user, own.ru_stime + kids.ru_stime + kernel


def _running_children_cpu_s() -> tuple[float, float]:
    pids = set()
    for task in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in task.read_text().split())
    user = kernel = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids - NOT_THE_PIPELINE:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            # utime, stime, then its reaped children's cutime, cstime
            user += (int(fields[11]) + int(fields[13])) / tick
            kernel += (int(fields[12]) + int(fields[14])) / tick
    return user, kernel


def build_run_cohort(workers: int, scheduler_url: str | None = None, cohort: str = COHORT) -> dict:
    """One ``luigi.build([RunCohort(...)])``, exactly as ``run_cohort`` makes it (compile, every
    generation chunk by chunk, reports, site). Returns wall seconds, CPU seconds (this process and
    reaped children), the build's status and the wall-clock start (time.time)."""
    import luigi

    from pipeline.tasks import RunCohort, run_stamp

    from pipeline.run.running import _UnprunedLocalScheduler

    reset_state()
    kw = {"workers": workers, "log_level": "CRITICAL", "detailed_summary": True}
    if scheduler_url:
        kw["scheduler_url"] = scheduler_url
    else:  # as `daydream run` builds it (the `luigi --local-scheduler` command: see noop.py)
        kw.update(local_scheduler=True, worker_scheduler_factory=_UnprunedLocalScheduler())
    from pipeline import config

    config.default_resources()  # as run_cohort does before its build
    task = RunCohort(cohort_id=cohort, since=run_stamp(), ahead=scheduler_url is None)
    started_at = time.time()
    cpu0 = cpu_s()
    t0 = time.perf_counter()
    result = luigi.build([task], **kw)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "cpu_s": cpu_s() - cpu0, "status": result.status.name,
            "started_at": started_at, "since": task.since}


def write_luigi_cfg(path: Path, base_url: str, *, concurrency: int, batch_size: int | None = None,
                    chunk_size: int | None = None, timeout: float = 30.0, max_attempts: int = 3) -> Path:
    """The settings ``configure`` makes in-process, as a file to layer on the project's luigi.cfg
    with LUIGI_CONFIG_PATH (for the ``luigi`` command)."""
    daydream = "".join(f"{k} = {v}\n" for k, v in (("batch_size", batch_size), ("chunk_size", chunk_size)) if v)
    path.write_text(
        f"[llm.{PROVIDER}]\nbase_url = {base_url}\napi_key_env =\nconcurrency = {concurrency}\n"
        f"timeout = {timeout}\nmax_attempts = {max_attempts}\nbackoff_base = 0.05\nbackoff_max = 1.0\n"
        f"[resources]\nllm_{PROVIDER} = {concurrency}\n"
        + (f"[daydream]\n{daydream}" if daydream else ""))
    return path


def luigi_command(workers: int = 1, cohort: str = COHORT, scheduler_url: str | None = None) -> list[str]:
    """``luigi --module pipeline.tasks RunCohort --cohort-id C --local-scheduler --workers N``."""
    exe = Path(sys.executable).parent / "luigi"
    cmd = [str(exe) if exe.exists() else "luigi", "--module", "pipeline.tasks", "RunCohort",
           "--cohort-id", cohort, "--workers", str(workers)]
    return cmd + (["--scheduler-url", scheduler_url] if scheduler_url else ["--local-scheduler"])


def daydream_command(workers: int = 1, cohort: str = COHORT) -> list[str]:
    """``daydream run C --workers N`` (local scheduler)."""
    exe = Path(sys.executable).parent / "daydream"
    return [str(exe) if exe.exists() else "daydream", "run", cohort, "--workers", str(workers)]


def run_command(cmd: list[str], cfg: Path, data_root: Path) -> dict:
    """A pipeline command (``luigi_command()``, ``daydream_command()``) as a subprocess from the
    repository (its luigi.cfg) with ``cfg`` layered on top (LUIGI_CONFIG_PATH); returns seconds,
    CPU seconds of the command and its children, the exit code and the tail of its stderr."""
    import subprocess

    env = dict(os.environ, LUIGI_CONFIG_PATH=str(cfg), DAYDREAM_DATA_ROOT=str(data_root))
    cpu0 = cpu_s()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    return {"command": " ".join([Path(cmd[0]).name] + cmd[1:]), "seconds": seconds, "cpu_s": cpu_s() - cpu0,
            "returncode": proc.returncode, "stderr_tail": proc.stderr[-2000:]}


class InTaskTimer:
    """Wall time spent inside generation tasks' work (``run_batch`` / ``run_generation`` as called
    by ``pipeline.tasks``) and in completeness checks (``GenerationTarget.exists``,
    ``CohortChunk.complete``), accumulated while installed.

    Exact only when tasks run in this process (workers=1: Luigi forks a process per task when
    workers > 1, and the child's time is not seen here). Everything else a run spends on its
    generations is orchestration: building tasks, scheduling, chunk bookkeeping.
    """

    def __init__(self):
        import threading

        self.work_s = 0.0
        self.complete_s = 0.0
        self.complete_calls = 0
        self._lock = threading.Lock()
        self._undo: list = []
        self._depth = threading.local()

    def _wrap(self, owner, name: str, field: str, count: str | None = None):
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        timer = self

        def timed(*args, **kwargs):
            depth = getattr(timer._depth, field, 0)
            setattr(timer._depth, field, depth + 1)
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                setattr(timer._depth, field, depth)
                if depth == 0:  # outermost call only (a chunk's complete checks its targets' states)
                    with timer._lock:
                        setattr(timer, field, getattr(timer, field) + time.perf_counter() - t0)
                        if count:
                            setattr(timer, count, getattr(timer, count) + 1)

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def __enter__(self) -> "InTaskTimer":
        from pipeline import tasks

        self._wrap(tasks, "run_batch", "work_s")
        self._wrap(tasks, "run_generation", "work_s")
        self._wrap(tasks.GenerationTarget, "exists", "complete_s", "complete_calls")
        self._wrap(tasks.CohortChunk, "complete", "complete_s", "complete_calls")
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


class PhaseClock:
    """When the reports phase of a ``RunCohort`` build starts, and what the report/site tasks
    cost: ``CohortReports.run`` and ``ReportSite.run`` append (start, wall, cpu) to a file, so
    tasks in forked worker processes are seen too. A run's generations phase is from the build's
    start to the first report task's start (they run only after every chunk)."""

    def __init__(self, path: Path):
        self.path = path
        self._undo: list = []

    def __enter__(self) -> "PhaseClock":
        from pipeline import tasks

        self.path.write_text("")
        for cls in (tasks.CohortReports, tasks.ReportSite):
            original = cls.__dict__["run"]
            clock = self

            def run(task, _original=original):
                start, cpu0, t0 = time.time(), time.process_time(), time.perf_counter()
                try:
                    return _original(task)
                finally:
                    with open(clock.path, "a") as fh:
                        fh.write(json.dumps({"task": task.task_family, "start": start,
                                             "wall_s": time.perf_counter() - t0,
                                             "cpu_s": time.process_time() - cpu0}) + "\n")

            cls.run = run
            self._undo.append((cls, original))
        return self

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def reports_start(self) -> float | None:
        recs = self.records()
        return min(r["start"] for r in recs) if recs else None

    def reports_wall_s(self) -> float:
        return sum(r["wall_s"] for r in self.records())

    def reports_cpu_s(self) -> float:
        return sum(r["cpu_s"] for r in self.records())

    def __exit__(self, *exc) -> None:
        for cls, original in reversed(self._undo):
            cls.run = original
        self._undo.clear()


def cohort_counts(cohort: str = COHORT, since: str = ""):
    """``run_plan.cohort_counts`` over the cohort's membership, read fresh."""
    from pipeline import config
    from pipeline.run.run_plan import cohort_counts as counts, membership

    reset_state()
    paths = config.data_paths()
    return counts(paths, membership(paths, cohort), since)


def check_all_done(expected: int, cohort: str = COHORT):
    """Every one of the ``expected`` generations is done (``run_plan.cohort_counts``), or exit."""
    counts = cohort_counts(cohort)
    if counts.total != expected or counts.done != expected:
        raise SystemExit(f"benchmark run incomplete: {counts.summary()} (expected {expected} done)")
    return counts


def ms_per(seconds: float, n: int) -> float:
    return round(1000 * seconds / max(1, n), 3)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 2)


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    _serve(float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
