"""Structured output: an evaluation template with output_format = json gets its JSON schema stated
in the prompt and, where the provider enforces it (structured_output = json_schema), sent as
response_format; the test server and the offline simulator answer it; the parser reads it first."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import reset_luigi_state

from pipeline.errors import DaydreamError
from pipeline.llm import CompletionRequest, GenerationContext, ProviderSettings, make_provider
from pipeline.llm.offline import OfflineAPI
from pipeline.design.parsers import parse_score
from pipeline.design.structured import INSTRUCTION, score_schema, with_schema


def completions(server):
    return [r for r in server.requests if r["path"].endswith("/chat/completions")]


def test_schema_is_strict_and_on_the_rubric_scale():
    schema = score_schema(1, 5)
    assert schema["required"] == ["reasoning", "score"] and schema["additionalProperties"] is False
    assert schema["properties"]["score"] == {**schema["properties"]["score"], "type": "number", "minimum": 1, "maximum": 5}
    prompt = with_schema("Rate the essay.\n", schema)
    assert prompt.startswith("Rate the essay.\n\n" + INSTRUCTION)
    assert json.loads(prompt.split(INSTRUCTION, 1)[1]) == schema


def _ask(api, schema):
    request = CompletionRequest(prompt=with_schema("TASK:EVAL\nRate it.", schema), model_slug="test/model-b",
                                json_schema=schema,
                                context=GenerationContext(stage="evaluation", parser="score", scale_min=0, scale_max=10))
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(api.generate(request))
    finally:
        loop.run_until_complete(api.aclose())
        loop.close()


@pytest.mark.parametrize("mode", ["json_schema", "prompt"])
def test_openai_provider_sends_response_format_only_where_the_provider_enforces_it(llm_server, mode):
    schema = score_schema(0, 10)
    llm_server.responder = lambda body: '{"reasoning": "plain", "score": 3}'  # what a model told in the prompt writes
    settings = ProviderSettings(name="local", base_url=llm_server.base_url, api_key_env=None,
                                timeout_s=2.0, max_attempts=1, structured_output=mode)
    completion = _ask(make_provider(settings, {}), schema)
    [request] = completions(llm_server)
    if mode == "json_schema":
        assert request["body"]["response_format"] == {
            "type": "json_schema", "json_schema": {"name": "evaluation", "strict": True, "schema": schema}}
        answer = json.loads(completion.text)
        assert set(answer) == {"reasoning", "score"} and 0 <= answer["score"] <= 10
        assert parse_score(completion.text, 0, 10) == answer["score"]
    else:
        assert "response_format" not in request["body"]
        assert parse_score(completion.text, 0, 10) == 3
    assert INSTRUCTION in request["body"]["messages"][0]["content"]


def test_offline_simulator_answers_the_schema():
    completion = _ask(OfflineAPI(), score_schema(0, 10))
    answer = json.loads(completion.text)
    assert set(answer) == {"reasoning", "score"} and answer["reasoning"]
    assert 0 <= answer["score"] <= 10 and parse_score(completion.text, 0, 10) == answer["score"]


def test_bad_output_format_and_structured_output_are_one_error(project, monkeypatch):
    import luigi.configuration

    from pipeline import config
    from pipeline.design.catalog import load_catalog

    p = project.paths.raw / "evaluation_templates.csv"
    lines = p.read_text().splitlines()
    p.write_text("\n".join([lines[0] + ",output_format"] + [line + ",yaml" for line in lines[1:]]) + "\n")
    with pytest.raises(DaydreamError) as info:
        load_catalog(project.paths)
    assert "output_format 'yaml'" in str(info.value) and "evaluation_templates.csv" in str(info.value)
    luigi.configuration.get_config().set("llm.testsrv", "structured_output", "xml")
    with pytest.raises(DaydreamError) as info:
        config.provider_settings("testsrv")
    assert "structured_output 'xml'" in str(info.value)
    luigi.configuration.get_config().remove_option("llm.testsrv", "structured_output")


def test_a_cohort_with_a_json_rubric_runs_end_to_end(project):
    import luigi.configuration

    p = project.paths.raw / "evaluation_templates.csv"
    lines = p.read_text().splitlines()
    p.write_text("\n".join([lines[0] + ",output_format"]
                           + [line + (",json" if line.startswith("v-ten,") else ",") for line in lines[1:]]) + "\n")
    luigi.configuration.get_config().set("llm.testsrv", "structured_output", "json_schema")
    try:
        assert project.run()
    finally:
        luigi.configuration.get_config().remove_option("llm.testsrv", "structured_output")
    tens = [r for r in completions(project.server) if "scale 0-10" in r["body"]["messages"][0]["content"]]
    nines = [r for r in completions(project.server) if "scale 0-9" in r["body"]["messages"][0]["content"]]
    assert len(tens) == 6 and len(nines) == 6
    assert all(r["body"]["response_format"]["json_schema"]["schema"] == score_schema(0, 10) for r in tens)
    assert all("response_format" not in r["body"] and INSTRUCTION not in r["body"]["messages"][0]["content"]
               for r in nines)
    for row in project.membership("evaluation"):
        if row["template_id"] != "v-ten":
            continue
        raw = project.read("evaluation", row["gen_id"], "raw.txt")
        assert INSTRUCTION in project.read("evaluation", row["gen_id"], "prompt.txt")
        pm = project.json("evaluation", row["gen_id"], "parsed_metadata.json")
        assert pm["success"] is True and pm["score"] == json.loads(raw)["score"]
    reset_luigi_state()


def test_a_model_may_ask_for_json_on_every_rubric(project):
    from pipeline.run.generation import resolve_inputs, runtime

    assert project.run()
    reset_luigi_state()
    p = project.paths.raw / "llm_models.csv"
    lines = p.read_text().splitlines()
    p.write_text("\n".join([lines[0] + ",output_format"]
                           + [line + (",json" if line.startswith("srv-b,") else ",") for line in lines[1:]]) + "\n")
    rt = runtime()
    for row in project.membership("evaluation"):
        inputs = resolve_inputs(rt, "evaluation", row["gen_id"])
        lo, hi = (0, 9) if row["template_id"] == "v-nine" else (0, 10)
        assert inputs.json_schema == score_schema(lo, hi) and inputs.prompt.rstrip().endswith("}")
    # the prompt changed, so the evaluations are stale and a run asks again, for JSON
    project.server.reset()
    assert project.run()
    calls = completions(project.server)
    assert len(calls) == 12 and all(INSTRUCTION in c["body"]["messages"][0]["content"] for c in calls)
    reset_luigi_state()
