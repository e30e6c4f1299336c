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
the ``latency_s`` it waited and the ``usage`` it answered with; ``server.successes`` counts well-formed 200 completions
(``truncated`` included). Token counts are words. ``server.cost`` (None by default) makes it
report ``usage.cost`` as OpenRouter does: a number, or ``cost(body, usage) -> float``.

Batch API (``/v1/files``: upload, retrieve, content; ``/v1/batches``: create, retrieve, cancel,
list), as OpenAI's: a job stays ``in_progress`` for ``batch_delay`` seconds after it is created,
then its lines are answered by the same responder and fault modes as calls (one queued fault or
rule verdict per line: a status becomes a line of the error file, ``truncated`` a truncated
answer) into an output and an error file. ``push_batch_outcomes`` queues, one per created job:
``ok``; ``expire`` or ``expire:<n>`` (ends ``expired`` with only the first n lines answered, the
rest in the error file as ``batch_expired``); ``fail`` (ends ``failed``, no output). A server
with ``batch_api = False`` answers 404 there, like a provider without one. ``after_batch_create``
and ``after_file_upload`` (callables given the job or file record) run after a job is made or a
file stored and before the answer goes out (a client killed there never learns the id). ``batch_jobs`` holds every job made, with its lines' ``custom_id``s.

Latency: ``server.latency`` seconds before every answer (fixed, the default); with
``server.latency_sigma`` > 0, each request waits a draw from the lognormal whose median is
``latency`` and whose log has standard deviation ``latency_sigma`` (``lognormal_latency``),
decided by the request itself (its body, the how-many-th time that body came, and
``latency_seed``), so two runs making the same requests see the same latencies whatever order
they arrive in. ``server.latency_served`` sums the latencies waited (a busy share's numerator).

Standalone, for benchmarks: ``python tests/llm_server.py --port 8765 --latency 0.2
[--latency-sigma 0.8 --latency-seed 0]``.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from statistics import NormalDist
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


_STANDARD_NORMAL = NormalDist()


def lognormal_latency(median: float, sigma: float, key: bytes) -> float:
    """A latency from the lognormal with this median and log-σ, fixed by ``key``: the key's hash is
    the draw's quantile (a heavy right tail: at σ 0.8 the 99th percentile is 6.4 × the median)."""
    if sigma <= 0 or median <= 0:
        return max(0.0, median)
    u = (int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") + 0.5) / 2**64
    return median * math.exp(sigma * _STANDARD_NORMAL.inv_cdf(u))


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

    def __init__(self, port: int = 0, latency: float = 0.0, host: str = "127.0.0.1",
                 latency_sigma: float = 0.0, latency_seed: int = 0):
        self.latency = latency  # seconds added to every request (the median when latency_sigma > 0)
        self.latency_sigma = latency_sigma  # > 0: lognormal latencies (see the module's docstring)
        self.latency_seed = latency_seed
        self.latency_served = 0.0  # seconds of latency waited, summed over requests
        self._seen_bodies: collections.Counter[bytes] = collections.Counter()
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
        # the batch API
        self.batch_api = True
        self.batch_delay = 0.0
        self.after_batch_create: Callable[[dict], None] | None = None
        self.after_file_upload: Callable[[dict], None] | None = None
        self._batch_outcomes: collections.deque[str] = collections.deque()
        self.files: dict[str, dict] = {}
        self.batch_jobs: dict[str, dict] = {}

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
            self.latency_served = 0.0
            self._seen_bodies.clear()

    def push_batch_outcomes(self, *outcomes: str) -> None:
        for outcome in outcomes:
            if outcome not in ("ok", "expire", "fail") and not outcome.startswith("expire:"):
                raise ValueError(f"unknown batch outcome {outcome!r}: ok, expire, expire:<n> or fail")
        with self._lock:
            self._batch_outcomes.extend(outcomes)

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

    def _latency_for(self, raw: bytes) -> float:
        """This request's latency: fixed, or its lognormal draw keyed by its body and how many
        times that body came before (a retry draws anew)."""
        if self.latency_sigma <= 0:
            delay = self.latency
        else:
            digest = hashlib.blake2b(raw, digest_size=16).digest()
            with self._lock:
                nth = self._seen_bodies[digest]
                self._seen_bodies[digest] += 1
            key = b"%d:%d:" % (self.latency_seed, nth) + digest
            delay = lognormal_latency(self.latency, self.latency_sigma, key)
        with self._lock:
            self.latency_served += delay
        return delay

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
        if self.path.startswith(("/v1/files", "/v1/batches")):
            return _BatchAPI(self, server).post(raw)
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        self._record = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
        mode = server._begin(self._record)
        self._ended = False
        try:
            delay = self._record["latency_s"] = server._latency_for(raw)
            if server._wait(delay):
                self._close()
            elif not isinstance(body, dict):
                self._error(400)
            elif self.path.rstrip("/") != "/v1/chat/completions":
                self._error(404)
            else:
                self._respond(server, mode, body)
        finally:
            self._end(False)

    def do_GET(self) -> None:
        server: LLMServer = self.server.owner  # type: ignore[attr-defined]
        if self.path.startswith(("/v1/files", "/v1/batches")):
            return _BatchAPI(self, server).get()
        self._send(404, b'{"error": {"message": "not found"}}')

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


class _BatchAPI:
    """Files and batches, on the handler's connection (see the module's docstring)."""

    def __init__(self, handler: _Handler, server: LLMServer):
        self.h, self.server = handler, server
        handler._ended = True  # not counted among the calls
        handler._record = {"path": handler.path, "headers": {k.lower(): v for k, v in handler.headers.items()},
                           "body": None}
        with server._lock:
            server.requests.append(handler._record)

    def _json(self, status: int, obj: dict) -> None:
        self.h._send(status, json.dumps(obj).encode())

    def _missing(self) -> None:
        self._json(404, {"error": {"message": f"no route {self.h.path}", "type": "invalid_request_error"}})

    def post(self, raw: bytes) -> None:
        if not self.server.batch_api:
            return self._missing()
        parts = self.h.path.split("?")[0].rstrip("/").split("/")  # "", "v1", "files" | "batches", ...
        if parts[2:] == ["files"]:
            return self._upload(raw)
        if parts[2:] == ["batches"]:
            return self._create(json.loads(raw or b"{}"))
        if len(parts) == 5 and parts[2] == "batches" and parts[4] == "cancel":
            job = self.server.batch_jobs.get(parts[3])
            if job is None:
                return self._missing()
            if job["status"] not in ("completed", "failed", "expired", "cancelled"):
                job["status"] = "cancelled"
                self._finish(job, answered=0, status="cancelled")
            return self._json(200, self._view(job))
        self._missing()

    def get(self) -> None:
        if not self.server.batch_api:
            return self._missing()
        path, _, query = self.h.path.partition("?")
        parts = path.rstrip("/").split("/")
        if parts[2:] == ["batches"]:
            jobs = [self._view(self._advance(j)) for j in reversed(list(self.server.batch_jobs.values()))]
            params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            if "after" in params:
                ids = [j["id"] for j in jobs]
                jobs = jobs[ids.index(params["after"]) + 1:] if params["after"] in ids else []
            limit = int(params.get("limit", 20))
            page = jobs[:limit]
            return self._json(200, {"object": "list", "data": page, "has_more": len(jobs) > limit,
                                    "first_id": page[0]["id"] if page else None,
                                    "last_id": page[-1]["id"] if page else None})
        if len(parts) == 4 and parts[2] == "batches":
            job = self.server.batch_jobs.get(parts[3])
            return self._json(200, self._view(self._advance(job))) if job else self._missing()
        if len(parts) >= 4 and parts[2] == "files" and parts[3] in self.server.files:
            f = self.server.files[parts[3]]
            if parts[4:] == ["content"]:
                return self.h._send(200, f["data"], {"Content-Type": "application/octet-stream"})
            return self._json(200, self._file_view(parts[3]))
        self._missing()

    def _upload(self, raw: bytes) -> None:
        import email.parser
        import email.policy

        head = f"Content-Type: {self.h.headers.get('Content-Type')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        fields = {}
        for part in message.iter_parts():
            fields[part.get_param("name", header="content-disposition")] = (
                part.get_filename(), part.get_payload(decode=True))
        name, data = fields.get("file", (None, None))
        if data is None:
            return self._json(400, {"error": {"message": "no file"}})
        with self.server._lock:
            fid = f"file-{len(self.server.files) + 1}"
            self.server.files[fid] = {"filename": name, "data": data, "purpose": (fields.get("purpose") or (0, b""))[1].decode(),
                                      "created_at": int(time.time())}
        if self.server.after_file_upload is not None:
            self.server.after_file_upload(self.server.files[fid])
        self._json(200, self._file_view(fid))

    def _file_view(self, fid: str) -> dict:
        f = self.server.files[fid]
        return {"id": fid, "object": "file", "bytes": len(f["data"]), "created_at": f["created_at"],
                "filename": f["filename"], "purpose": f["purpose"], "status": "processed"}

    def _create(self, body: dict) -> None:
        f = self.server.files.get(body.get("input_file_id"))
        if f is None:
            return self._json(400, {"error": {"message": "unknown input_file_id"}})
        lines = [json.loads(x) for x in f["data"].decode().splitlines() if x.strip()]
        with self.server._lock:
            outcome = self.server._batch_outcomes.popleft() if self.server._batch_outcomes else "ok"
            bid = f"batch_{len(self.server.batch_jobs) + 1}"
            job = self.server.batch_jobs[bid] = {
                "id": bid, "input_file_id": body["input_file_id"], "endpoint": body.get("endpoint"),
                "completion_window": body.get("completion_window"), "metadata": body.get("metadata"),
                "status": "in_progress", "created_at": time.time(), "lines": lines, "outcome": outcome,
                "custom_ids": [x["custom_id"] for x in lines], "output_file_id": None, "error_file_id": None,
                "completed": 0, "failed": 0, "errors": None}
        if self.server.after_batch_create is not None:
            self.server.after_batch_create(job)
        self._json(200, self._view(job))

    def _advance(self, job: dict) -> dict:
        """A job past its delay ends, as its outcome says."""
        with self.server._lock:
            if job["status"] != "in_progress" or time.time() < job["created_at"] + self.server.batch_delay:
                return job
            job["status"] = "finalizing"
        outcome = job["outcome"]
        if outcome == "fail":
            job["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": "simulated job failure"}]}
            self._finish(job, 0, "failed", with_files=False)
        elif outcome.startswith("expire"):
            n = int(outcome.split(":", 1)[1]) if ":" in outcome else 0
            self._finish(job, n, "expired")
        else:
            self._finish(job, len(job["lines"]), "completed")
        return job

    def _finish(self, job: dict, answered: int, status: str, with_files: bool = True) -> None:
        out, err = [], []
        for i, line in enumerate(job["lines"]):
            cid = line["custom_id"]
            if i >= answered:
                if with_files:
                    err.append({"id": f"req_{i}", "custom_id": cid, "response": None,
                                "error": {"code": f"batch_{status}", "message": f"this request was not run: batch {status}"}})
                continue
            status_code, payload = self._answer(line["body"])
            entry = {"id": f"req_{i}", "custom_id": cid,
                     "response": {"status_code": status_code, "request_id": f"r{i}", "body": payload}, "error": None}
            (out if status_code == 200 else err).append(entry)
        job["completed"], job["failed"] = len(out), len(err)
        with self.server._lock:
            for name, entries in (("output_file_id", out), ("error_file_id", err)):
                if entries and with_files:
                    fid = f"file-{len(self.server.files) + 1}"
                    self.server.files[fid] = {"filename": f"{job['id']}-{name}.jsonl", "purpose": "batch_output",
                                              "data": "".join(json.dumps(e) + "\n" for e in entries).encode(),
                                              "created_at": int(time.time())}
                    job[name] = fid
            job["status"] = status

    def _answer(self, body: dict) -> tuple[int, dict]:
        """One line, answered as a call would be (the responder, queued faults or the rule)."""
        server = self.server
        with server._lock:
            mode = server._faults.popleft() if server._faults else None
        if mode is None and server.rule is not None:
            mode = server.rule(body)
        mode = _check_mode(mode or "ok")
        if mode.isdigit() or mode == "429-noretry-after":
            status = int(mode[:3])
            return status, {"error": {"message": f"simulated {status}", "type": "test_server_error", "code": status}}
        content = server.responder(body)
        finish = "stop"
        if mode == "truncated":
            content, finish = content[: max(1, len(content) // 2)], "length"
        usage = {"prompt_tokens": len(_prompt(body).split()), "completion_tokens": len(content.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        with server._lock:
            server.successes += 1
        return 200, {"id": "chatcmpl-batch", "object": "chat.completion", "created": int(time.time()),
                     "model": body.get("model"), "usage": usage,
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}]}

    def _view(self, job: dict) -> dict:
        total = len(job["lines"])
        done = job["completed"]
        if job["status"] == "in_progress" and self.server.batch_delay > 0:  # progress, as providers show it
            done = min(total, int(total * (time.time() - job["created_at"]) / self.server.batch_delay))
        return {"id": job["id"], "object": "batch", "endpoint": job["endpoint"], "errors": job["errors"],
                "input_file_id": job["input_file_id"], "completion_window": job["completion_window"],
                "status": job["status"], "output_file_id": job["output_file_id"], "error_file_id": job["error_file_id"],
                "created_at": int(job["created_at"]), "metadata": job["metadata"],
                "request_counts": {"total": total, "completed": done, "failed": job["failed"]}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible test server (echo responses)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds added to every request (the median with --latency-sigma)")
    parser.add_argument("--latency-sigma", type=float, default=0.0,
                        help="> 0: lognormal latencies with this σ of their log (e.g. 0.8)")
    parser.add_argument("--latency-seed", type=int, default=0)
    args = parser.parse_args(argv)
    server = LLMServer(port=args.port, latency=args.latency, host=args.host,
                       latency_sigma=args.latency_sigma, latency_seed=args.latency_seed)
    print(server.base_url, flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
