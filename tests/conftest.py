"""Shared pytest fixtures. Keep each fixture in its own clearly marked section."""

from __future__ import annotations

import pytest

# -- LLM test server (tests/llm_server.py) ------------------------------------------------------------


@pytest.fixture
def llm_server():
    """A real OpenAI-compatible server on 127.0.0.1 with fault injection; stopped after the test."""
    from llm_server import LLMServer

    with LLMServer() as server:
        yield server


# -- A project: data root + luigi config pointing provider "testsrv" at the test LLM server -------


class Project:
    def __init__(self, root, server, cohort="t1"):
        from pipeline.store import DataPaths

        self.root, self.server, self.cohort = root, server, cohort
        self.paths = DataPaths(root)

    def run(self, workers: int = 1) -> bool:
        """Run the cohort in-process with the local scheduler; True when everything succeeded."""
        from pipeline.running import run_cohort

        reset_luigi_state()
        return run_cohort(self.cohort, workers=workers) == 0

    def membership(self, stage=None):
        from pipeline.cohort import read_membership

        return [r for r in read_membership(self.paths, self.cohort) if stage is None or r["stage"] == stage]

    def read(self, stage, gen_id, name):
        return self.paths.gen_file(stage, gen_id, name).read_text()

    def json(self, stage, gen_id, name):
        import json

        return json.loads(self.read(stage, gen_id, name))


def reset_luigi_state():
    """Luigi caches task instances per process and our runtime caches the catalog: start clean."""
    import luigi.task_register

    from pipeline import stages

    luigi.task_register.Register.clear_instance_cache()
    stages._RUNTIMES.clear()


TEST_PROVIDER = {
    "api_key_env": "", "concurrency": "4", "timeout": "1.5", "max_attempts": "3",
    "backoff_base": "0.05", "backoff_max": "1.5",
}


@pytest.fixture
def project(tmp_path, llm_server, monkeypatch):
    import luigi.configuration

    from datafactory import make_data_root, responder

    root = make_data_root(tmp_path / "data")
    monkeypatch.setenv("DAYDREAM_DATA_ROOT", str(root))
    cfg = luigi.configuration.get_config()
    if not cfg.has_section("llm.testsrv"):
        cfg.add_section("llm.testsrv")
    cfg.set("llm.testsrv", "base_url", llm_server.base_url)
    for k, v in TEST_PROVIDER.items():
        cfg.set("llm.testsrv", k, v)
    if not cfg.has_section("resources"):
        cfg.add_section("resources")
    cfg.set("resources", "llm_testsrv", "4")
    llm_server.responder = responder
    reset_luigi_state()
    yield Project(root, llm_server)
    cfg.remove_section("llm.testsrv")
    reset_luigi_state()
