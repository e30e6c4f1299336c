"""End to end through Luigi and real HTTP: a small cohort against the test LLM server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.ops.maintenance import invalidate

N_DRAFTS, N_ESSAYS, N_LLM_ESSAYS, N_EVALS = 3, 6, 3, 12
ALL_CALLS = N_DRAFTS + N_LLM_ESSAYS + N_EVALS


def completions(server):
    return [r for r in server.requests if r["path"].endswith("/chat/completions")]


def test_happy_path_writes_every_file_with_metadata(project):
    assert project.run()
    assert len(completions(project.server)) == ALL_CALLS
    assert len(project.membership("draft")) == N_DRAFTS
    assert len(project.membership("essay")) == N_ESSAYS
    assert len(project.membership("evaluation")) == N_EVALS
    for row in project.membership():
        stage, gid = row["stage"], row["gen_id"]
        for name in ("metadata.json", "prompt.txt", "raw.txt", "raw_metadata.json", "parsed.txt", "parsed_metadata.json"):
            assert project.paths.gen_file(stage, gid, name).exists(), (stage, gid, name)
        pm = project.json(stage, gid, "parsed_metadata.json")
        assert pm["success"] is True and pm["error"] is None
    draft = project.membership("draft")[0]["gen_id"]
    rm = project.json("draft", draft, "raw_metadata.json")
    assert rm["model_slug"] == "test/model-a" and rm["provider"] == "testsrv" and rm["llm_model_id"] == "srv-a"
    assert rm["finish_reason"] == "stop" and rm["truncated"] is False and rm["attempts"] == 1
    assert rm["prompt_tokens"] > 0 and rm["completion_tokens"] > 0 and rm["simulated"] is False
    assert rm["duration_s"] >= 0 and rm["started_at"] <= rm["finished_at"]
    # cost computed from the catalog's prices when the provider reports none
    assert rm["cost_usd"] == pytest.approx((rm["prompt_tokens"] * 1.0 + rm["completion_tokens"] * 2.0) / 1e6)
    assert "Answer inside <essay> tags" in project.read("draft", draft, "prompt.txt")
    assert project.read("draft", draft, "parsed.txt").endswith("A third line.")
    # per-model settings reach the request: srv-b has temperature 0.1 and max_tokens 512
    evals = [r for r in completions(project.server) if r["body"]["model"] == "test/model-b"]
    assert evals and all(r["body"]["temperature"] == 0.1 and r["body"]["max_tokens"] == 512 for r in evals)
    assert all(len(r["body"]["messages"]) == 1 and r["body"]["messages"][0]["role"] == "user" for r in evals)
    # evaluation parsed.txt holds the score; the reasoning stays in raw.txt
    v = project.membership("evaluation")[0]["gen_id"]
    assert float(project.read("evaluation", v, "parsed.txt")) == project.json("evaluation", v, "parsed_metadata.json")["score"]
    assert "Reasoning" in project.read("evaluation", v, "raw.txt")


def test_crlf_is_normalised(project):
    assert project.run()
    essay = next(r for r in project.membership("essay") if r["mode"] == "llm")["gen_id"]
    raw = project.paths.gen_file("essay", essay, "raw.txt").read_bytes()
    assert b"\r\n" not in raw and raw.count(b"\n") == 6


def test_copy_mode_is_byte_identical_and_calls_no_model(project):
    assert project.run()
    for row in project.membership("essay"):
        if row["mode"] != "copy":
            continue
        parent = project.paths.gen_file("draft", row["parent_gen_id"], "parsed.txt").read_bytes()
        for name in ("prompt.txt", "raw.txt", "parsed.txt"):
            assert project.paths.gen_file("essay", row["gen_id"], name).read_bytes() == parent
        assert project.json("essay", row["gen_id"], "raw_metadata.json")["attempts"] == 0
    essay_calls = [r for r in completions(project.server) if r["body"]["messages"][0]["content"].startswith("TASK:ESSAY")]
    assert len(essay_calls) == N_LLM_ESSAYS


def test_rerun_of_complete_cohort_makes_zero_requests(project):
    assert project.run()
    project.server.reset()
    assert project.run()
    assert completions(project.server) == []


def test_truncation_is_recorded_and_rerun_calls_the_model_again(project):
    project.server.rule = lambda body: "truncated" if "TASK:EVAL scale 0-9" in body["messages"][0]["content"] else None
    assert not project.run()
    v = next(r for r in project.membership("evaluation") if r["template_id"] == "v-nine")["gen_id"]
    rm = project.json("evaluation", v, "raw_metadata.json")
    assert rm["valid"] is False and rm["truncated"] is True and rm["invalid_reason"].startswith("truncated")
    pm = project.json("evaluation", v, "parsed_metadata.json")
    assert pm["success"] is False and "truncated" in pm["error"]
    assert not project.paths.gen_file("evaluation", v, "parsed.txt").exists()
    assert project.paths.gen_file("evaluation", v, "raw.txt").exists()  # kept for inspection
    project.server.rule = None
    project.server.reset()
    assert project.run()
    assert len(completions(project.server)) == 6  # exactly the six failed v-nine evaluations
    assert project.json("evaluation", v, "parsed_metadata.json")["success"] is True


def test_too_few_lines_fails_the_generation_and_its_descendants_only(project):
    base = project.server.responder
    project.server.responder = lambda body: "One line only." if body["messages"][0]["content"].startswith("TASK:ESSAY") else base(body)
    assert not project.run()
    for row in project.membership("essay"):
        pm = project.json("essay", row["gen_id"], "parsed_metadata.json")
        if row["mode"] == "llm":
            assert pm["success"] is False and "too few non-empty lines (1 < 5)" in pm["error"]
        else:
            assert pm["success"] is True
    for row in project.membership("evaluation"):
        essay_mode = next(e["mode"] for e in project.membership("essay") if e["gen_id"] == row["parent_gen_id"])
        done = project.paths.gen_file("evaluation", row["gen_id"], "parsed.txt").exists()
        assert done == (essay_mode == "copy")


def test_parse_failure_reason_is_persisted(project):
    base = project.server.responder
    project.server.responder = lambda body: ("I liked it a lot.\nNo number here." if "0-10" in body["messages"][0]["content"] else base(body))
    assert not project.run()
    failed = [r for r in project.membership("evaluation") if r["template_id"] == "v-ten"]
    for row in failed:
        pm = project.json("evaluation", row["gen_id"], "parsed_metadata.json")
        assert pm["success"] is False and pm["parser"] == "score"
        assert pm["error"] and "score" in pm["error"].lower()
        assert pm["raw_tail_preview"].endswith("No number here.")
    # re-running re-parses the kept valid raw: no model call, same recorded failure
    project.server.reset()
    assert not project.run()
    assert completions(project.server) == []


def test_retry_after_429_then_success(project):
    project.server.push_faults("429")
    assert project.run()
    rms = [project.json(r["stage"], r["gen_id"], "raw_metadata.json") for r in project.membership() if r["mode"] == "llm"]
    assert sorted(rm["attempts"] for rm in rms)[-1] == 2
    assert len(completions(project.server)) == ALL_CALLS + 1


def test_500_is_retried(project):
    project.server.push_faults("500", "502")
    assert project.run()
    assert len(completions(project.server)) == ALL_CALLS + 2


def test_400_is_not_retried(project):
    project.server.push_faults("400")
    assert not project.run()
    draft_calls = [r for r in completions(project.server) if r["body"]["messages"][0]["content"].startswith("TASK:DRAFT")]
    assert len(draft_calls) == N_DRAFTS  # the failed draft was tried exactly once
    failed = [r for r in project.membership("draft") if not project.paths.gen_file("draft", r["gen_id"], "parsed.txt").exists()]
    assert len(failed) == 1


def test_forced_regeneration_invalidates_descendants(project):
    assert project.run()
    draft = project.membership("draft")[0]["gen_id"]
    removed = invalidate(project.paths, gen_ids=[draft])
    stages = [s for s, _ in removed]
    assert stages.count("draft") == 1 and stages.count("essay") == 2 and stages.count("evaluation") == 4
    project.server.reset()
    assert project.run()
    assert len(completions(project.server)) == 1 + 1 + 4  # draft, llm essay, four evaluations


def test_template_edit_invalidates_its_generations_only(project):
    assert project.run()
    t = project.paths.template_file("evaluation", "v-ten")
    t.write_text(t.read_text().replace("End with", "Please end with"))
    project.server.reset()
    assert project.run()
    calls = completions(project.server)
    assert len(calls) == 6 and all("Please end with" in c["body"]["messages"][0]["content"] for c in calls)


def _cli(project, *args, env_extra=None):
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(project.root))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_missing_key_is_one_clear_error_before_any_work(project, tmp_path):
    cfg = tmp_path / "keys.cfg"
    cfg.write_text(f"[llm.testsrv]\nbase_url = {project.server.base_url}\napi_key_env = DAYDREAM_TEST_KEY\n")
    env = {"LUIGI_CONFIG_PATH": str(cfg)}
    env.pop("DAYDREAM_TEST_KEY", None)
    r = _cli(project, "run", "t1", env_extra=env)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip().splitlines()[-1]]
    assert "error[missing_key]" in r.stderr and "DAYDREAM_TEST_KEY" in r.stderr and "Traceback" not in r.stderr
    assert completions(project.server) == []
    assert not list((project.root / "gens").glob("*/*/raw.txt"))


def test_luigi_command_exit_codes(project, tmp_path):
    cfg = tmp_path / "srv.cfg"
    cfg.write_text(f"[llm.testsrv]\nbase_url = {project.server.base_url}\napi_key_env =\nmax_attempts = 1\n"
                   "[resources]\nllm_testsrv = 4\n")
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(project.root), LUIGI_CONFIG_PATH=str(cfg))
    cmd = [sys.executable, "-m", "luigi", "--module", "pipeline.tasks", "RunCohort", "--cohort-id", "t1", "--local-scheduler",
           "--no-lock"]  # Luigi refuses a command line that another test is running at the same moment
    project.server.push_faults("400")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 30, r.stderr[-2000:]
    project.server.reset()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(completions(project.server)) == 1 + 1 + 4  # the failed draft, its llm essay, four evaluations


def test_luigi_command_bounds_a_provider_that_sets_only_its_concurrency(project, tmp_path, monkeypatch):
    # no [resources] entry: the local scheduler, made by the command after RunCohort, must still
    # grant the provider its concurrency (unsynced, it granted 1 unit and no batch ever ran)
    cfg = tmp_path / "srv.cfg"
    cfg.write_text(f"[llm.testsrv]\nbase_url = {project.server.base_url}\napi_key_env =\nconcurrency = 3\n")
    monkeypatch.setattr(project.server, "latency", 0.2)  # calls overlap: the bound is seen
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(project.root), LUIGI_CONFIG_PATH=str(cfg))
    cmd = [sys.executable, "-m", "luigi", "--module", "pipeline.tasks", "RunCohort", "--cohort-id", "t1", "--local-scheduler",
           "--no-lock"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    llm = [m for m in project.membership() if m["llm_model_id"]]
    assert len(completions(project.server)) == len(llm) > 3
    assert 1 < project.server.max_concurrency_seen <= 3


def test_scoring_existing_essays_with_a_new_rubric_regenerates_nothing(project):
    assert project.run()
    essays = [r["gen_id"] for r in project.membership("essay")][:2]
    spec_dir = project.root / "cohorts" / "rescore" / "spec"
    spec_dir.mkdir(parents=True)
    (spec_dir / "config.yaml").write_text(
        "axes:\n"
        f"  essay_gen_id: [{', '.join(essays)}]\n"
        "  evaluation_template: [v-ten]\n"
        "  evaluation_llm: [srv-a]\n"
    )
    project.server.reset()
    project.cohort = "rescore"
    assert project.run()
    calls = completions(project.server)
    assert len(calls) == 2 and all(c["body"]["messages"][0]["content"].startswith("TASK:EVAL scale 0-10") for c in calls)
    rows = project.membership()
    assert [r["stage"] for r in rows] == ["evaluation", "evaluation"]
    assert sorted(r["parent_gen_id"] for r in rows) == sorted(essays)
    # the essays are parents from the store, not members of the new cohort: their metadata is untouched
    for e in essays:
        assert project.json("essay", e, "metadata.json")["cohorts"] == ["t1"]
    scores = (project.paths.reports_dir("rescore") / "scores.csv").read_text()
    assert all(e in scores for e in essays)
