"""A real OpenAI-compatible HTTP server for tests and benchmarks, with fault injection.

Tests talk to it over real sockets through the real ``openai`` SDK, so retries, timeouts and
dropped connections are exercised exactly as they happen against a provider; no mocks.

    with LLMServer() as server:
        server.push_faults("429", "500")          # consumed one per request, in order
        server.responder = lambda body: "SCORE: 7"
        ... ProviderSettings(name="local", base_url=server.base_url, api_key_env=None) ...

Fault modes (``push_faults`` queue, or ``rule(body) -> mode | None`` consulted when the queue is
empty): ``ok``; any HTTP status as digits (``429`` carries ``Retry-After: <server.retry_after>``,
other errors a JSON error body that echoes the request's Authorization header, like providers that
quote a bad key); ``429-noretry-after``; ``timeout`` (no answer for ``timeout_delay`` s, then
close); ``hang`` (no answer until the server stops); ``drop`` (headers and half the body, then
close); ``malformed`` (200 with invalid JSON); ``empty_choices``; ``null_content``;
``list_content`` (the message content is a list, not a string); ``text_plain`` (a normal answer
sent as ``text/plain``, as some local servers do); ``truncated`` (200, finish_reason ``length``);
``latency:<seconds>`` (delay, then a normal answer).

``server.requests`` holds ``{"path", "headers" (lower-case names), "body"}`` per request, plus
the ``usage`` it answered with; ``server.successes`` counts well-formed 200 completions
(``truncated`` included). Token counts are words. ``server.cost`` (None by default) makes it
report ``usage.cost`` as OpenRouter does: a number, or ``cost(body, usage) -> float``.

Standalone, for benchmarks: ``python tests/llm_server.py --port 8765 --latency 0.2``.
"""

from __future__ import annotations

import argparse
import collections
import json
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

FAULT_MODES = (
    "ok", "429", "429-noretry-after", "500", "502", "503", "400", "401", "403", "404", "422",
    "timeout", "hang", "drop", "malformed", "empty_choices", "null_content", "list_content", "text_plain",
    "truncated", "latency:<s>",
)


def _check_mode(mode: str) -> str:
    """Fail at ``push_faults`` (or in the rule), not as a mysterious dropped connection later."""
    if mode.startswith("latency:"):
        float(mode.split(":", 1)[1])
    elif not (mode in FAULT_MODES or (mode.isdigit() and 400 <= int(mode) <= 599)):
        raise ValueError(f"unknown fault mode {mode!r}; known: {', '.join(FAULT_MODES)} or any 4xx/5xx status")
    return mode


def default_responder(body: dict) -> str:
    """Deterministic echo of the prompt, so tests can see what was sent."""
    return f"echo ({body.get('model')}): {_prompt(body)}"


def schema_answer(body: dict, schema: dict, text: str) -> dict:
    """The answer to a request whose ``response_format`` is a ``json_schema``: an object following
    the schema, as a provider enforcing it returns (set ``server.json_responder(body, schema, text)``
    to answer otherwise). String properties hold the responder's text, numbers a value in
    [minimum, maximum] that depends on the prompt."""
    out: dict[str, Any] = {}
    spread = sum(map(ord, _prompt(body)))
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type")
        if kind in ("number", "integer"):
            lo, hi = prop.get("minimum", 0), prop.get("maximum", 10)
            out[name] = lo + spread % (int(hi - lo) + 1)
        elif kind == "boolean":
            out[name] = True
        else:
            out[name] = text
    return out


def _json_schema(body: dict) -> Any:
    """The JSON schema a request's ``response_format`` asks for, or None."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    return (fmt.get("json_schema") or {}).get("schema")


def _prompt(body: dict) -> str:
    messages = body.get("messages") or []
    return str(messages[-1].get("content", "")) if messages else ""


class LLMServer:
    """ThreadingHTTPServer on 127.0.0.1 (free port by default), served from a daemon thread."""

    def __init__(self, port: int = 0, latency: float = 0.0, host: str = "127.0.0.1"):
        self.latency = latency  # seconds added to every request
        self.responder: Callable[[dict], str] = default_responder
        self.rule: Callable[[dict], str | None] | None = None
        self.cost: float | Callable[[dict, dict], float] | None = None  # when set, usage.cost is reported
        self.retry_after = "1"  # Retry-After value sent with mode "429" (seconds or HTTP-date)
        self.timeout_delay = 2.0  # how long mode "timeout" stays silent
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._faults: collections.deque[str] = collections.deque()
        self.requests: list[dict[str, Any]] = []
        self.successes = 0
        self.in_flight = 0
        self.max_concurrency_seen = 0
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.owner = self  # type: ignore[attr-defined]
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://{host}:{self.port}/v1"
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "LLMServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="llm-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases "hang", "timeout" and latency waits
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "LLMServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- programming it ----------------------------------------------------------------------
    def push_faults(self, *modes: str) -> None:
        for mode in modes:
            _check_mode(mode)
        with self._lock:
            self._faults.extend(modes)

    def reset(self) -> None:
        """Forget recorded requests, counters and queued faults (not responder/rule/latency)."""
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.successes = 0
            self.max_concurrency_seen = 0

    @property
    def faults_pending(self) -> int:
        return len(self._faults)

    # -- used by the handler ---------------------------------------------------------------------
    def _begin(self, record: dict) -> str:
        """Record the request and pick its mode: the next queued fault, else the rule, else ok."""
        with self._lock:
            self.requests.append(record)
            mode = self._faults.popleft() if self._faults else None
        if mode is None and self.rule is not None and isinstance(record["body"], dict):
            mode = self.rule(record["body"])
        mode = _check_mode(mode or "ok")
        with self._lock:
            self.in_flight += 1
            self.max_concurrency_seen = max(self.max_concurrency_seen, self.in_flight)
        return mode

    def _end(self, success: bool) -> None:
        with self._lock:
            self.in_flight -= 1
            self.successes += success

    def _wait(self, seconds: float) -> bool:
        """Sleep unless the server is stopping; True if it is."""
        return self._stopping.wait(seconds) if seconds > 0 else self._stopping.is_set()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops bursts of connects (1 s SYN retry)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real providers do
    timeout = 30  # idle keep-alive connections do not pin threads forever

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        server: LLMServer = self.server.owner  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        self._record = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
        mode = server._begin(self._record)
        self._ended = False
        try:
            if server._wait(server.latency):
                self._close()
            elif not isinstance(body, dict):
                self._error(400)
            elif self.path.rstrip("/") != "/v1/chat/completions":
                self._error(404)
            else:
                self._respond(server, mode, body)
        finally:
            self._end(False)

    def _end(self, success: bool) -> None:
        """Account for the request once, before its last byte goes out, so counters never lag
        behind what the client has already seen."""
        if not self._ended:
            self._ended = True
            self.server.owner._end(success)  # type: ignore[attr-defined]

    def _respond(self, server: LLMServer, mode: str, body: dict) -> None:
        """Answer according to ``mode``; well-formed completions count as successes."""
        if mode.startswith("latency:"):
            if server._wait(float(mode.split(":", 1)[1])):
                return self._close()
            mode = "ok"
        if mode.isdigit() or mode == "429-noretry-after":
            status = int(mode[:3])
            return self._error(status, {"Retry-After": server.retry_after} if mode == "429" else None)
        if mode in ("timeout", "hang"):
            server._wait(server.timeout_delay if mode == "timeout" else 24 * 3600)
            return self._close()
        if mode == "malformed":
            return self._send(200, b'{"id": "chatcmpl-bad", "choices": [{"index": 0, "mess')

        content = server.responder(body)
        schema = _json_schema(body)
        if schema is not None:  # structured output: answer with an object that follows the schema
            if not isinstance(schema, dict) or schema.get("type") != "object":
                return self._error(400)
            content = json.dumps(getattr(server, "json_responder", schema_answer)(body, schema, content))
        finish = "stop"
        if mode == "truncated":
            content, finish = content[: max(1, len(content) // 2)], "length"
        message = {"role": "assistant",
                   "content": None if mode == "null_content" else [content] if mode == "list_content" else content}
        usage: dict[str, Any] = {
            "prompt_tokens": len(_prompt(body).split()),
            "completion_tokens": len(content.split()),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if server.cost is not None:
            usage["cost"] = server.cost(body, usage) if callable(server.cost) else server.cost
        self._record["usage"] = usage
        payload = {
            "id": f"chatcmpl-{len(server.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [] if mode == "empty_choices" else [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }
        data = json.dumps(payload).encode()
        if mode == "drop":  # promise the whole body, send half, hang up
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self._end(False)
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            return self._close()
        self._send(200, data, {"Content-Type": "text/plain"} if mode == "text_plain" else None,
                   success=mode in ("ok", "truncated", "text_plain"))

    def _error(self, status: int, headers: dict[str, str] | None = None) -> None:
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        # Echo the Authorization header, as some providers quote a bad key: callers must scrub it.
        auth = self.headers.get("Authorization", "")
        message = f"simulated {status} {phrase} (authorization received: {auth})"
        error = {"error": {"message": message, "type": "test_server_error", "code": status}}
        self._send(status, json.dumps(error).encode(), headers)

    def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None, success: bool = False) -> None:
        self._end(success)
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _close(self) -> None:
        """Drop the connection without (finishing) an answer."""
        self._end(False)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible test server (echo responses)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    args = parser.parse_args(argv)
    server = LLMServer(port=args.port, latency=args.latency, host=args.host)
    print(server.base_url, flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
