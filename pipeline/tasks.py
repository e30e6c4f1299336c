"""Luigi tasks: wiring only (parameters, requires, output, one call into the library).

``luigi --module pipeline.tasks RunCohort --cohort-id demo [--local-scheduler]`` runs a cohort:
compile, every generation (one task per stage and gen_id, each requiring its parent's task),
reports and the site.
"""

from __future__ import annotations

import time
from pathlib import Path

import luigi

from . import config
from .cohort import compile_cohort, is_compiled, read_membership
from .errors import DaydreamError
from .stages import is_complete, metadata, run_batch, run_generation, runtime
from .store import PARENT_STAGE, atomic_write_json, read_json, stat_fingerprint

PROGRESS_INTERVAL_S = 0.5  # a batch reports its progress to the scheduler at most this often


class _DaydreamTask(luigi.Task):
    """Report user-facing failures to the scheduler as one line, not a traceback."""

    def on_failure(self, exception):
        if isinstance(exception, DaydreamError):
            return f"error[{exception.code}]: {exception.message}"
        return super().on_failure(exception)


class CompileCohort(_DaydreamTask):
    """Spec + catalogs → membership.csv, manifest.json and seeded metadata.json files."""

    cohort_id = luigi.Parameter()

    def complete(self):
        return is_compiled(config.data_paths(), self.cohort_id)

    def run(self):
        self.set_status_message(f"compiling cohort {self.cohort_id}")
        plan, written = compile_cohort(config.data_paths(), self.cohort_id)
        counts = {s: len(g) for s, g in plan.generations.items()}
        self.set_status_message(f"compiled: {counts}; files written: {written}")


class _Generation(_DaydreamTask):
    """One generation of one stage; its output is the generation's parsed text.

    ``gen_id`` is batchable: the scheduler may hand one worker several ready generations of the
    same stage and provider at once (``gen_id="a,b,c"``), which run their model calls
    concurrently while still writing one target per gen_id. Each batch holds as many units of
    the provider's resource as it may have calls in flight, so no number of workers exceeds the
    provider's concurrency.
    """

    stage: str = ""
    gen_id = luigi.Parameter(batch_method=",".join)

    @property
    def max_batch_size(self):
        return config.batch_size()

    def gen_ids(self) -> list[str]:
        return self.gen_id.split(",")

    def _metadata(self, gen_id: str) -> dict:
        cache = self.__dict__.setdefault("_md", {})
        if gen_id not in cache:
            cache[gen_id] = metadata(runtime(), self.stage, gen_id)
        return cache[gen_id]

    def requires(self):
        if self.stage == "draft":
            return []
        parent = TASKS[PARENT_STAGE[self.stage]]
        return [parent(gen_id=self._metadata(g)["parent_gen_id"]) for g in self.gen_ids()]

    @property
    def resources(self):
        md = self._metadata(self.gen_ids()[0])
        if md.get("mode") == "copy":
            return {}
        provider = runtime().catalog.model(md["llm_model_id"]).provider
        return {config.resource_name(provider): config.calls_per_task(provider)}

    def output(self):
        paths = config.data_paths()
        return [luigi.LocalTarget(str(paths.gen_file(self.stage, g, "parsed.txt"))) for g in self.gen_ids()]

    def complete(self):
        rt = runtime()
        return all(is_complete(rt, self.stage, g) for g in self.gen_ids())

    def _label(self, gen_id: str) -> str:
        md = self._metadata(gen_id)
        return f"{self.stage} · {md['template_id']} · {md.get('llm_model_id') or 'copy'}"

    def run(self):
        rt = runtime()
        ids = self.gen_ids()
        if len(ids) == 1:
            self.set_status_message(self._label(ids[0]))
            outcome = run_generation(rt, self.stage, ids[0], status=self.set_status_message)
            self.set_status_message(f"{self._label(ids[0])} · {outcome}")
            self.set_progress_percentage(100)
            return
        errors = run_batch(rt, self.stage, ids, threads=self.resources and max(self.resources.values()) or len(ids),
                           progress=self._batch_progress)
        if errors:
            shown = "; ".join(f"{g}: {e.message}" for g, e in list(errors.items())[:5])
            raise DaydreamError(errors[next(iter(errors))].code,
                                f"{len(errors)} of {len(ids)} generations in this batch failed: {shown}")

    def _batch_progress(self, done: int, failed: int, total: int) -> None:
        # Each update is an RPC to luigid: at most a few per second, and always the last one.
        now = time.monotonic()
        if done + failed < total and now - self.__dict__.get("_last_progress", 0.0) < PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        self.set_status_message(f"{self.stage} batch: {done} done, {failed} failed, {total - done - failed} running")
        self.set_progress_percentage(int(100 * (done + failed) / total))


class DraftGeneration(_Generation):
    stage = "draft"


class EssayGeneration(_Generation):
    stage = "essay"


class EvaluationGeneration(_Generation):
    stage = "evaluation"


TASKS = {"draft": DraftGeneration, "essay": EssayGeneration, "evaluation": EvaluationGeneration}


def generation_tasks(cohort_id: str) -> list[_Generation]:
    """Every generation task of a compiled cohort, drafts first."""
    return [TASKS[r["stage"]](gen_id=r["gen_id"]) for r in read_membership(config.data_paths(), cohort_id)]


def prepare_providers(tasks) -> None:
    """Before any generation runs: bound each provider through its Luigi resource, and fail with
    one clear error if a provider that still has work to do has no API key."""
    rt = runtime()
    used, todo = set(), set()
    for t in tasks:
        md = t._metadata(t.gen_id)
        if md.get("mode") != "copy":
            provider = rt.catalog.model(md["llm_model_id"]).provider
            used.add(provider)
            if provider not in todo and not t.complete():
                todo.add(provider)
    config.validate(used)
    config.sync_resources(used)
    rt.require_keys(todo)


def _report_inputs(cohort_id: str) -> str:
    """Fingerprint of everything a cohort's reports read: membership and each generation's files."""
    paths = config.data_paths()
    files = [paths.membership_csv(cohort_id), paths.catalog_csv("evaluation_templates.csv"),
             paths.catalog_csv("llm_models.csv")]
    for r in read_membership(paths, cohort_id):
        # metadata.json is left out: compiling another cohort that shares a generation rewrites
        # its cohort list, which changes nothing in this cohort's reports
        d = paths.gen_dir(r["stage"], r["gen_id"])
        files += [d / "raw_metadata.json", d / "parsed_metadata.json"]
    return stat_fingerprint(files)


class CohortReports(_DaydreamTask):
    """Report tables of one cohort, rebuilt whenever any persisted input changed."""

    cohort_id = luigi.Parameter()

    def requires(self):
        return CompileCohort(self.cohort_id)

    def _marker(self):
        return config.data_paths().reports_dir(self.cohort_id) / "_inputs.json"

    def complete(self):
        if not is_compiled(config.data_paths(), self.cohort_id):
            return False
        m = read_json(self._marker())
        return bool(m) and m.get("fingerprint") == _report_inputs(self.cohort_id)

    def run(self):
        from .reports import build_reports

        self.set_status_message(f"building reports of {self.cohort_id}")
        fingerprint = _report_inputs(self.cohort_id)
        high, low = config.score_thresholds()
        build_reports(config.data_paths(), self.cohort_id, high=high, low=low)
        atomic_write_json(self._marker(), {"fingerprint": fingerprint})


class ReportSite(_DaydreamTask):
    """The static report site over every compiled cohort (index, cross-cohort page, per cohort)."""

    def requires(self):
        return [CohortReports(cohort_id=c) for c in config.data_paths().compiled_cohorts()]

    def _marker(self):
        return config.data_paths().site_dir / "_inputs.json"

    def _fingerprint(self) -> str:
        """The cohorts' report states plus the site's own code and MkDocs project: a change to
        either rebuilds the site."""
        from .sitegen.build import SITE_PROJECT

        paths = config.data_paths()
        code = sorted(p for root in (Path(__file__).parent / "sitegen", SITE_PROJECT)
                      for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        return stat_fingerprint([paths.reports_dir(c) / "_inputs.json" for c in paths.compiled_cohorts()] + code)

    def complete(self):
        m = read_json(self._marker())
        return bool(m) and m.get("fingerprint") == self._fingerprint() and all(r.complete() for r in self.requires())

    def run(self):
        from .reports import build_cross_cohort
        from .sitegen import build_site

        paths = config.data_paths()
        self.set_status_message("building cross-cohort table and site")
        fingerprint = self._fingerprint()
        build_cross_cohort(paths)
        out = build_site(paths, paths.compiled_cohorts())
        atomic_write_json(self._marker(), {"fingerprint": fingerprint, "site": str(out)})


class RunCohort(_DaydreamTask):
    """Compile, every generation, then reports and the site.

    Generations are handed to the scheduler in chunks by ``running.drive`` (one nested build per
    chunk): Luigi's scheduler rescans every pending task on each request, so a flat list of N
    tasks costs O(N²); bounded chunks keep it linear, and a failure in one chunk never stops the
    others. Each generation is still its own task in the visualiser.
    """

    cohort_id = luigi.Parameter()
    # How the nested per-chunk builds reach the scheduler; empty = as this process was started.
    build = luigi.DictParameter(default={}, significant=False,
                                visibility=luigi.parameter.ParameterVisibility.HIDDEN)

    def requires(self):
        return CompileCohort(self.cohort_id)

    def complete(self):
        return (is_compiled(config.data_paths(), self.cohort_id)
                and all(t.complete() for t in generation_tasks(self.cohort_id))
                and ReportSite().complete())

    def run(self):
        from .running import drive, nested_build_kwargs

        prepare_providers(generation_tasks(self.cohort_id))
        kwargs = dict(self.build) or nested_build_kwargs()
        result = drive(self.cohort_id, kwargs, progress=self._progress)
        self.set_status_message("reports and site")
        luigi.build([ReportSite()], **kwargs)
        if result.failed:
            raise DaydreamError("failed", result.summary())
        self.set_status_message(result.summary())

    def _progress(self, counts: dict) -> None:
        from .running import PROGRESS_HOOKS

        for hook in PROGRESS_HOOKS:
            hook(counts)
        total = max(1, counts["total"])
        self.set_status_message(
            f"done {counts['done']}, failed {counts['failed']}, remaining {counts['remaining']} of {counts['total']}")
        self.set_progress_percentage(int(100 * (counts["done"] + counts["failed"]) / total))
