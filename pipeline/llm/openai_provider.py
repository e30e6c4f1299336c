"""Any OpenAI-compatible chat endpoint (OpenRouter, OpenAI, a local server) via the ``openai`` SDK.

The SDK's own retries are off (``max_retries=0``): we retry here, and only what is worth
retrying (429, 5xx, timeouts, connection errors, malformed 200 bodies), so a bad key or a bad
request fails at once instead of burning the retry budget (defect 9.5).
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from typing import Any, Callable

import openai

from pipeline.errors import DaydreamError
from pipeline.llm.base import Completion, CompletionRequest, ProviderSettings, price_cost

log = logging.getLogger("pipeline.llm")

_MAX_SERVER_MESSAGE = 200
_NO_KEY = "no-key"  # the SDK insists on some key; local servers ignore it


class _Retryable(Exception):
    """One failed attempt worth another try; ``retry_after`` is the server's hint in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class OpenAIProvider:
    """One SDK client per instance, shared by all threads; in-flight requests bounded by a semaphore."""

    def __init__(self, settings: ProviderSettings, api_key: str | None, *, sleep: Callable[[float], None] = time.sleep):
        self.name = settings.name
        self.settings = settings
        self._key = api_key or ""
        self._sleep = sleep  # injectable only so tests can record waits
        self._random = random.Random()
        self._slots = threading.BoundedSemaphore(max(1, settings.concurrency))
        self._client = openai.OpenAI(
            base_url=settings.base_url,
            api_key=api_key or _NO_KEY,
            max_retries=0,
            timeout=settings.timeout_s,
            default_headers=dict(settings.extra_headers) or None,
        )
        # OpenRouter reports the real cost only when asked; other providers reject unknown fields.
        where = f"{settings.name} {settings.base_url or ''}".lower()
        self._extra_body = {"usage": {"include": True}} if "openrouter" in where else None

    def __repr__(self) -> str:
        return f"OpenAIProvider(name={self.name!r}, base_url={self.settings.base_url!r})"

    def complete(self, request: CompletionRequest,
                 on_attempt: Callable[[int, int], None] | None = None) -> Completion:
        started = time.monotonic()
        attempts_max = max(1, self.settings.max_attempts)
        for attempt in range(1, attempts_max + 1):
            if on_attempt:
                on_attempt(attempt, attempts_max)
            try:
                with self._slots:
                    response = self._create(request)
                return self._completion(request, response, attempt, time.monotonic() - started)
            except _Retryable as failure:
                reason, retry_after = failure.reason, failure.retry_after
            if attempt < attempts_max:
                wait = self._backoff(attempt, retry_after)
                log.warning(
                    "provider %s model %s: attempt %d/%d failed (%s); retrying in %.2fs",
                    self.name, request.model_slug, attempt, attempts_max, reason, wait,
                )
                self._sleep(wait)
        # Raised outside any ``except``: no chained SDK exception (which may quote the key) survives.
        raise DaydreamError(
            "llm",
            f"provider '{self.name}' for model '{request.model_slug}' gave up after {attempts_max} attempts: "
            f"last error {reason}",
        )

    # -- one attempt -------------------------------------------------------------------------------
    def _create(self, request: CompletionRequest) -> Any:
        """One HTTP call; transient failures become ``_Retryable``, permanent ones ``DaydreamError``.

        Both are raised after the ``except`` block so they carry no SDK exception as context.
        """
        params: dict[str, Any] = {
            "model": request.model_slug,
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.max_tokens is not None:
            params["max_tokens"] = request.max_tokens
        if self._extra_body:
            params["extra_body"] = self._extra_body
        failure: Exception
        try:
            return self._client.chat.completions.create(**params)
        except openai.APITimeoutError:
            failure = _Retryable(f"timeout after {self.settings.timeout_s:g}s")
        except openai.APIConnectionError as exc:
            cause = exc.__cause__
            detail = f"{type(cause).__name__}: {cause}" if cause else str(exc)
            failure = _Retryable(f"connection error ({self._scrub(detail)})")
        except openai.APIStatusError as exc:
            status, message = exc.status_code, self._server_message(exc.body)
            if status in (408, 429) or status >= 500:
                failure = _Retryable(f"HTTP {status}: {message}", _retry_after(exc.response.headers))
            else:
                hint = f" (check {self.settings.api_key_env})" if status in (401, 403) and self.settings.api_key_env else ""
                failure = DaydreamError(
                    "llm", f"HTTP {status} from provider '{self.name}' for model '{request.model_slug}': {message}{hint}"
                )
        except (openai.APIResponseValidationError, ValueError) as exc:  # ValueError: the body is not JSON
            detail = _shorten(self._scrub(f"{type(exc).__name__}: {exc}"), 120)
            failure = _Retryable(f"bad response (invalid body: {detail})")
        raise failure

    def _completion(self, request: CompletionRequest, response: Any, attempts: int, duration: float) -> Completion:
        choices = getattr(response, "choices", None)
        if not choices:
            raise _Retryable("bad response (no choices)" if choices is not None else "bad response (not a chat completion)")
        choice = choices[0]
        finish = getattr(choice, "finish_reason", None)
        content = getattr(getattr(choice, "message", None), "content", None)
        if content is None and finish != "length":  # null content on a truncation is just a truncation
            raise _Retryable("bad response (message content is null)")
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        cost = getattr(usage, "cost", None)
        cost = float(cost) if isinstance(cost, (int, float)) else price_cost(request, prompt_tokens, completion_tokens)
        return Completion(
            text=(content or "").replace("\r\n", "\n"),
            finish_reason=finish,
            truncated=finish == "length",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost,
            duration_s=duration,
            attempts=attempts,
            simulated=False,
            provider=self.name,
            model_slug=request.model_slug,
        )

    # -- helpers -------------------------------------------------------------------------------------
    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Server's Retry-After if given, else exponential backoff with full jitter; both capped."""
        cap = self.settings.backoff_max_s
        if retry_after is not None:
            return min(cap, retry_after)
        return self._random.uniform(0, min(cap, self.settings.backoff_base_s * 2 ** (attempt - 1)))

    def _scrub(self, text: str) -> str:
        """Servers sometimes quote the key back; it must never reach a message or log line.

        Scrub before shortening, or a cut could leave a recognisable prefix of the key.
        """
        return text.replace(self._key, "***") if self._key else text

    def _server_message(self, body: object) -> str:
        """The provider's own explanation, one short line, key scrubbed."""
        if isinstance(body, dict):
            error = body.get("error")
            body = error.get("message", error) if isinstance(error, dict) else body.get("message", body)
        text = " ".join(str(body).split()) if body is not None else "(no body)"
        return _shorten(self._scrub(text), _MAX_SERVER_MESSAGE)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(headers: Any) -> float | None:
    """``retry-after-ms``, ``retry-after`` in seconds, or ``retry-after`` as an HTTP-date."""
    if value := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
