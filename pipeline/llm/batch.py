"""Provider batch APIs: a JSONL of chat-completion requests uploaded as a file, a job made of it,
polled until it ends, its output and error files read back.

One adapter here, for OpenAI's files and batches API (which other providers' OpenAI-compatible
endpoints copy), through the ``openai`` SDK. Each line's body is built by the same
``OpenAIAPI.body`` a synchronous call posts, and each answer is read by the same
``OpenAIAPI._completion``, so a generation made in a batch is the one a call would have made.

Where it differs from a call: the SDK's client here is synchronous (a generation task polls on its
own thread, nothing is in flight between two looks) and keeps the SDK's own retries, because
every step is idempotent or guarded by the caller (``pipeline/run/batch_jobs.py``): uploading a file
submits nothing, and a job is created only after looking for one made from the same record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from pipeline.errors import DaydreamError
from pipeline.llm.base import (BatchSettings, Completion, CompletionRequest, GenerationContext, NoBatchAPI, ProviderSettings,
                               Transient)
from pipeline.llm.offline import OfflineAPI
from pipeline.llm.openai_provider import OpenAIAPI, _NO_KEY
from pipeline.llm.registry import register_batch_api

JOB_KEY = "daydream_job"  # the job's metadata key naming its record in the store
ENDPOINT = "/v1/chat/completions"
RETRYABLE_STATUS = (408, 429)  # and 5xx: worth another job; other statuses are the request's own fault


@dataclass(frozen=True)
class Item:
    """One line of a job's output or error file: a completion, or why there is none."""

    custom_id: str
    completion: Completion | None
    error: str | None = None
    retry: bool = False  # the error is worth another try (5xx, 429, a malformed answer)


@register_batch_api("openai")
class OpenAIBatchAPI:
    """Files and batches of an OpenAI-compatible server."""

    def __init__(self, settings: ProviderSettings, api_key: str | None, batch: BatchSettings, state_dir: Path | None = None):
        self.settings, self.batch = settings, batch
        self.name = settings.name
        self.chat = OpenAIAPI(settings, api_key)
        self._key = api_key or ""
        self.client = openai.OpenAI(base_url=settings.base_url, api_key=api_key or _NO_KEY, max_retries=2,
                                    timeout=settings.timeout_s,
                                    default_headers=dict(settings.extra_headers) or None)

    def close(self) -> None:
        self.client.close()

    # -- requests ----------------------------------------------------------------------------------
    def line(self, custom_id: str, request: CompletionRequest) -> bytes:
        body = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": self.chat.body(request)}
        return (json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    def _call(self, what: str, fn, *args, **kwargs) -> Any:
        """One SDK call; a missing batch API is one clear error, others are ``DaydreamError``s
        (permanent) or ``Transient`` (the caller looks again later)."""
        failure: Exception
        try:
            return fn(*args, **kwargs)
        except openai.NotFoundError:
            failure = NoBatchAPI(
                "config", f"provider '{self.name}' ({self.settings.base_url}) has no batch API (HTTP 404 on "
                          f"{what}): set batch = false in [llm.{self.name}], or run without --batch")
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            failure = Transient(f"connection error on {what}: {self.chat._scrub(str(exc))}")
        except openai.APIStatusError as exc:
            message = self.chat._server_message(exc.body)
            if exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500:
                failure = Transient(f"HTTP {exc.status_code} on {what}: {message}")
            else:
                failure = DaydreamError("llm", f"HTTP {exc.status_code} from provider '{self.name}' on {what}: {message}")
        raise failure

    def probe(self) -> None:
        """One clear error now when the server has no batch API, before any generation is run."""
        self._call("/batches", self.client.batches.list, limit=1)

    def upload(self, name: str, data: bytes) -> str:
        return self._call("/files", self.client.files.create, file=(name, data, "application/jsonl"), purpose="batch").id

    def create(self, input_file_id: str, key: str) -> dict:
        job = self._call("/batches", self.client.batches.create, input_file_id=input_file_id, endpoint=ENDPOINT,
                         completion_window=self.batch.window, metadata={JOB_KEY: key})
        return _plain(job)

    def retrieve(self, batch_id: str) -> dict:
        return _plain(self._call(f"/batches/{batch_id}", self.client.batches.retrieve, batch_id))

    def cancel(self, batch_id: str) -> dict:
        return _plain(self._call(f"/batches/{batch_id}/cancel", self.client.batches.cancel, batch_id))

    def find(self, key: str, input_file_id: str | None) -> dict | None:
        """The job made from the record ``key`` (its metadata, or its input file), if any: the
        provider's own list, so a job whose id was never recorded (a kill right after creating
        it) is found instead of being made again."""
        page = self._call("/batches", self.client.batches.list, limit=100)
        for job in page.auto_paging_iter() if hasattr(page, "auto_paging_iter") else page:
            job = _plain(job)
            if (job.get("metadata") or {}).get(JOB_KEY) == key or (input_file_id and job.get("input_file_id") == input_file_id):
                return job
        return None

    def content(self, file_id: str) -> str:
        return self._call(f"/files/{file_id}/content", self.client.files.content, file_id).text

    # -- answers -----------------------------------------------------------------------------------
    def items(self, text: str, requests: dict[str, CompletionRequest], duration_s: float) -> list[Item]:
        """The lines of an output or error file, each as an ``Item``; lines of other ids are skipped."""
        out = []
        for raw in text.splitlines():
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # a line cut short: its request goes into the next job
            cid = line.get("custom_id") if isinstance(line, dict) else None
            if cid not in requests:
                continue
            response, error = line.get("response") or {}, line.get("error")
            status = response.get("status_code") if isinstance(response, dict) else None
            if status == 200:
                try:
                    out.append(Item(cid, self.chat._completion(requests[cid], response.get("body"), duration_s)))
                except Transient as exc:
                    out.append(Item(cid, None, exc.reason, retry=True))
                continue
            message = self.chat._server_message(response.get("body") if isinstance(response, dict) and response.get("body")
                                                else error)
            retry = status is None or status in RETRYABLE_STATUS or status >= 500
            out.append(Item(cid, None, f"HTTP {status} in batch job: {message}" if status else f"batch job: {message}",
                            retry=retry))
        return out


@register_batch_api("offline")
class OfflineBatchAPI(OpenAIBatchAPI):
    """The simulator's batch jobs, so the demo can run in batch mode: a job is answered as it is
    made (``completed`` at once). Its files and jobs are kept in ``state_dir`` (the data root's
    ``batches/offline``), the simulator's side, so another process resumes them as it would a
    provider's. A line carries the request's ``GenerationContext`` beside its body: the simulator
    writes to fit it (a real provider never sees it)."""

    def __init__(self, settings: ProviderSettings, api_key: str | None, batch: BatchSettings, state_dir: Path | None = None):
        self.settings, self.batch, self.name = settings, batch, settings.name
        self.chat = OpenAIAPI(settings, None)  # reads the answers as a provider's
        self.sim = OfflineAPI(settings)
        self.dir = Path(state_dir or ".")

    def close(self) -> None:
        pass

    def line(self, custom_id: str, request: CompletionRequest) -> bytes:
        body = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": self.chat.body(request),
                "context": dataclasses.asdict(request.context)}
        return (json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    def probe(self) -> None:
        pass

    def _save(self, name: str, data: bytes) -> None:
        from pipeline.store import atomic_write_bytes

        atomic_write_bytes(self.dir / name, data)

    def upload(self, name: str, data: bytes) -> str:
        fid = f"file-{uuid.uuid4().hex[:12]}"
        self._save(fid, data)
        return fid

    def create(self, input_file_id: str, key: str) -> dict:
        lines, requests = [json.loads(raw) for raw in (self.dir / input_file_id).read_text().splitlines()], []
        for line in lines:
            body, context = line["body"], dict(line["context"])
            context["concept_ids"] = tuple(context.get("concept_ids") or ())
            requests.append(CompletionRequest(prompt=body["messages"][-1]["content"], model_slug=body["model"],
                                              temperature=body.get("temperature"), max_tokens=body.get("max_tokens"),
                                              context=GenerationContext(**context)))

        async def answer_all() -> list[Completion]:
            return [await self.sim.generate(r) for r in requests]

        out = []
        for line, c in zip(lines, asyncio.run(answer_all())):
            answer = {"object": "chat.completion", "model": c.model_slug,
                      "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens},
                      "choices": [{"index": 0, "finish_reason": c.finish_reason,
                                   "message": {"role": "assistant", "content": c.text}}]}
            out.append(json.dumps({"custom_id": line["custom_id"], "response": {"status_code": 200, "body": answer}}))
        output = self.upload("output.jsonl", ("\n".join(out) + "\n").encode())
        job = {"id": f"batch_{uuid.uuid4().hex[:12]}", "object": "batch", "status": "completed",
               "input_file_id": input_file_id, "output_file_id": output, "error_file_id": None,
               "metadata": {JOB_KEY: key}, "request_counts": {"total": len(out), "completed": len(out), "failed": 0}}
        self._save(f"{job['id']}.json", json.dumps(job).encode())
        return job

    def retrieve(self, batch_id: str) -> dict:
        return json.loads((self.dir / f"{batch_id}.json").read_text())

    def cancel(self, batch_id: str) -> dict:
        return self.retrieve(batch_id)

    def find(self, key: str, input_file_id: str | None) -> dict | None:
        for path in sorted(self.dir.glob("batch_*.json")):
            job = json.loads(path.read_text())
            if job["metadata"].get(JOB_KEY) == key:
                return job
        return None

    def content(self, file_id: str) -> str:
        return (self.dir / file_id).read_text()

    def items(self, text: str, requests: dict[str, CompletionRequest], duration_s: float) -> list[Item]:
        return [dataclasses.replace(i, completion=dataclasses.replace(i.completion, simulated=True))
                if i.completion else i for i in super().items(text, requests, duration_s)]


def _plain(obj: Any) -> dict:
    """An SDK model as plain JSON (what the store records)."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return dict(obj) if isinstance(obj, dict) else {}
