"""The provider layer's types: one request in, one completion out.

Two roles, as in inspect_ai's model layer: a **model API** (an adapter registered by name, e.g.
the OpenAI-compatible HTTP client or the offline simulator) makes ONE attempt; the **provider**
the pipeline calls (``pipeline.llm.retrying.Provider``) wraps any model API with the in-flight
limit and the retries. A stage only sees ``Provider.generate`` and these value types, so it never
needs to know which adapter answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pipeline.errors import DaydreamError


@dataclass(frozen=True)
class ProviderSettings:
    """How to reach one provider endpoint (``[llm.<name>]`` in ``luigi.cfg``, resolved by config.py)."""

    name: str  # the section name: "openrouter", "openai", "local", "offline", ...
    base_url: str | None  # e.g. "https://openrouter.ai/api/v1"; None for offline
    api_key_env: str | None  # env var holding the key; None/"" means no key needed
    concurrency: int = 4  # in-flight requests per provider instance (process)
    timeout_s: float = 120.0
    max_attempts: int = 5  # total attempts including the first
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0  # cap for any single wait, including Retry-After
    extra_headers: tuple[tuple[str, str], ...] = ()
    api: str = "openai"  # which registered model API serves it ("openai" = any OpenAI-compatible server)
    # how a request's JSON schema reaches the model: "prompt" (stated in the prompt only) or
    # "json_schema" (also sent as response_format, for providers that enforce it)
    structured_output: str = "prompt"


@dataclass(frozen=True)
class GenerationContext:
    """What the pipeline is generating. Real APIs ignore it; the offline simulator writes to fit it
    (a draft, an essay block for the template's parser, a score on the rubric's scale)."""

    stage: str = "draft"  # draft | essay | evaluation
    template_id: str = ""
    parser: str = "identity"  # identity | essay_block | essay_block_lenient | essay_idea_last | score
    scale_min: float = 0
    scale_max: float = 9
    replicate: int = 1  # replicates of one request differ only through this (and real sampling)
    # the combo's concepts, for every stage of its lineage: the simulator's planted target
    # (a rubric's "Target concepts:" line) scores a combo by how many of them it holds
    concept_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class CompletionRequest:
    """One user message to one model."""

    prompt: str  # sent as ONE user message
    model_slug: str  # provider's model name, e.g. "anthropic/claude-sonnet-4"
    temperature: float | None = None
    max_tokens: int | None = None
    context: GenerationContext = field(default_factory=GenerationContext)
    # the JSON schema the answer must follow (pipeline/design/structured.py), already stated in the prompt;
    # None for free text. Sent as response_format where the provider's structured_output says so.
    json_schema: dict | None = field(default=None, hash=False, compare=False)


@dataclass(frozen=True)
class Completion:
    """What came back, plus the accounting that goes into ``raw_metadata.json``."""

    text: str  # content exactly as returned, CRLF -> LF
    finish_reason: str | None
    truncated: bool  # finish_reason == "length"
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None  # as the provider reported it; None when it reports none (spend.py prices it)
    duration_s: float  # wall time of the whole call, retries and waits included
    attempts: int
    simulated: bool
    provider: str
    model_slug: str


class Transient(Exception):
    """One failed attempt worth another try (429, 5xx, timeout, connection error, malformed body);
    ``retry_after`` is the server's hint in seconds. Anything else a model API raises is final."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class ModelAPI(Protocol):
    """An adapter: ``await generate`` makes ONE attempt and returns a Completion (attempts=1), or
    raises ``Transient`` (worth retrying) or ``DaydreamError`` (final). Many calls may be in
    flight at once on one event loop."""

    async def generate(self, request: CompletionRequest) -> Completion:
        ...

    async def aclose(self) -> None:
        """Close what ``generate`` opened on the running loop (its connections), before the loop ends."""


@dataclass(frozen=True)
class BatchSettings:
    """How a provider's batch jobs are made (``[llm.<name>] batch = true``; resolved by config.py)."""

    max_requests: int = 50_000  # requests per job (OpenAI's limit)
    max_bytes: int = 190_000_000  # bytes of one job's input file (OpenAI's limit is 200 MB)
    poll_s: float = 30.0  # seconds between two looks at a job
    window: str = "24h"  # the completion window asked for
    retry: str = "batch"  # failed or expired items: "batch" (the next job) or "sync" (ordinary calls)
    max_jobs: int = 3  # jobs a generation goes out in before its failure is recorded


class NoBatchAPI(DaydreamError):
    """A provider section asks for batch jobs (``batch = true``) its model API cannot make. Here,
    not in ``batch.py``, so the batch runner can name it without importing the SDK."""
