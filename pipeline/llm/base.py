"""The provider interface: one request in, one completion out.

Stages only see these three value types and ``Provider.complete``; retries, HTTP and the offline
simulator live behind it, so a stage never needs to know which provider answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol


@dataclass(frozen=True)
class ProviderSettings:
    """How to reach one OpenAI-compatible provider (resolved from ``luigi.cfg`` by config.py)."""

    name: str  # "openrouter", "openai", "local", "offline", ...
    base_url: str | None  # e.g. "https://openrouter.ai/api/v1"; None for offline
    api_key_env: str | None  # env var holding the key; None/"" means no key needed
    concurrency: int = 4  # in-flight requests per provider instance (process)
    timeout_s: float = 120.0
    max_attempts: int = 5  # total attempts including the first
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0  # cap for any single wait, including Retry-After
    extra_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CompletionRequest:
    """One user message to one model. The hints below the line only steer the offline simulator."""

    prompt: str  # sent as ONE user message
    model_slug: str  # provider's model name, e.g. "anthropic/claude-sonnet-4"
    temperature: float | None = None
    max_tokens: int | None = None
    # hints used only by the offline simulator (real providers ignore them):
    stage: str = "draft"  # draft | essay | evaluation
    template_id: str = ""
    parser: str = "identity"  # identity | essay_block | essay_block_lenient | essay_idea_last | score
    scale_min: float = 0
    scale_max: float = 9
    replicate: int = 1  # replicates of one request differ only through this (and real sampling)
    # USD per million tokens; cost fallback when the provider reports none
    input_price_per_mtok: float | None = None
    output_price_per_mtok: float | None = None


@dataclass(frozen=True)
class Completion:
    """What came back, plus the accounting that goes into ``raw_metadata.json``."""

    text: str  # content exactly as returned, CRLF -> LF
    finish_reason: str | None
    truncated: bool  # finish_reason == "length"
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    duration_s: float  # wall time of the whole call, retries and waits included
    attempts: int
    simulated: bool
    provider: str
    model_slug: str


class Provider(Protocol):
    name: str

    def complete(self, request: CompletionRequest,
                 on_attempt: Callable[[int, int], None] | None = None) -> Completion:
        """One completion; ``on_attempt(attempt, max_attempts)`` is told before each try, so a
        task can show "attempt 2/5" in the visualiser while a provider retries."""
        ...


def price_cost(request: CompletionRequest, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
    """Cost from configured prices, used only when the provider reports none."""
    if request.input_price_per_mtok is None or request.output_price_per_mtok is None:
        return None
    if prompt_tokens is None or completion_tokens is None:
        return None
    return (prompt_tokens * request.input_price_per_mtok + completion_tokens * request.output_price_per_mtok) / 1e6
