"""Providers over real HTTP against tests/llm_server.py (no mocks), and the offline simulator."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import logging
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import DaydreamError
from pipeline.llm import CompletionRequest, GenerationContext, Provider, ProviderSettings, require_keys
from pipeline.llm import make_provider as _make_provider
from pipeline.llm.offline import OfflineAPI
from pipeline.llm.openai_provider import OpenAIAPI
from pipeline.design.parsers import parse

KEY = "sk-test-SECRET-0123456789abcdef"
ENV = {"TEST_LLM_KEY": KEY}


def settings_for(server, **overrides) -> ProviderSettings:
    values = dict(
        name="local", base_url=server.base_url, api_key_env="TEST_LLM_KEY",
        timeout_s=2.0, max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.05,
    )
    values.update(overrides)
    return ProviderSettings(**values)


def provider_for(server, waits: list[float] | None = None, **overrides) -> Provider:
    """A provider for the test server; with ``waits``, its backoff waits are recorded (and really slept)."""
    settings = settings_for(server, **overrides)
    if waits is None:
        return make_provider(settings, ENV)
    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(seconds)

    return make_provider(settings, ENV, sleep=sleep)


_LOOP = asyncio.new_event_loop()  # one loop for the module: a provider's clients belong to the loop that made them


def run(coro):
    return _LOOP.run_until_complete(coro)


_MADE: list[Provider] = []


def make_provider(*args, **kwargs) -> Provider:
    """``make_provider``, closed after the test (its connections belong to the module's loop)."""
    _MADE.append(_make_provider(*args, **kwargs))
    return _MADE[-1]


@pytest.fixture(autouse=True)
def _close_providers():
    yield
    while _MADE:
        run(_MADE.pop().aclose())


def ask(prompt: str, model_slug: str, **context) -> CompletionRequest:
    """A request for the simulator: ``context`` keys are GenerationContext fields."""
    return CompletionRequest(prompt=prompt, model_slug=model_slug, context=GenerationContext(**context))


REQ = CompletionRequest(prompt="Write about tides.", model_slug="test/model-a", temperature=0.7, max_tokens=300)


# -- happy path ------------------------------------------------------------------------------------------


def test_happy_path_openrouter_reports_cost_and_sends_one_user_message(llm_server):
    llm_server.cost = 0.00123
    provider = provider_for(llm_server, name="openrouter")
    c = run(provider.generate(REQ))
    assert c.text == "echo (test/model-a): Write about tides."
    assert (c.finish_reason, c.truncated, c.attempts, c.simulated) == ("stop", False, 1, False)
    assert (c.prompt_tokens, c.completion_tokens) == (3, 5)
    assert c.cost_usd == pytest.approx(0.00123)
    assert (c.provider, c.model_slug) == ("openrouter", "test/model-a")
    assert c.duration_s > 0
    [req] = llm_server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["messages"] == [{"role": "user", "content": "Write about tides."}]
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("test/model-a", 0.7, 300)
    assert body["usage"] == {"include": True}  # OpenRouter only reports cost when asked
    assert llm_server.successes == 1


def test_none_params_omitted_and_no_cost_unless_reported(llm_server):
    provider = provider_for(llm_server, extra_headers=(("X-Title", "daydream"),))
    c = run(provider.generate(CompletionRequest(prompt="a b c d", model_slug="m")))
    body = llm_server.requests[0]["body"]
    assert "temperature" not in body and "max_tokens" not in body and "usage" not in body
    assert llm_server.requests[0]["headers"]["x-title"] == "daydream"
    assert c.cost_usd is None and c.prompt_tokens == 4  # pricing is the runner's (spend.py), not the provider's


def test_crlf_becomes_lf(llm_server):
    llm_server.responder = lambda body: "line one\r\nline two\r\n"
    assert run(provider_for(llm_server).generate(REQ)).text == "line one\nline two\n"


def test_no_key_needed_for_local_servers(llm_server):
    provider = make_provider(settings_for(llm_server, api_key_env=None), environ={})
    assert run(provider.generate(REQ)).attempts == 1


# -- retries ---------------------------------------------------------------------------------------------


def test_429_honours_retry_after(llm_server):
    llm_server.push_faults("429")
    waits: list[float] = []
    c = run(provider_for(llm_server, waits, backoff_max_s=5.0).generate(REQ))
    assert c.attempts == 2 and len(llm_server.requests) == 2
    assert waits == [1.0]
    assert c.duration_s >= 0.95


def test_retry_after_http_date_and_cap(llm_server):
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    llm_server.retry_after = when
    llm_server.push_faults("429")
    waits: list[float] = []
    provider = provider_for(llm_server, waits, backoff_max_s=0.2)
    assert run(provider.generate(REQ)).attempts == 2
    assert waits == [0.2]  # 120 s asked, capped at backoff_max_s


def test_429_storm_without_retry_after_uses_capped_jittered_backoff(llm_server):
    llm_server.push_faults(*["429-noretry-after"] * 4)
    waits: list[float] = []
    c = run(provider_for(llm_server, waits, max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.04).generate(REQ))
    assert c.attempts == 5 and llm_server.successes == 1
    assert len(waits) == 4
    for n, wait in enumerate(waits, start=1):
        assert 0 <= wait <= min(0.04, 0.01 * 2 ** (n - 1))


@pytest.mark.parametrize("status", ["500", "502", "503", "504"])
def test_5xx_retried(llm_server, status):
    llm_server.push_faults(status)
    seen: list[tuple[int, int]] = []
    assert run(provider_for(llm_server).generate(REQ, on_attempt=lambda n, of: seen.append((n, of)))).attempts == 2
    assert seen == [(1, 3), (2, 3)]  # what a task shows in the visualiser while retrying


@pytest.mark.parametrize("status", ["400", "401", "403", "404", "422"])
def test_4xx_not_retried_and_key_never_leaks(llm_server, status):
    llm_server.push_faults(status, status)  # the server echoes the Authorization header in its message
    with pytest.raises(DaydreamError) as info:
        run(provider_for(llm_server, max_attempts=5).generate(REQ))
    err = info.value
    assert err.code == "llm"
    assert len(llm_server.requests) == 1
    message = str(err)
    assert f"HTTP {status} from provider 'local' for model 'test/model-a'" in message
    assert "simulated" in message  # the server's own explanation is kept...
    assert KEY not in message and KEY not in repr(err)  # ...but never the key,
    assert err.__cause__ is None and err.__context__ is None  # not even in a chained SDK exception


def test_long_echoed_key_is_scrubbed_before_the_message_is_shortened(llm_server):
    long_key = "sk-" + "k" * 300  # the server's message exceeds the 200-character cut
    llm_server.push_faults("401")
    settings = settings_for(llm_server)
    with pytest.raises(DaydreamError) as info:
        run(make_provider(settings, {"TEST_LLM_KEY": long_key}).generate(REQ))
    assert "kkkkk" not in str(info.value)
    assert "Bearer ***" in str(info.value) and "(check TEST_LLM_KEY)" in str(info.value)


def test_timeout_retried(llm_server):
    llm_server.push_faults("timeout")
    started = time.monotonic()
    c = run(provider_for(llm_server, timeout_s=0.5).generate(REQ))
    assert c.attempts == 2 and llm_server.successes == 1
    assert 0.45 <= time.monotonic() - started < 2


def test_hang_is_bounded_by_client_timeout(llm_server):
    llm_server.push_faults("hang", "hang")
    with pytest.raises(DaydreamError, match=r"gave up after 2 attempts: last error timeout after 0.3s"):
        run(provider_for(llm_server, timeout_s=0.3, max_attempts=2).generate(REQ))


def test_refused_connection_is_a_connection_error_not_a_timeout():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = ProviderSettings(name="gone", base_url=f"http://127.0.0.1:{port}/v1", api_key_env=None,
                                max_attempts=2, backoff_base_s=0.01, timeout_s=5)
    started = time.monotonic()
    with pytest.raises(DaydreamError, match=rf"gave up after 2 attempts: last error connection error \(.*127.0.0.1:{port}"):
        run(make_provider(settings, environ={}).generate(REQ))
    assert time.monotonic() - started < 4  # refused at once, not waited out (5 s an attempt)


def test_dropped_connection_mid_body_retried(llm_server):
    llm_server.push_faults("drop")
    c = run(provider_for(llm_server).generate(REQ))
    assert c.attempts == 2 and c.text.startswith("echo")


@pytest.mark.parametrize(
    "mode, reason",
    [("malformed", "invalid body"), ("empty_choices", "no choices"), ("null_content", "message content is null"),
     ("list_content", "message content is a list")],
)
def test_bad_bodies_retried_then_fail_with_reason(llm_server, mode, reason):
    llm_server.push_faults(mode)
    assert run(provider_for(llm_server).generate(REQ)).attempts == 2
    llm_server.reset()
    llm_server.push_faults(mode, mode, mode)
    with pytest.raises(DaydreamError, match=rf"gave up after 3 attempts: last error bad response \({reason}"):
        run(provider_for(llm_server, max_attempts=3).generate(REQ))
    assert len(llm_server.requests) == 3


def test_json_answer_under_another_content_type_is_read(llm_server):
    llm_server.push_faults("text_plain")
    c = run(provider_for(llm_server).generate(REQ))
    assert c.attempts == 1 and c.text.startswith("echo") and c.prompt_tokens == len(REQ.prompt.split())


def test_truncation_is_returned_not_retried(llm_server):
    llm_server.push_faults("truncated")
    c = run(provider_for(llm_server).generate(REQ))
    assert (c.truncated, c.finish_reason, c.attempts) == (True, "length", 1)
    assert len(llm_server.requests) == 1


def test_gives_up_after_max_attempts_without_leaking_key(llm_server, caplog):
    llm_server.push_faults(*["503"] * 4)
    caplog.set_level(logging.WARNING, logger="pipeline.llm")
    with pytest.raises(DaydreamError) as info:
        run(provider_for(llm_server, max_attempts=4).generate(REQ))
    assert info.value.code == "llm"
    assert "gave up after 4 attempts: last error HTTP 503" in str(info.value)
    assert len(llm_server.requests) == 4
    retries = [r for r in caplog.records if r.name == "pipeline.llm"]
    assert len(retries) == 3 and "attempt 1/4" in retries[0].getMessage()
    assert KEY not in str(info.value) and KEY not in caplog.text
    assert KEY not in repr(provider_for(llm_server))


def test_latency_fault_is_just_slow(llm_server):
    llm_server.push_faults("latency:0.3")
    c = run(provider_for(llm_server).generate(REQ))
    assert c.attempts == 1 and c.duration_s >= 0.3


def test_server_runs_standalone_for_benchmarks():
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("llm_server.py")), "--port", "0", "--latency", "0.05"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        base_url = server.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base_url)
        provider = make_provider(ProviderSettings(name="bench", base_url=base_url, api_key_env=None), environ={})
        assert run(provider.generate(REQ)).text == "echo (test/model-a): Write about tides."
    finally:
        server.terminate()
        server.wait(5)


def test_server_rules_and_unknown_modes(llm_server):
    llm_server.rule = lambda body: "401" if body["model"] == "bad" else None
    provider = provider_for(llm_server)
    with pytest.raises(DaydreamError, match="HTTP 401"):
        run(provider.generate(CompletionRequest(prompt="x", model_slug="bad")))
    assert run(provider.generate(CompletionRequest(prompt="x", model_slug="good"))).attempts == 1
    with pytest.raises(ValueError, match="unknown fault mode"):
        llm_server.push_faults("teapot")


# -- concurrency -----------------------------------------------------------------------------------------


def _run_together(provider, n: int) -> list:
    """``n`` calls started at once on one event loop, as a batch makes them."""
    async def all_at_once():
        return await asyncio.gather(*(provider.generate(CompletionRequest(prompt=f"p{i}", model_slug="m"))
                                      for i in range(n)))
    return run(asyncio.wait_for(all_at_once(), 10))


def test_one_provider_serves_16_calls_concurrently(llm_server):
    llm_server.latency = 0.2
    results = _run_together(provider_for(llm_server, concurrency=16), 16)
    assert len(results) == 16 and all(r.attempts == 1 for r in results)
    assert llm_server.max_concurrency_seen >= 16


def test_concurrency_setting_bounds_in_flight_requests(llm_server):
    llm_server.latency = 0.1
    results = _run_together(provider_for(llm_server, concurrency=4), 12)
    assert len(results) == 12
    assert llm_server.max_concurrency_seen == 4


# -- keys ------------------------------------------------------------------------------------------------


def test_missing_key_names_the_env_var():
    settings = ProviderSettings(name="openrouter", base_url="https://openrouter.ai/api/v1", api_key_env="OPENROUTER_API_KEY")
    for environ in ({}, {"OPENROUTER_API_KEY": ""}, {"OPENROUTER_API_KEY": "  "}):
        with pytest.raises(DaydreamError) as info:
            make_provider(settings, environ)
        assert info.value.code == "missing_key"
        assert str(info.value) == "provider 'openrouter' needs OPENROUTER_API_KEY; set it in the environment"
    assert isinstance(make_provider(settings, {"OPENROUTER_API_KEY": KEY}).api, OpenAIAPI)


def test_require_keys_lists_every_missing_key():
    settings = [
        ProviderSettings(name="openrouter", base_url="https://openrouter.ai/api/v1", api_key_env="OPENROUTER_API_KEY"),
        ProviderSettings(name="openai", base_url="https://api.openai.com/v1", api_key_env="OPENAI_API_KEY"),
        ProviderSettings(name="local", base_url="http://127.0.0.1:1/v1", api_key_env=None),
        ProviderSettings(name="offline", base_url=None, api_key_env=None),
        ProviderSettings(name="present", base_url="http://x/v1", api_key_env="PRESENT_KEY"),
    ]
    with pytest.raises(DaydreamError) as info:
        require_keys(settings, {"PRESENT_KEY": KEY})
    message = str(info.value)
    assert info.value.code == "missing_key"
    assert "OPENROUTER_API_KEY" in message and "OPENAI_API_KEY" in message
    assert "PRESENT_KEY" not in message and KEY not in message
    require_keys(settings[2:], {"PRESENT_KEY": KEY})  # nothing missing: no error


# -- offline simulator -----------------------------------------------------------------------------------

CONCEPTS = (
    "Concepts to combine:\n"
    "- Mycelial networks: fungi share nutrients and signals across a forest floor through underground threads.\n"
    "- Version control: every change to a codebase is recorded so that any past state can be recovered.\n"
    "- Tidal rhythms: the sea rises and falls twice a day, pulled by the moon.\n"
    "Write a short draft that connects them."
)
TOPICS = ("mycelial networks", "version control", "tidal rhythms")


def offline(**kwargs) -> str:
    kwargs = {"prompt": CONCEPTS, "model_slug": "sim-a", **kwargs}
    return run(OfflineAPI().generate(ask(**kwargs))).text


def _nonempty(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())


def test_offline_is_deterministic_and_labelled_simulated_only_in_metadata():
    provider = make_provider(ProviderSettings(name="offline", base_url=None, api_key_env=None, api="offline"), environ={})
    request = ask(CONCEPTS, "sim-a", template_id="t", parser="essay_block")
    first, second = run(provider.generate(request)), run(provider.generate(request))
    assert first.text == second.text
    assert (first.simulated, first.provider, first.attempts, first.finish_reason, first.truncated) == (
        True, "offline", 1, "stop", False)
    assert first.cost_usd is None and first.prompt_tokens > 0 and first.completion_tokens > 0
    assert "simulat" not in first.text.lower()
    other_template = dataclasses.replace(request.context, template_id="u")
    for change in ({"model_slug": "sim-b"}, {"context": other_template}, {"prompt": CONCEPTS + " Be bold."}):
        assert run(provider.generate(dataclasses.replace(request, **change))).text != first.text


def test_offline_drafts_match_their_parser():
    block = offline(parser="essay_block")
    essay = parse("essay_block", block)
    assert block.index("<essay>") > 0 and _nonempty(essay) >= 6
    assert any(topic in essay.lower() for topic in TOPICS)

    ideas = offline(parser="essay_idea_last")
    stages = [int(s) for s in re.findall(r'<essay-idea stage="(\d+)">', ideas)]
    assert 2 <= len(stages) <= 4 and stages == list(range(1, len(stages) + 1))
    last = ideas.rsplit(f'<essay-idea stage="{stages[-1]}">', 1)[1]
    assert parse("essay_idea_last", ideas) == last.split("</essay-idea>")[0].strip()

    lenient = {offline(parser="essay_block_lenient", model_slug=f"m{i}") for i in range(8)}
    assert any("<thinking>" in text for text in lenient)
    assert all("<thinking>" not in parse("essay_block_lenient", text) for text in lenient)

    identity = offline(parser="identity")
    assert _nonempty(parse("identity", identity)) >= 6 and "<" not in identity


def test_offline_essays_build_on_the_draft_and_differ_by_model():
    draft = parse("identity", offline(parser="identity"))
    prompt = f'Expand this draft into an essay.\n\nDraft:\n"""\n{draft}\n"""\n\nUse <essay> tags.'
    essays = {m: offline(stage="essay", parser="essay_block", model_slug=m, prompt=prompt) for m in ("sim-a", "sim-b")}
    assert essays["sim-a"] != essays["sim-b"]
    draft_sentences = {s.strip() for s in re.split(r"(?<=[.!?])\s+|\n", draft) if len(s.strip()) > 40}
    for text in essays.values():
        essay = parse("essay_block", text)
        assert _nonempty(essay) >= 8
        assert any(topic in essay.lower() for topic in TOPICS)
        assert any(sentence in essay for sentence in draft_sentences)  # it quotes its draft


def _evaluate(essay: str, model: str, template: str, hi: float, asked: str = "", replicate: int = 1) -> str:
    prompt = f"Rate this essay from 0 to {hi:g}.\n\nEssay:\n<<<\n{essay}\n>>>\n\nEnd with your score.\n{asked}"
    return offline(stage="evaluation", parser="score", prompt=prompt, model_slug=model, template_id=template,
                   scale_max=hi, replicate=replicate)


def _essay(i: int) -> str:
    return parse("essay_block", offline(stage="essay", parser="essay_block", model_slug=f"writer-{i}", prompt=f"{CONCEPTS}\nVariant {i}."))


ESSAYS = [_essay(i) for i in range(40)]


@pytest.mark.parametrize("template, hi", [("eval-9", 9), ("eval-a", 10), ("eval-b", 10), ("eval-c", 10), ("eval-d", 10)])
def test_offline_evaluations_end_in_a_parseable_score_on_the_scale(template, hi):
    for i, essay in enumerate(ESSAYS[:12]):
        text = _evaluate(essay, f"judge-{i % 3}", template, hi)
        assert re.search(r"Originality: \d/3", text)
        score = float(parse("score", text, scale_min=0, scale_max=hi))
        assert 0 <= score <= hi and (score * 2).is_integer() and (hi == 10 or score.is_integer())


def test_offline_score_line_follows_the_template_when_it_says_how():
    asked = "Then end with a final line in exactly this format:\nFinal Score: X/10"
    text = _evaluate(ESSAYS[0], "judge-a", "rigor", 10, asked)
    assert re.fullmatch(r"(\*\*)?Final Score: \d+(\.5)?/10(\*\*)?", text.strip().splitlines()[-1])
    whole = _evaluate(ESSAYS[0], "judge-a", "useful", 10, "X is a whole number.\nTotal Score: X/10")
    assert all(float(parse("score", _evaluate(e, "judge-a", "useful", 10, "X is a whole number.\nTotal Score: X/10"),
                           scale_min=0, scale_max=10)).is_integer() for e in ESSAYS[:10])
    assert "Total Score:" in whole.strip().splitlines()[-1]
    nine = _evaluate(ESSAYS[0], "judge-a", "novelty", 9, "SCORE: X")
    assert re.fullmatch(r"(\*\*)?SCORE: \d(\*\*)?", nine.strip().splitlines()[-1])
    # Templates that do not say get different, still parseable, formats.
    lines = {re.sub(r"[\d.]+", "N", _evaluate(ESSAYS[0], "judge-b", f"t{i}", 10).strip()) .rsplit("\n", 1)[-1] for i in range(12)}
    assert len(lines) >= 3


def test_offline_scores_have_structure():
    def scores(judge: str, template: str) -> list[float]:
        return [float(parse("score", _evaluate(e, judge, template, 10), scale_min=0, scale_max=10)) for e in ESSAYS]

    a, b, c = scores("judge-a", "eval-a"), scores("judge-b", "eval-a"), scores("judge-c", "eval-a")
    assert len(set(a)) >= 4  # essays differ
    assert len({round(statistics.mean(s), 1) for s in (a, b, c)}) >= 2  # judges differ in severity
    other_template = scores("judge-a", "eval-b")
    assert other_template != a  # templates differ
    # Judges agree on which essays are better (a shared quality component): inter-rater stats mean something.
    assert statistics.correlation(a, b) > 0.4 and statistics.correlation(a, other_template) > 0.4


def test_offline_replicates_vary_like_resampling():
    base = ask(CONCEPTS, "sim-a", template_id="t", parser="identity")
    texts = [run(OfflineAPI().generate(ask(CONCEPTS, "sim-a", template_id="t", parser="identity", replicate=r))).text
             for r in (1, 2, 3)]
    assert texts[0] == run(OfflineAPI().generate(base)).text and len(set(texts)) == 3
    first = [float(parse("score", _evaluate(e, "judge-a", "eval-a", 10), scale_min=0, scale_max=10)) for e in ESSAYS]
    again = [float(parse("score", _evaluate(e, "judge-a", "eval-a", 10, replicate=2), scale_min=0, scale_max=10))
             for e in ESSAYS]
    assert first != again and statistics.correlation(first, again) > 0.6  # test-retest: close, not identical


# -- the registry -----------------------------------------------------------------------------------------


def test_a_section_picks_its_model_api_by_name_and_gets_the_one_retry_policy():
    from pipeline.llm.base import Completion, Transient
    from pipeline.llm.registry import register_api

    calls: list[str] = []

    @register_api("flaky-echo")
    class FlakyEcho:  # a third adapter, registered the way offline and openai are
        def __init__(self, settings, key):
            self.name = settings.name

        async def generate(self, request):
            calls.append(request.prompt)
            if len(calls) == 1:
                raise Transient("HTTP 503: warming up")
            return Completion(text=request.prompt[::-1], finish_reason="stop", truncated=False, prompt_tokens=1,
                              completion_tokens=1, cost_usd=None, duration_s=0.0, attempts=1, simulated=False,
                              provider=self.name, model_slug=request.model_slug)

        async def aclose(self):
            pass

    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    settings = ProviderSettings(name="mine", base_url=None, api_key_env=None, api="flaky-echo", backoff_base_s=0.5)
    c = run(make_provider(settings, {}, sleep=sleep).generate(CompletionRequest(prompt="abc", model_slug="m")))
    assert (c.text, c.attempts, c.provider) == ("cba", 2, "mine")
    assert calls == ["abc", "abc"] and len(waits) == 1 and 0 <= waits[0] <= 0.5


def test_unknown_model_api_is_one_config_error_naming_the_section():
    settings = ProviderSettings(name="mine", base_url="http://127.0.0.1:1/v1", api_key_env=None, api="grpc")
    with pytest.raises(DaydreamError) as info:
        make_provider(settings, {})
    assert info.value.code == "config"
    assert "[llm.mine] api = 'grpc' is not one of" in str(info.value) and "openai" in str(info.value)


def test_model_apis_are_imported_on_first_use_so_commands_start_without_the_sdk():
    """`daydream --help` and `status` load no model SDK, no pandas and no Luigi task module; the
    registry still names every built-in API and imports its adapter when asked for it."""
    code = """
import sys
import pipeline.cli, pipeline.config, pipeline.llm, pipeline.run.batch_jobs, pipeline.run.search_store
heavy = [m for m in ("openai", "pandas", "pipeline.tasks", "pipeline.llm.openai_provider") if m in sys.modules]
assert not heavy, heavy
from pipeline.llm.registry import api_factory, api_names, batch_api_factory
assert {"offline", "openai"} <= set(api_names()), api_names()
assert api_factory("offline").__name__ == "OfflineAPI" and "openai" not in sys.modules
assert api_factory("openai").__name__ == "OpenAIAPI" and "openai" in sys.modules
assert batch_api_factory("openai").__name__ == "OpenAIBatchAPI" and batch_api_factory("offline") is not None
assert api_factory("grpc") is None and batch_api_factory("grpc") is None
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_process_that_makes_generation_tasks_imports_the_model_apis_before_it_forks():
    """Luigi's workers (``--workers`` > 1) and the executor are forked from the process that makes
    the generation tasks: they inherit the adapters instead of importing the SDK again each."""
    code = """
import sys
import pipeline.tasks as tasks
assert "openai" not in sys.modules
tasks.CompileCohort(cohort_id="x")
assert "openai" not in sys.modules  # a report or compile alone needs no model API
tasks.DraftGeneration(gen_id="x")
loaded = [m for m in ("openai", "pipeline.llm.openai_provider", "pipeline.llm.offline", "pipeline.llm.batch")
          if m in sys.modules]
assert len(loaded) == 4, loaded
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
