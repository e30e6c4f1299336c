"""A parse failure is not a lost call: re-runs and ``daydream reparse`` re-read the kept raw
response with 0 model calls, against the real test LLM server (tests/llm_server.py)."""

from __future__ import annotations

import csv

from conftest import reset_luigi_state

from pipeline.design import parsers
from pipeline.cli import main
from pipeline.run.estimate import remaining_calls


def completions(server):
    return [r for r in server.requests if r["path"].endswith("/chat/completions")]


def answers_out_of_ten_on_the_0_9_rubric(base):
    """The v-nine rubric (0–9) answered on a 0–10 scale: a parse failure (never rescaled)."""
    return lambda body: ("Reasoning.\nSCORE: 8/10\n" if "scale 0-9" in body["messages"][0]["content"] else base(body))


def generations_report(project):
    path = project.paths.reports_dir(project.cohort) / "generations.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["gen_id"]: r for r in csv.DictReader(fh)}


def v_nine(project):
    return [r["gen_id"] for r in project.membership("evaluation") if r["template_id"] == "v-nine"]


def daydream(*args: str) -> int:
    reset_luigi_state()  # as a fresh `daydream` process: today's catalog, no cached runtime
    return main(list(args))


def test_reparse_after_a_scale_fix_makes_no_call_and_turns_failures_into_scores(project, capsys):
    project.server.responder = answers_out_of_ten_on_the_0_9_rubric(project.server.responder)
    assert not project.run()
    failed = v_nine(project)
    assert len(failed) == 6
    for gid in failed:
        pm = project.json("evaluation", gid, "parsed_metadata.json")
        assert pm["success"] is False and "refusing to rescale" in pm["error"]
        assert project.json("evaluation", gid, "raw_metadata.json")["valid"] is True  # the paid answer is kept
    report = generations_report(project)
    assert {report[g]["error"] for g in failed} == {"parse_failure"}
    assert all("refusing to rescale" in report[g]["error_detail"] for g in failed)

    # the estimate knows a re-run pays for none of them, and a plain re-run re-parses the kept raw
    reset_luigi_state()
    assert remaining_calls(project.paths, project.cohort) == []
    project.server.reset()
    assert not project.run()
    assert completions(project.server) == []
    capsys.readouterr()
    assert daydream("status", project.cohort) == 1
    assert "daydream reparse" in capsys.readouterr().out  # status says how to re-read them

    # the researcher fixes the rubric's scale in the catalog; reparse reads the kept answers again
    csv_path = project.paths.raw / "evaluation_templates.csv"
    csv_path.write_text(csv_path.read_text().replace(",score,llm,0,9", ",score,llm,0,10"))
    assert daydream("reparse", project.cohort) == 0
    assert completions(project.server) == []
    out = capsys.readouterr().out
    assert "6 outcomes changed (6 now done, 0 now failing)" in out and "0 parse failures remain" in out
    for gid in failed:
        pm = project.json("evaluation", gid, "parsed_metadata.json")
        assert pm["success"] is True and pm["score"] == 8.0 and pm["scale_max"] == 10
        assert project.read("evaluation", gid, "parsed.txt") == "8"
    report = generations_report(project)  # the reports were rebuilt
    assert {report[g]["status"] for g in failed} == {"done"}
    assert (project.paths.site_dir / "build" / "index.html").exists()
    # everything is done now: a run makes no call either
    assert project.run()
    assert completions(project.server) == []
    # and a second reparse changes nothing
    assert daydream("reparse", project.cohort, "--stage", "evaluation") == 0
    assert "0 outcomes changed" in capsys.readouterr().out
    assert completions(project.server) == []


def test_reparse_after_a_parser_fix_corrects_done_scores(project, monkeypatch, capsys):
    real = parsers.PARSERS["score"]

    def misreads_ten_point_rubrics(text, **kw):  # a parser bug: 0-10 answers read as 1
        return "1" if kw.get("scale_max") == 10 else real(text, **kw)

    monkeypatch.setitem(parsers.PARSERS, "score", misreads_ten_point_rubrics)
    assert project.run()
    tens = [r["gen_id"] for r in project.membership("evaluation") if r["template_id"] == "v-ten"]
    assert {project.read("evaluation", g, "parsed.txt") for g in tens} == {"1"}
    project.server.reset()
    monkeypatch.setitem(parsers.PARSERS, "score", real)  # the fix: a done evaluation is not stale, only reparse reads it
    assert daydream("reparse") == 0  # the whole gens store
    assert completions(project.server) == []
    assert "6 outcomes changed (0 now done, 0 now failing)" in capsys.readouterr().out
    for g in tens:
        raw = project.read("evaluation", g, "raw.txt")
        assert float(project.read("evaluation", g, "parsed.txt")) == parsers.parse_score(raw, 0, 10) != 1


def test_recall_failures_pays_again_only_for_what_still_fails(project, monkeypatch, capsys):
    base = project.server.responder
    project.server.responder = answers_out_of_ten_on_the_0_9_rubric(base)
    assert not project.run()
    project.server.reset()
    assert daydream("reparse", project.cohort) == 1  # still failing: nothing fixed them
    assert completions(project.server) == []
    assert "6 parse failures remain" in capsys.readouterr().out
    project.server.responder = base  # the model now answers on the rubric's scale
    assert daydream("reparse", project.cohort, "--recall-failures") == 0
    calls = completions(project.server)
    assert len(calls) == 6 and all("scale 0-9" in c["body"]["messages"][0]["content"] for c in calls)
    for gid in v_nine(project):
        assert project.json("evaluation", gid, "parsed_metadata.json")["success"] is True


def test_reparse_errors_are_one_line(project, capsys):
    assert daydream("reparse", "no-such-cohort") == 2
    assert "error[" in capsys.readouterr().err
    assert daydream("reparse", "--recall-failures") == 2
    assert "needs a cohort" in capsys.readouterr().err



def test_a_generation_whose_template_left_the_catalog_is_skipped_not_fatal(project):
    from pipeline.ops.reparse import reparse

    assert project.run()
    csv_path = project.paths.raw / "evaluation_templates.csv"
    csv_path.write_text("\n".join(l for l in csv_path.read_text().splitlines() if not l.startswith("v-nine,")) + "\n")
    project.server.reset()
    reset_luigi_state()
    result = reparse(project.paths)  # the whole store, as for generations of another cohort
    assert len(result.skipped) == 6 and all("v-nine" in why for why in result.skipped)
    assert result.reread == 3 + 3 + 6 and result.changed == 0  # the rest is read, unchanged
    assert "6 skipped (first: evaluation " in result.line("gens store")
    assert completions(project.server) == []
