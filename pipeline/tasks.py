"""Luigi tasks: wiring only (parameters, requires, output, one call into the library).

``luigi --module pipeline.tasks RunCohort --cohort-id demo [--local-scheduler]`` runs a cohort:
compile, every generation (one task per stage and gen_id, each requiring its parent's task),
reports and the site.
"""

from __future__ import annotations

import logging

import luigi

from . import config
from .cohort import compile_cohort, is_compiled, read_membership
from .errors import DaydreamError
from .stages import is_complete, metadata, run_generation, runtime
from .store import atomic_write_json, read_json, stat_fingerprint

log = logging.getLogger("pipeline.tasks")


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
    """One generation of one stage; its output is the generation's parsed text."""

    stage: str = ""
    gen_id = luigi.Parameter()

    @property
    def _metadata(self) -> dict:
        if not hasattr(self, "_md"):
            self._md = metadata(runtime(), self.stage, self.gen_id)
        return self._md

    def requires(self):
        parent = self._metadata.get("parent_gen_id")
        return [] if self.stage == "draft" else [TASKS[_PARENT[self.stage]](gen_id=parent)]

    @property
    def resources(self):
        md = self._metadata
        if md.get("mode") == "copy":
            return {}
        return {config.resource_name(runtime().catalog.model(md["llm_model_id"]).provider): 1}

    def output(self):
        return luigi.LocalTarget(str(config.data_paths().gen_file(self.stage, self.gen_id, "parsed.txt")))

    def complete(self):
        return is_complete(runtime(), self.stage, self.gen_id)

    def run(self):
        md = self._metadata
        self.set_status_message(f"{self.stage} · {md['template_id']} · {md.get('llm_model_id') or 'copy'}")
        self.set_progress_percentage(0)
        outcome = run_generation(runtime(), self.stage, self.gen_id, status=self.set_status_message)
        self.set_progress_percentage(100)
        self.set_status_message(f"{self.stage} · {md['template_id']} · {md.get('llm_model_id') or 'copy'} · {outcome}")


class DraftGeneration(_Generation):
    stage = "draft"


class EssayGeneration(_Generation):
    stage = "essay"


class EvaluationGeneration(_Generation):
    stage = "evaluation"


TASKS = {"draft": DraftGeneration, "essay": EssayGeneration, "evaluation": EvaluationGeneration}
_PARENT = {"essay": "draft", "evaluation": "essay"}


def generation_tasks(cohort_id: str) -> list[_Generation]:
    """Every generation task of a compiled cohort, drafts first."""
    return [TASKS[r["stage"]](gen_id=r["gen_id"]) for r in read_membership(config.data_paths(), cohort_id)]


def check_keys_for(tasks) -> None:
    """One clear error, before any generation runs, if a provider the work needs has no key."""
    rt = runtime()
    providers = set()
    for t in tasks:
        md = t._metadata
        if md.get("mode") != "copy" and not t.complete():
            providers.add(rt.catalog.model(md["llm_model_id"]).provider)
    rt.require_keys(providers)


def _report_inputs(cohort_id: str) -> str:
    """Fingerprint of everything a cohort's reports read: membership and each generation's files."""
    paths = config.data_paths()
    files = [paths.membership_csv(cohort_id), paths.catalog_csv("evaluation_templates.csv"),
             paths.catalog_csv("llm_models.csv")]
    for r in read_membership(paths, cohort_id):
        d = paths.gen_dir(r["stage"], r["gen_id"])
        files += [d / "metadata.json", d / "raw_metadata.json", d / "parsed_metadata.json"]
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


def compiled_cohorts() -> list[str]:
    paths = config.data_paths()
    if not paths.cohorts.is_dir():
        return []
    return sorted(p.name for p in paths.cohorts.iterdir() if paths.membership_csv(p.name).exists())


class ReportSite(_DaydreamTask):
    """The static report site over every compiled cohort (index, cross-cohort page, per cohort)."""

    def requires(self):
        return [CohortReports(cohort_id=c) for c in compiled_cohorts()]

    def _marker(self):
        return config.data_paths().site_dir / "_inputs.json"

    def _fingerprint(self) -> str:
        paths = config.data_paths()
        return stat_fingerprint([paths.reports_dir(c) / "_inputs.json" for c in compiled_cohorts()])

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
        out = build_site(paths, compiled_cohorts())
        atomic_write_json(self._marker(), {"fingerprint": fingerprint, "site": str(out)})


class RunCohort(_DaydreamTask):
    """Compile, then every generation, then reports and the site. Generations are dynamic
    dependencies because the set of gen_ids is only known once the cohort is compiled."""

    cohort_id = luigi.Parameter()

    def requires(self):
        return CompileCohort(self.cohort_id)

    def complete(self):
        return (is_compiled(config.data_paths(), self.cohort_id)
                and all(t.complete() for t in generation_tasks(self.cohort_id))
                and ReportSite().complete())

    def run(self):
        tasks = generation_tasks(self.cohort_id)
        check_keys_for(tasks)
        self.set_status_message(f"{len(tasks)} generations")
        yield tasks
        self.set_status_message("reports and site")
        yield ReportSite()
