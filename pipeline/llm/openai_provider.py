"""Any OpenAI-compatible chat endpoint (OpenRouter, OpenAI, a local server) via the ``openai`` SDK.

One attempt per ``generate``: the SDK's own retries are off (``max_retries=0``) because the
retrying provider (``retrying.py``) retries, and only what this adapter marks ``Transient`` (429,
5xx, timeouts, connection errors, malformed 200 bodies), so a bad key or a bad request fails at
once instead of burning the retry budget.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import ssl
import time
import weakref
from typing import Any

import aiohttp
import openai

from pipeline.errors import DaydreamError
from pipeline.llm.base import Completion, CompletionRequest, ProviderSettings, Transient
from pipeline.llm.registry import register_api
from pipeline.design.structured import SCHEMA_NAME

_MAX_SERVER_MESSAGE = 200
_NO_KEY = "no-key"  # the SDK insists on some key; local servers ignore it


@register_api("openai")
class OpenAIAPI:
    """The SDK's async client, one per event loop (pooled connections belong to the loop that
    opened them), over the SDK's aiohttp transport, which costs less CPU per call than its default
    httpx transport, and a process's CPU per call is what limits its calls in flight. The clients
    share one TLS context, so a new client does not load the CA bundle again.
    """

    def __init__(self, settings: ProviderSettings, api_key: str | None):
        self.name = settings.name
        self.settings = settings
        self._key = api_key or ""
        self._tls = ssl.create_default_context()
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # OpenRouter reports the real cost only when asked; other providers reject unknown fields.
        where = f"{settings.name} {settings.base_url or ''}".lower()
        self._extra_body = {"usage": {"include": True}} if "openrouter" in where else None

    def __repr__(self) -> str:
        return f"OpenAIAPI(name={self.name!r}, base_url={self.settings.base_url!r})"

    def _client(self) -> tuple[openai.AsyncOpenAI, str]:
        """This loop's client, and the absolute URL it posts a chat completion to: given a path,
        the SDK parses it and joins it to its base URL on every call (7 % of its CPU per call)."""
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            client = self._new_client()
            entry = self._clients[loop] = (client, f"{client.base_url}chat/completions")
        return entry

    def _new_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.settings.base_url,
            api_key=self._key or _NO_KEY,
            max_retries=0,
            timeout=self.settings.timeout_s,
            default_headers=dict(self.settings.extra_headers) or None,
            http_client=openai.DefaultAioHttpClient(verify=self._tls, timeout=self.settings.timeout_s),
        )

    async def aclose(self) -> None:
        entry = self._clients.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[0].close()

    async def generate(self, request: CompletionRequest) -> Completion:
        started = time.monotonic()
        response = await self._create(request)
        return self._completion(request, response, time.monotonic() - started)

    def body(self, request: CompletionRequest) -> dict[str, Any]:
        """The chat-completion request body of ``request``: what a call posts, and what a batch
        job's line carries (``pipeline/llm/batch.py``), so both paths send the same request."""
        params: dict[str, Any] = {
            "model": request.model_slug,
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.max_tokens is not None:
            params["max_tokens"] = request.max_tokens
        if self._extra_body:
            params.update(self._extra_body)
        if request.json_schema is not None and self.settings.structured_output == "json_schema":
            params["response_format"] = {"type": "json_schema", "json_schema": {
                "name": SCHEMA_NAME, "strict": True, "schema": request.json_schema}}
        return params

    # -- one attempt -------------------------------------------------------------------------------
    async def _create(self, request: CompletionRequest) -> Any:
        """One HTTP call; transient failures become ``Transient``, permanent ones ``DaydreamError``.

        Both are raised after the ``except`` block so they carry no SDK exception as context.
        """
        params = self.body(request)
        failure: Exception
        try:
            # The SDK's documented raw route: the body is already plain JSON, so its per-call
            # TypedDict transform of the params (15 % of its CPU per call) has nothing to do, and
            # the answer comes back as parsed JSON (``cast_to=object``): building its models,
            # unvalidated anyway, was another 10 %, and only four fields of it are read.
            client, url = self._client()
            body = await client.post(url, body=params, cast_to=object)
            # a JSON body under another content type comes back as its text
            return json.loads(body) if isinstance(body, str) else body
        except openai.APITimeoutError as exc:
            refused = _connect_error(exc)
            failure = Transient(f"connection error ({self._scrub(refused)})" if refused
                                else f"timeout after {self.settings.timeout_s:g}s")
        except openai.APIConnectionError as exc:
            cause = exc.__cause__
            detail = f"{type(cause).__name__}: {cause}" if cause else str(exc)
            failure = Transient(f"connection error ({self._scrub(detail)})")
        except openai.APIStatusError as exc:
            status, message = exc.status_code, self._server_message(exc.body)
            if status in (408, 429) or status >= 500:
                failure = Transient(f"HTTP {status}: {message}", _retry_after(exc.response.headers))
            else:
                hint = f" (check {self.settings.api_key_env})" if status in (401, 403) and self.settings.api_key_env else ""
                failure = DaydreamError(
                    "llm", f"HTTP {status} from provider '{self.name}' for model '{request.model_slug}': {message}{hint}"
                )
        except (openai.APIResponseValidationError, ValueError) as exc:  # ValueError: the body is not JSON
            detail = _shorten(self._scrub(f"{type(exc).__name__}: {exc}"), 120)
            failure = Transient(f"bad response (invalid body: {detail})")
        raise failure

    def _completion(self, request: CompletionRequest, response: Any, duration: float) -> Completion:
        choices = response.get("choices") if isinstance(response, dict) else None
        if not isinstance(choices, list) or not choices:
            raise Transient("bad response (no choices)" if isinstance(choices, list)
                            else "bad response (not a chat completion)")
        choice = choices[0]
        finish = _field(choice, "finish_reason")
        content = _field(_field(choice, "message"), "content")
        if content is None and finish != "length":  # null content on a truncation is just a truncation
            raise Transient("bad response (message content is null)")
        if not isinstance(content, (str, type(None))):
            raise Transient(f"bad response (message content is a {type(content).__name__})")
        usage = _field(response, "usage")
        prompt_tokens = _field(usage, "prompt_tokens")
        completion_tokens = _field(usage, "completion_tokens")
        cost = _field(usage, "cost")
        cost = float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None
        return Completion(
            text=(content or "").replace("\r\n", "\n"),
            finish_reason=finish,
            truncated=finish == "length",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost,
            duration_s=duration,
            attempts=1,
            simulated=False,
            provider=self.name,
            model_slug=request.model_slug,
        )

    # -- helpers -------------------------------------------------------------------------------------
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


def _field(value: Any, key: str) -> Any:
    """``value[key]`` of a JSON object in the answer, or None where it is not an object."""
    return value.get(key) if isinstance(value, dict) else None


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _connect_error(exc: BaseException) -> str | None:
    """What a connection that could not be made said, when the SDK reports it as a timeout: its
    aiohttp transport maps every failed connect (refused, unknown host) to a connect timeout."""
    while exc is not None:
        if isinstance(exc, aiohttp.ClientConnectorError):
            return f"{type(exc).__name__}: {exc}"
        exc = exc.__cause__
    return None


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
