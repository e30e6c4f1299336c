"""Luigi tasks: wiring only (parameters, requires, output, run; one call into the library).

``luigi --module pipeline.tasks RunCohort --cohort-id demo [--local-scheduler] [--workers N]``
runs a cohort: compile, every generation, reports and the site. The shape of a run (a search
cohort yields ``SearchRound`` 0, 1, … instead of the chunks, each yielding its ``SearchChunk``
tasks; see ``RunCohort``):

    RunCohort ──requires──► CompileCohort
        │ run(): yield CohortChunk 0..K-1            (low priority)
        │        yield ReportSite ──► CohortReports of every compiled cohort
        ▼
    CohortChunk k ──requires──► CohortChunk k-2 (settled)
        │ run(): yield the ends of its unsettled lineages     (high priority)
        ▼
    EvaluationGeneration ──requires──► EssayGeneration ──requires──► DraftGeneration

A generation task's output is a ``GenerationTarget``: it exists when the generation is *settled*
for this run — done, or failed (or blocked by a failed ancestor) since the run started
(``state.State.settled``). So a failed generation never stalls its chunk, the cohort or the
report task: every other generation runs, the reports and the site are built from what
finished, and ``RunCohort`` fails at the end with the summary (a non-zero ``[retcode]``). The
next run starts a new ``since`` and retries what failed.

Why chunks: Luigi's scheduler scans every pending task on each work request, so handing it all N
generations at once costs O(N²). A chunk is cheap until a worker opens it, and a worker opens
one only when no generation is runnable and the chunk two before it has settled, so the
scheduler's pending set stays within two chunks whatever the number of workers.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import luigi
import luigi.interface
from luigi.parameter import ParameterVisibility

from pipeline.run import batch_jobs, luigi_command
from pipeline import config
from pipeline.design.cohort import compile_cohort, is_compiled, search_record_path
from pipeline.errors import DaydreamError, from_os_error
from pipeline.run.estimate import left_to_do
from pipeline.run.executor import (freeze_forked_children, note_run, run_batch, run_generation, settle_ahead,
                                   settled_for_run, start_ahead)
from pipeline.run.generation import metadata, runtime, state_of
from pipeline.llm.registry import import_builtin
from pipeline.store.ledger import Budget, current_budget, prepared, read_ledger
from pipeline.run.run_status import batch_message, outcome
from pipeline.run.run_plan import chunk_members, cohort_counts, lineage_ends, membership, prepare_budget, prepare_providers, spend_cap
from pipeline.run.search_store import derive, is_current, is_search_cohort, round_chunks, sync
from pipeline.store.spend import BUDGET_REACHED, usd
from pipeline.store.state import DONE
from pipeline.store import PARENT_STAGE, atomic_write_json, read_json, stat_fingerprint, utc_stamp


def _as_the_luigi_command() -> None:
    """What the ``luigi`` command needs from this module before it makes any task: the project's
    luigi.cfg layered in (``config.use_project_config``) and Luigi's log turned into one-line errors
    (``luigi_command.install_filter``). Called at import, the one moment there is: the command
    imports this module (``--module pipeline.tasks``) and reads ``[retcode]`` right after, before
    any task of ours exists. Both are idempotent: in a ``daydream`` process, whose ``main`` has
    layered the config already, importing this module adds only the log filter."""
    config.use_project_config()
    luigi_command.install_filter()


_as_the_luigi_command()
logger = logging.getLogger("luigi-interface")
PROGRESS_INTERVAL_S = 0.5  # a batch reports its progress to the scheduler at most this often
GENERATION_PRIORITY = {"draft": 100, "essay": 110, "evaluation": 120}  # finish lineages first
CHUNK_PRIORITY = 10
CHUNKS_OPEN = 2  # a chunk opens once the one this many before it has settled
REPORT_PRIORITY = 0
BATCH_TAG = "@batch-"
BATCH_ROUNDS = 8  # a batch's generations per unit of its provider's resource (unless batch_size is set)


def run_stamp() -> str:
    """A run's ``since``: now, in the format failures are recorded with (so they compare)."""
    return utc_stamp()


def _since_parameter():
    """When the run started: failures recorded since then are settled for it. Not significant,
    so every run names the same tasks; hidden from the visualiser's task names."""
    return luigi.Parameter(default="", significant=False, visibility=ParameterVisibility.HIDDEN)


def _run_parameter():
    """Which cohort's run a generation belongs to (its spend ledger): not significant (a
    generation is the same task in every cohort that shares it), hidden like ``since``."""
    return luigi.Parameter(default="", significant=False, visibility=ParameterVisibility.HIDDEN)


def _ahead_parameter():
    """Whether a chunk starts its members' calls ahead of their tasks (``executor.start_ahead``):
    only under the local scheduler, where this process runs every task it adds. Against luigid
    another process may be handed the same tasks (``[core] assistant``) and would call again.
    Decided by the process that names the run; hidden and not significant, like ``since``."""
    return luigi.OptionalBoolParameter(default=None, significant=False, visibility=ParameterVisibility.HIDDEN)


class _CapParameter(luigi.OptionalFloatParameter):
    """``--max-cost``: a mistyped amount is one line naming it, not a traceback."""

    def parse(self, x):
        try:
            return super().parse(x)
        except ValueError:
            raise DaydreamError("config", f"--max-cost {x!r} is not an amount of USD (e.g. --max-cost 5)") from None


def _cap_parameter(hidden: bool = True, significant: bool = False):
    """The run's spend cap in USD (None: no cap). Not significant for the run: a cap changes how
    far a run goes, not what it produces."""
    return _CapParameter(
        default=None, significant=significant, description="spend cap in USD (overrides the spec's budget_usd)",
        visibility=ParameterVisibility.HIDDEN if hidden else ParameterVisibility.PUBLIC)


def _budget(task, own_run: bool = False) -> Budget | None:
    """The budget of the cohort's current capped run, from its ledger (kept per task object once found).

    A generation does not go by its own ``since``: luigid keeps the parameters a task was first
    added with and hands a batch (or a task another worker added) out with those, which after a
    run at a cap belong to a run that has ended. It is created by its chunk, after the run's
    ``SpendLedger`` made the run current. A chunk or ``RunCohort`` is asked whether it is
    complete before that (``own_run``): the ledger's run counts only once it is theirs."""
    if "_budget_obj" in task.__dict__:
        return task._budget_obj
    budget = current_budget(config.data_paths(), task.run_cohort) if task.run_cohort else None
    if own_run and (budget is None or budget.since != task.since):
        return None  # asked again once the run's SpendLedger has run
    # a generation is created after its run's SpendLedger ran: what it finds then stays true
    task._budget_obj = budget
    return budget


class _DaydreamTask(luigi.Task):
    """Report user-facing failures to the scheduler as one line, not a traceback; list a task
    class's parameters once."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Made in the process that schedules, before Luigi forks a process to run any task.
        freeze_forked_children()

    @classmethod
    def get_params(cls):
        # Luigi rebuilds this list from dir(cls) on every call, and calls it about ten times per
        # task (naming, adding, loading it), a noticeable share of a generation's bookkeeping.
        # A task class's parameters are fixed once the class is defined.
        if "_params" not in cls.__dict__:
            cls._params = super().get_params()
        return list(cls._params)

    def on_failure(self, exception):
        error = from_os_error(exception)  # a full disk or a refused permission: one line naming the path
        if error is not None:
            return f"error[{error.code}]: {error.message}"
        return super().on_failure(exception)


class CompileCohort(_DaydreamTask):
    """Spec + catalogs → membership.csv, manifest.json and seeded metadata.json files."""

    cohort_id = luigi.Parameter()
    # Not significant: saying yes does not make it another task.
    yes = luigi.BoolParameter(default=False, significant=False,
                              description="compile even above [daydream] confirm_above generations")
    priority = 1000

    def complete(self):
        return is_compiled(config.data_paths(), self.cohort_id)

    def run(self):
        self.set_status_message(f"compiling cohort {self.cohort_id}")
        plan, written = compile_cohort(config.data_paths(), self.cohort_id,
                                       confirm_above=None if self.yes else config.confirm_above())
        counts = {s: len(g) for s, g in plan.generations.items()}
        self.set_status_message(f"compiled: {counts}; files written: {sum(written.values())}")


class GenerationTarget(luigi.Target):
    """A generation's outcome: exists when it is settled (see ``State.settled``), or when its
    run stopped at the spend cap (then it is "not run: budget reached" for that run)."""

    def __init__(self, stage: str, gen_id: str, since: str = "", budget: Budget | None = None):
        self.stage, self.gen_id, self.since, self.budget = stage, gen_id, since, budget

    @property
    def path(self) -> str:
        return str(config.data_paths().gen_file(self.stage, self.gen_id, "parsed.txt"))

    def exists(self) -> bool:
        if self.budget is not None and self.budget.reached():
            return True
        return settled_for_run(runtime(), self.stage, self.gen_id, self.since)


_BATCH_TAGS: dict[tuple[str, ...], str] = {}  # members -> this process's tag for their batch


def _join_batch(gen_ids) -> str:
    """A batch's ``gen_id``: its members, plus a tag unique to this process.

    luigid keeps a finished batch task's ``worker_running`` and ignores a later "done" for the
    same task id from another worker, so the same members batched again by a later run (after
    ``invalidate``) would stay RUNNING until the first worker's disconnect timeout. A tag per
    process gives each run's batches their own task ids; within a process the tag is stable,
    because a worker builds the batch task from the scheduler's reply more than once.
    """
    key = tuple(gen_ids)
    tag = _BATCH_TAGS.setdefault(key, uuid.uuid4().hex[:8])
    return ",".join(key) + BATCH_TAG + tag


def _import_model_apis() -> None:
    """Import the model APIs in the process that runs generations, itself or in processes it
    forks (a task's with ``--workers`` > 1, the executor's), before it forks any: each child then
    inherits the SDK instead of importing it again (a third of a second of CPU or more each). Cheap
    after the first time (the modules are loaded)."""
    if "pipeline.llm.batch" not in sys.modules:
        import_builtin()


class _Generation(_DaydreamTask):
    """One generation of one stage; requires its parent's task.

    ``gen_id`` is batchable: the scheduler may hand one worker several ready generations of the
    same stage at once (``gen_id="a,b,c"``); their model calls run concurrently, each writing
    its own files, and a failure stays with its own generation. A task holds as many units of
    its provider's resource as it may have calls in flight, so no number of workers exceeds the
    provider's concurrency.
    """

    stage: str = ""
    gen_id = luigi.Parameter(batch_method=_join_batch)
    since = _since_parameter()
    run_cohort = _run_parameter()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Made in the process that schedules, before Luigi forks a process for it (--workers > 1)
        _import_model_apis()

    @property
    def priority(self):
        return GENERATION_PRIORITY[self.stage]

    @property
    def max_batch_size(self):
        return self._settings()[0]

    def _settings(self) -> tuple[int, dict]:
        """Batch size and resources, read from the config once per task object (Luigi asks often).

        A batch holds one unit of its provider's resource per call it may have in flight, and
        takes up to ``BATCH_ROUNDS`` times as many generations: its calls keep every unit busy
        until the last round, so the pause between two batches (scheduling, the next task; with
        ``--workers`` > 1 a process forked for it, with its own connections) is paid once per
        several rounds of calls, not once per round (``bench/README.md`` compares round counts).
        """
        if "_cached_settings" not in self.__dict__:
            md = self._metadata(self.gen_ids()[0])
            if md.get("mode") == "copy":
                self._cached_settings = (config.batch_size() or config.COPY_BATCH, {})
            elif (batch := config.batch_settings(runtime().endpoint(md["llm_model_id"]))) is not None:
                # batch jobs: a task's members go out as jobs and hold no call slot while they wait
                self._cached_settings = (min(batch.max_requests, config.chunk_size()), {})
            else:
                rt = runtime()
                provider = rt.endpoint(md["llm_model_id"])
                calls = rt.calls_per_task(provider)
                size = config.batch_size() or calls * BATCH_ROUNDS
                self._cached_settings = (size, {config.resource_name(provider): calls})
        return self._cached_settings

    def gen_ids(self) -> list[str]:
        # once per task object: a batch's progress asks as each of its 512 members ends
        if "_gen_ids" not in self.__dict__:
            self._gen_ids = self.gen_id.split(BATCH_TAG)[0].split(",")
        return self._gen_ids

    def _metadata(self, gen_id: str) -> dict:
        cache = self.__dict__.setdefault("_md", {})
        if gen_id not in cache:
            cache[gen_id] = metadata(runtime(), self.stage, gen_id)
        return cache[gen_id]

    def requires(self):
        # once per task object: Luigi asks as it adds the task and again before running it, and
        # each parent named costs a lookup in its instance cache (its parameters parsed again)
        if "_parents" not in self.__dict__:
            self._parents = []
            if self.stage != "draft":
                parent = TASKS[PARENT_STAGE[self.stage]]
                self._parents = [parent(gen_id=self._metadata(g)["parent_gen_id"], since=self.since,
                                        run_cohort=self.run_cohort) for g in self.gen_ids()]
        return self._parents

    @property
    def resources(self):
        return self._settings()[1]

    def output(self):
        return [GenerationTarget(self.stage, g, self.since, _budget(self)) for g in self.gen_ids()]

    def _label(self, gen_id: str) -> str:
        md = self._metadata(gen_id)
        return f"{self.stage} · {md['template_id']} · {md.get('llm_model_id') or 'copy'}"

    def run(self):
        rt = runtime()
        ids = self.gen_ids()
        budget = _budget(self)
        if budget is not None and budget.reached():
            # scheduled before the run stopped at its cap (a child whose parent was not run)
            self.set_status_message(f"{self._label(ids[0])} · {BUDGET_REACHED}")
            return
        router = batch_jobs.Router(rt)
        in_jobs = [g for g in ids if router.routed(self.stage, g, self._metadata(g).get("llm_model_id"))]
        if in_jobs:  # a provider's batch jobs (pipeline/run/batch_jobs.py); what they hand back is called here
            again = batch_jobs.run(rt, self.stage, in_jobs, since=self.since, budget=budget,
                                   status=self.set_status_message)
            ids = [g for g in ids if g not in in_jobs] + again
            if not ids:
                self.set_progress_percentage(100)
                return
        note_run(rt, self.run_cohort, self.since)
        if len(ids) == 1:
            self.set_status_message(self._label(ids[0]))
            st = run_generation(rt, self.stage, ids[0], since=self.since, status=self.set_status_message,
                                budget=budget)
            self.set_status_message(f"{self._label(ids[0])} · {outcome(st)}")
            self.set_progress_percentage(100)
            return
        in_flight = max(self.resources.values()) if self.resources else len(ids)
        # those called here (not those a batch job settled), as the batch's message names them
        self._batch_members = [(g, self._metadata(g)["template_id"], self._metadata(g).get("llm_model_id") or "copy")
                               for g in ids]
        run_batch(rt, self.stage, ids, in_flight=in_flight, since=self.since, progress=self._batch_progress,
                  budget=budget)

    def _batch_progress(self, states: dict) -> None:
        # Each update is an RPC to luigid: at most a few per second, and always the last one.
        total = len(self._batch_members)
        now = time.monotonic()
        if len(states) < total and now - self.__dict__.get("_last_progress", 0.0) < PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        self.set_status_message(batch_message(self.stage, self._batch_members, states, BUDGET_REACHED))
        self.set_progress_percentage(int(100 * len(states) / total))


class DraftGeneration(_Generation):
    stage = "draft"


class EssayGeneration(_Generation):
    stage = "essay"


class EvaluationGeneration(_Generation):
    stage = "evaluation"


TASKS = {"draft": DraftGeneration, "essay": EssayGeneration, "evaluation": EvaluationGeneration}


class _RunPart(_DaydreamTask):
    """A part of one cohort's run (a chunk, a search round): it carries the run's ``since``, spend
    cap and ``ahead`` as ``RunCohort`` named them, and hands them on with ``clone``."""

    cohort_id = luigi.Parameter()
    since = _since_parameter()
    max_cost = _cap_parameter()
    ahead = _ahead_parameter()
    priority = CHUNK_PRIORITY


class CohortChunk(_RunPart):
    """A slice of a cohort's lineages (whole drafts with their essays and evaluations).

    Cheap until opened: ``run`` yields only the generations not yet settled. It requires the
    chunk ``CHUNKS_OPEN`` before it, so at most that many chunks' generations are pending at
    the scheduler whatever the number of workers (idle workers would otherwise open every chunk and
    hand it all N tasks at once), and the next chunk opens while this one's batches run, so the
    worker adding its tasks to the scheduler (against luigid an RPC each) does so while calls
    are in flight. A chunk holds no unit of the provider's resource: it would open only once
    the provider had drained.
    """

    index = luigi.IntParameter()

    @property
    def priority(self):
        # Chunks open in order, each above the next (all below the generations): the first one
        # hands the executor the chunks after it (``start_ahead``'s ``following``), while a later
        # chunk opened first would hold the only worker on its generations with the chunk ahead
        # of it not started (measured: 38 % of the call slots busy at C = 256, in order 52 %).
        return CHUNK_PRIORITY + 1 / (1 + self.index)

    @property
    def run_cohort(self) -> str:
        return self.cohort_id

    def requires(self):
        before = [self.clone(index=self.index - CHUNKS_OPEN)] if self.index >= CHUNKS_OPEN else []
        return [SpendLedger(self.cohort_id, since=self.since, max_cost=self.max_cost)] + before

    def _chunk_rows(self) -> list[list[dict]]:
        """The members of every chunk this one is among."""
        return chunk_members(config.data_paths(), self.cohort_id, config.chunk_size())

    def _members(self) -> list[dict]:
        return self._chunk_rows()[self.index]

    def _budget_reached(self) -> bool:
        budget = _budget(self, own_run=True)
        return budget is not None and budget.reached()

    def _unsettled(self) -> Iterator[dict]:
        """The members not settled for this run (none once it stopped at its cap), one at a time:
        ``complete``, asked of every chunk before the run starts, stops at the first. Luigi asks
        a chunk several times per run (complete, then run before and after its generations); a
        member settled for this run stays settled (run_state)."""
        if self._budget_reached():
            return
        rt, memo = runtime(), {}
        yield from (r for r in self._members() if not settled_for_run(rt, r["stage"], r["gen_id"], self.since, memo))

    def complete(self):
        return next(self._unsettled(), None) is None

    def run(self):
        if self.ahead and not self.__dict__.get("_started_ahead") and not self._budget_reached():
            # once: Luigi runs this again from the top when its generations have settled
            self._started_ahead = True
            _import_model_apis()  # start_ahead forks the executor's process: before its first generation task
            chunks = self._chunk_rows()
            todo = start_ahead(runtime(), self._members(), self.since, _budget(self, own_run=True),
                               following=chunks[self.index + 1:], cohort=self.cohort_id)
            if todo:
                # What the executor runs needs no task of its own: scheduling a generation task
                # only for it to join its run under way was 40 % of this process's CPU. Only
                # what is left unsettled (sent in batch jobs, not started ahead) goes to Luigi.
                self.set_status_message(f"{len(todo)} of {len(self._members())} generations under way")
                todo = settle_ahead(runtime(), todo, self.since)
        else:
            todo = list(self._unsettled())
        if todo:
            self.set_status_message(f"{len(todo)} of {len(self._members())} generations to run")
            yield [TASKS[r["stage"]](gen_id=r["gen_id"], since=self.since, run_cohort=self.cohort_id)
                   for r in lineage_ends(todo)]
        counts = cohort_counts(config.data_paths(), self._members(), self.since, budget_reached=self._budget_reached())
        self.set_status_message(counts.line())


class SpendLedger(_DaydreamTask):
    """Makes this run the cohort's current one in its spend ledger, before any call; every chunk
    requires it. Under a cap: every model with work left has prices (else the cap cannot be
    enforced: one error naming them), and the ledger counts what runs without a cap recorded in
    the store. Without one, a ledger left by an earlier capped run stops capping.

    One task per run (``since`` and the cap are significant here), so luigid never hands it out
    with an earlier run's parameters."""

    cohort_id = luigi.Parameter()
    since = luigi.Parameter(visibility=ParameterVisibility.HIDDEN)
    max_cost = _cap_parameter(significant=True)
    priority = 1000

    def complete(self):
        return prepared(config.data_paths(), self.cohort_id, self.since, self.max_cost)

    def run(self):
        prepare_budget(config.data_paths(), self.cohort_id, self.max_cost, self.since)


class SpendCapReached(luigi.ExternalTask):
    """Stands for "a higher spend cap": ``RunCohort`` yields it when its run stopped at the cap,
    so the run ends pending on an external requirement and the ``luigi`` command exits with
    ``[retcode] missing_data`` (20), apart from generation failures (``task_failed``, 30).
    Raise the cap (``--max-cost``, or ``budget_usd`` in the spec) and run again to continue."""

    cohort_id = luigi.Parameter()
    cap_usd = luigi.FloatParameter()

    def complete(self):
        return False


class SearchChunk(CohortChunk):
    """A slice of one round of a search cohort (see ``RunCohort``): a round's combos never change
    once the round is reached, so neither do its chunks, while the cohort's membership grows."""

    round = luigi.IntParameter()
    confirm = luigi.BoolParameter(default=False)

    def _chunk_rows(self) -> list[list[dict]]:
        return round_chunks(config.data_paths(), self.cohort_id, self.round, config.chunk_size(), self.confirm)


class SearchRound(_RunPart):
    """Round ``round`` of a search cohort: requires the round before it, and is known only once
    that one is scored, so ``RunCohort`` yields the rounds one at a time (dynamic dependencies).
    ``run`` syncs the search with the store (which compiles this round when it was just reached)
    and yields the round's chunks. With ``confirm``, the round's confirmation step instead (a kept
    combo on fresh draft replicates), known only once the round itself is scored."""

    round = luigi.IntParameter()
    confirm = luigi.BoolParameter(default=False)

    def requires(self):
        if self.confirm:
            return [self.clone(confirm=False)]
        return [self.clone(round=self.round - 1)] if self.round else []

    def _chunks(self) -> list[SearchChunk]:
        paths = config.data_paths()
        if not search_record_path(paths, self.cohort_id).exists():
            return []
        n = len(round_chunks(paths, self.cohort_id, self.round, config.chunk_size(), self.confirm))
        return [self.clone(SearchChunk, index=i) for i in range(n)]

    def complete(self):
        chunks = self._chunks()  # none until the round is reached and compiled
        return bool(chunks) and all(c.complete() for c in chunks)

    def run(self):
        state = sync(config.data_paths(), self.cohort_id)
        if self.round >= len(state.rounds):  # not reached: an earlier round has a failure
            return
        rnd = state.rounds[self.round]
        if self.confirm and rnd.confirm is None:  # not reached
            return
        what = (f"round {rnd.index}: confirming {rnd.confirm.combo_id}" if self.confirm
                else f"round {rnd.index}: {len(rnd.combos)} combos of {rnd.k} concepts")
        self.set_status_message(what)
        yield self._chunks()
        self.set_status_message(f"{what}, settled")


def _report_inputs(cohort_id: str) -> str:
    """Fingerprint of everything a cohort's reports read: membership, each generation's files and
    the catalogs (templates and concepts included: an edit makes generations stale, which the
    reports say)."""
    paths = config.data_paths()
    files = [paths.membership_csv(cohort_id)] + sorted(p for p in paths.raw.rglob("*") if p.is_file())
    for r in membership(paths, cohort_id):
        # metadata.json is left out: compiling another cohort that shares a generation rewrites
        # its cohort list, which changes nothing in this cohort's reports
        d = paths.gen_dir(r["stage"], r["gen_id"])
        files += [d / "raw_metadata.json", d / "parsed_metadata.json"]
    search = search_record_path(paths, cohort_id)
    return stat_fingerprint(files + ([search] if search.exists() else []))


class CohortReports(_DaydreamTask):
    """Report tables of one cohort, rebuilt whenever any persisted input changed."""

    cohort_id = luigi.Parameter()
    priority = REPORT_PRIORITY

    # No requirement on CompileCohort: the site reports every compiled cohort, and compiling
    # another cohort than the one being run would rewrite its membership (a search cohort's
    # rounds, after a catalog edit) behind its back. A cohort is compiled by its own commands
    # (`run`, `compile`, `report`); its reports read its membership as it is.

    def _marker(self):
        return config.data_paths().reports_dir(self.cohort_id) / "_inputs.json"

    def complete(self):
        if not config.data_paths().membership_csv(self.cohort_id).exists():
            return False
        from pipeline.reports import TABLES

        m = read_json(self._marker())
        reports = config.data_paths().reports_dir(self.cohort_id)
        # a table added since the reports were built (an upgrade) is built too
        return (bool(m) and m.get("fingerprint") == _report_inputs(self.cohort_id)
                and all((reports / f"{name}.csv").exists() for name in TABLES))

    def run(self):
        from pipeline.reports import build_reports

        self.set_status_message(f"building reports of {self.cohort_id}")
        fingerprint = _report_inputs(self.cohort_id)
        high, low = config.score_thresholds()
        tables = build_reports(config.data_paths(), self.cohort_id, high=high, low=low)
        if is_search_cohort(config.data_paths(), self.cohort_id):
            from pipeline.reports.search import build_search_reports

            build_search_reports(config.data_paths(), self.cohort_id, *derive(config.data_paths(), self.cohort_id),
                                 tables)
        atomic_write_json(self._marker(), {"fingerprint": fingerprint})


class ReportSite(_DaydreamTask):
    """The static report site over every compiled cohort (index, cross-cohort page, per cohort)."""

    priority = REPORT_PRIORITY

    def requires(self):
        return [CohortReports(cohort_id=c) for c in config.data_paths().compiled_cohorts()]

    def _marker(self):
        return config.data_paths().site_dir / "_inputs.json"

    def _fingerprint(self) -> str:
        """The cohorts' report states plus the site's own code and MkDocs project: a change to
        either rebuilds the site."""
        from pipeline.sitegen.build import SITE_PROJECT

        paths = config.data_paths()
        code = sorted(p for root in (Path(__file__).parent / "sitegen", SITE_PROJECT)
                      for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        return stat_fingerprint([paths.reports_dir(c) / "_inputs.json" for c in paths.compiled_cohorts()] + code)

    def complete(self):
        m = read_json(self._marker())
        return bool(m) and m.get("fingerprint") == self._fingerprint() and all(r.complete() for r in self.requires())

    def run(self):
        from pipeline.reports import build_cross_cohort
        from pipeline.sitegen import build_site

        paths = config.data_paths()
        self.set_status_message("building cross-cohort table and site")
        fingerprint = self._fingerprint()
        build_cross_cohort(paths)
        out = build_site(paths, paths.compiled_cohorts())
        atomic_write_json(self._marker(), {"fingerprint": fingerprint, "site": str(out)})


class RunCohort(_DaydreamTask):
    """Compile, every generation (chunk by chunk), then the reports and the site.

    Complete when every generation is done and the site is current, so a run with failures is
    retried by the next run. Ends failed, with the failures and their reasons, when any
    generation failed; the reports and the site are built first either way.

    A search cohort runs round by round: ``run`` syncs the search with the store (which may
    compile a new round), yields the round's ``SearchRound`` task, and once its chunks are
    settled syncs again. Luigi calls ``run`` again from the top after each yield, and every round is
    re-derived from the stored scores, so a re-run (or a run after a kill) finds the rounds
    already scored, reuses their generations and continues the same search. A round with a
    failed generation is never scored: the search waits there for the next run to retry it.
    """

    cohort_id = luigi.Parameter()
    since = _since_parameter()
    yes = luigi.BoolParameter(default=False, significant=False,
                              description="compile even above [daydream] confirm_above generations")
    max_cost = _cap_parameter(hidden=False)
    ahead = _ahead_parameter()
    # not ``--batch``: the `luigi` command reads that as an abbreviation of its --batch-email-* options
    batch_mode = luigi.BoolParameter(default=False, significant=False,
                                     description="send every provider's calls as batch jobs ([daydream] batch = true)")
    priority = CHUNK_PRIORITY

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.batch_mode:
            config.force_batch()
        if not self.since:
            # The process that names the run (the `luigi` command: `daydream run` names its own)
            # stamps it once; workers that load this task get the stamp with its parameters.
            self.since = self.param_kwargs["since"] = run_stamp()
            luigi_command.before_run(self.cohort_id, self.max_cost, self.yes)
            self._prepared = True  # before_run prepared the providers (run() need not look again)
            self.log_path = str(luigi_command.log_file(self.cohort_id, self.since)[0])
            # The `luigi` command makes its local scheduler after this task and before any run():
            # the one moment to give it these resources (`daydream run` does it itself).
            config.default_resources()
        # the `luigi` command's --local-scheduler (daydream run says which scheduler it uses)
        ahead = luigi.interface.core().local_scheduler if self.ahead is None else self.ahead
        self.ahead = self.param_kwargs["ahead"] = bool(ahead) and config.lookahead()

    def _cap(self) -> float | None:
        """``--max-cost``, else the spec's ``budget_usd``, else None (no cap); read once."""
        if "_cap_value" not in self.__dict__:
            self._cap_value = spend_cap(config.data_paths(), self.cohort_id, self.max_cost)
        return self._cap_value

    def _chunks(self) -> list[CohortChunk]:
        n = len(chunk_members(config.data_paths(), self.cohort_id, config.chunk_size()))
        return [self.clone(CohortChunk, index=i, max_cost=self._cap()) for i in range(n)]

    def _search(self) -> bool:
        if "_is_search" not in self.__dict__:
            try:
                self._is_search = is_search_cohort(config.data_paths(), self.cohort_id)
            except DaydreamError:  # CompileCohort reports it, as one line
                self._is_search = False
        return self._is_search

    def requires(self):
        # Chunks are named statically when the cohort is already compiled, so another process
        # or machine running the same command finds them and works on them too. Decided once per
        # task object: Luigi checks these requirements again just before ``run``.
        if "_requirements" not in self.__dict__:
            compiled = is_compiled(config.data_paths(), self.cohort_id) and not self._search()
            if compiled:
                try:
                    self._cap()
                except DaydreamError:
                    compiled = False  # an invalid --max-cost: run() reports it, as one line
            self._requirements = [CompileCohort(self.cohort_id, yes=self.yes)] + (self._chunks() if compiled else [])
        budget = self._budget()
        if budget is not None and budget.stopped():
            # Once this run has ended at its cap, it also *requires* a higher one: Luigi's
            # execution summary reads static requirements, and only then counts the run as
            # waiting on an external dependency (missing_data) rather than "not run".
            return self._requirements + [SpendCapReached(cohort_id=self.cohort_id, cap_usd=budget.cap)]
        return self._requirements

    @property
    def run_cohort(self) -> str:
        return self.cohort_id

    def _budget(self) -> Budget | None:
        return _budget(self, own_run=True)

    def complete(self):
        paths = config.data_paths()
        if not is_compiled(paths, self.cohort_id):
            return False
        if self._search() and not is_current(paths, self.cohort_id):
            return False
        rt, memo = runtime(), {}
        return (all(state_of(rt, r["stage"], r["gen_id"], memo).kind == DONE for r in membership(paths, self.cohort_id))
                and ReportSite().complete())

    def run(self):
        # Luigi calls run() again from the top after each yield; what was settled stays settled.
        paths = config.data_paths()
        cap = self._cap()
        if "_prepared" not in self.__dict__:
            prepare_providers(paths, self.cohort_id, self.since)
            self._prepared = True
        search = ""
        if self._search():
            search = yield from self._search_rounds(paths)
        else:
            chunks = self._chunks()
            self.set_status_message(f"{len(membership(paths, self.cohort_id))} generations in {len(chunks)} chunks"
                                    + (f", spend cap {usd(cap)}" if cap is not None else ""))
            yield chunks
        budget = self._budget()
        if "_counts" not in self.__dict__:
            luigi_command.sweep_killed_runs(paths, self.cohort_id)  # a run killed meanwhile left some
            self._counts = cohort_counts(paths, membership(paths, self.cohort_id), self.since,
                                         budget_reached=budget is not None and budget.reached())
        counts = self._counts
        line = counts.line() + (f" · {search}" if search else "")
        self.set_status_message(line + " · building reports and site")
        yield ReportSite()
        self.set_status_message(line)
        self.set_progress_percentage(100)
        summary = counts.summary() + (f"; {search}" if search else "")
        if counts.not_run_budget:
            logger.error("%s: %s; %s%s", self.cohort_id, counts.summary(read_ledger(paths, self.cohort_id)),
                         left_to_do(paths, self.cohort_id), self._log_note())
            budget.mark_stopped()
            yield SpendCapReached(cohort_id=self.cohort_id, cap_usd=cap)
        if counts.failed or counts.blocked or counts.remaining:
            logger.error("%s: %s%s", self.cohort_id, summary, self._log_note())
            raise DaydreamError("failed", f"cohort {self.cohort_id}: {summary}")
        logger.info("%s: %s%s", self.cohort_id, summary, self._log_note())

    def _log_note(self) -> str:
        """Where this run's log file is, in the process that started it (the `luigi` command)."""
        return f"; log: {self.log_path}" if getattr(self, "log_path", None) else ""

    def _search_rounds(self, paths):
        """Yield each round, the next one once it is settled; returns the search's status line. Stops when the search does, or at a round that a failure keeps unscored."""
        index = 0
        while True:
            state = sync(paths, self.cohort_id)
            self.set_status_message(state.line())
            if index >= len(state.rounds):
                if state.stopped:
                    return state.line()
                last = state.rounds[-1]
                step = f"round {last.index}'s confirmation" if last.results is not None else f"round {last.index}"
                return f"search paused at {step}: a generation of it failed (the next run retries it)"
            yield self.clone(SearchRound, round=index, max_cost=self._cap())
            state = sync(paths, self.cohort_id)
            if index < len(state.rounds) and state.rounds[index].confirm is not None:
                yield self.clone(SearchRound, round=index, confirm=True, max_cost=self._cap())
            index += 1
