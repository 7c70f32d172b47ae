"""OpenAI's Batch API beside the test server's ``/v1/embeddings``: files (upload, content) and
batches (create, retrieve, list, cancel) on 127.0.0.1, for tests and benchmarks.

A batch moves through ``validating``, ``in_progress`` and ``finalizing`` to ``completed``, a
status lasting ``step_s`` seconds of the server's clock; its output file holds one line per
request answered as ``/v1/embeddings`` answers (the same vector per text), its error file the
requests that failed. It enforces the documented limits of an embeddings batch and, when told,
an organisation's enqueued-token limit (the batch fails with ``token_limit_exceeded``, as
OpenAI's do); it can expire or fail batches, and leave requests out of an output file. Every
input billed is counted, so a test can show that none was billed twice.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

MAX_REQUESTS = 50_000
MAX_INPUTS = 50_000
MAX_FILE_BYTES = 200 * 2**20
OPEN_STATUSES = ("validating", "in_progress", "finalizing", "cancelling")
EMBEDDINGS_URLS = ("/v1/embeddings", "/embeddings")  # OpenAI's; Azure's


@dataclass
class BatchState:
    enabled: bool = True  # False: /v1/files and /v1/batches answer 404, as servers without the API do
    step_s: float = 0.2  # how long each of validating, in_progress and finalizing lasts
    cancel_s: float = 0.2  # how long cancelling lasts
    enqueued_token_limit: int | None = None
    expire_next: int = 0  # the next batches expire half done
    fail_next: int = 0  # the next batches fail their validation
    leave_out: int = 0  # requests each output file leaves out (the last ones)
    reject_match: str | None = None  # a request with an input containing this answers 400 in the error file
    batches_created: int = 0
    billed: Counter = field(default_factory=Counter)  # text -> times a completed request embedded it
    tokens_billed: int = 0


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict
    created: float  # the server's clock
    requests: list[dict]
    tokens: int
    status: str = "validating"
    errors: list[dict] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    ends: str = "completed"  # how it ends: completed, expired, cancelled
    cancelled_at: float | None = None
    done: int = 0  # requests answered

    def body(self) -> dict:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "created_at": int(self.created),
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "metadata": self.metadata,
            "request_counts": {
                "total": len(self.requests),
                "completed": self.done,
                "failed": len(self.requests) - self.done if self.status in ("completed", "expired", "cancelled") else 0,
            },
        }


class BatchApi:
    """The Batch API's routes of one test server; ``embed(texts, model, dimensions)`` answers a
    request's body as the server's ``/v1/embeddings`` would, ``count(texts)`` counts its tokens."""

    def __init__(self, server_state, authorized, count, vector) -> None:
        self.server_state = server_state  # its ``batch`` is read at each call: a test may set a new one
        self.authorized = authorized
        self.count = count
        self.vector = vector
        self.files: dict[str, tuple[dict, bytes]] = {}
        self.batches: dict[str, _Batch] = {}
        self.ids = itertools.count(1)
        self.started = time.monotonic()

    @property
    def state(self) -> BatchState:
        return self.server_state.batch

    def now(self) -> float:
        return time.monotonic() - self.started + 1_700_000_000

    def add_routes(self, app: web.Application) -> None:
        for prefix in ("/v1", "/openai"):  # OpenAI's paths; Azure's
            app.router.add_post(f"{prefix}/files", self.upload)
            app.router.add_get(f"{prefix}/files", self.list_files)
            app.router.add_get(f"{prefix}/files/{{id}}", self.file)
            app.router.add_get(f"{prefix}/files/{{id}}/content", self.content)
            app.router.add_post(f"{prefix}/batches", self.create)
            app.router.add_get(f"{prefix}/batches", self.list_batches)
            app.router.add_get(f"{prefix}/batches/{{id}}", self.retrieve)
            app.router.add_post(f"{prefix}/batches/{{id}}/cancel", self.cancel)

    def _refused(self, request: web.Request) -> web.Response | None:
        if not self.state.enabled:
            return _error(404, f"Invalid URL ({request.method} {request.path})", "invalid_request_error")
        if not self.authorized(request):
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return None

    # files

    def _store(self, name: str, purpose: str, data: bytes) -> dict:
        file_id = f"file-{next(self.ids)}"
        meta = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(self.now()),
                "filename": name, "purpose": purpose, "status": "processed"}  # fmt: skip
        self.files[file_id] = (meta, data)
        return meta

    async def upload(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if upload is None or not hasattr(upload, "file"):
            return _error(400, "a file is required", "invalid_request_error")
        data = upload.file.read()
        if purpose == "batch" and len(data) > MAX_FILE_BYTES:
            return _error(400, f"the file has {len(data)} bytes; a batch file may have {MAX_FILE_BYTES}",
                          "invalid_request_error")  # fmt: skip
        return web.json_response(self._store(upload.filename or "upload.jsonl", str(purpose), data))

    async def list_files(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        data = [meta for meta, _ in self.files.values()]
        return web.json_response({"object": "list", "data": data[-100:], "has_more": False})

    async def file(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        found = self.files.get(request.match_info["id"])
        return web.json_response(found[0]) if found else _error(404, "No such file", "invalid_request_error")

    async def content(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        found = self.files.get(request.match_info["id"])
        if found is None:
            return _error(404, "No such file", "invalid_request_error")
        return web.Response(body=found[1], content_type="application/octet-stream")

    # batches

    async def create(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        body = await request.json()
        found = self.files.get(body.get("input_file_id", ""))
        if found is None:
            return _error(400, "input_file_id: no such file", "invalid_request_error")
        if body.get("endpoint") not in EMBEDDINGS_URLS or body.get("completion_window") != "24h":
            return _error(400, "this server batches /v1/embeddings in a 24h window", "invalid_request_error")
        requests, problem = self._parse(found[1])
        batch = _Batch(f"batch_{next(self.ids)}", body["input_file_id"], body["endpoint"], body.get("metadata") or {},
                       self.now(), requests, sum(r["tokens"] for r in requests))  # fmt: skip
        self.state.batches_created += 1
        enqueued = sum(b.tokens for b in self.batches.values() if b.status in OPEN_STATUSES)
        limit = self.state.enqueued_token_limit
        if problem is None and limit is not None and enqueued + batch.tokens > limit:
            model = requests[0]["body"].get("model") if requests else "the model"
            message = (
                f"Enqueued token limit reached for {model} in organization org-test. Limit: {limit:,} "
                "enqueued tokens. Please try again once some in_progress batches have been completed."
            )
            problem = {"code": "token_limit_exceeded", "line": None, "param": None, "message": message}
        if problem is None and self.state.fail_next > 0:
            self.state.fail_next -= 1
            problem = {"code": "server_error", "line": None, "param": None, "message": "the batch failed to start"}
        if problem is not None:
            batch.status, batch.errors = "failed", [problem]
        elif self.state.expire_next > 0:
            self.state.expire_next -= 1
            batch.ends = "expired"
        self.batches[batch.id] = batch
        return web.json_response(batch.body())

    def _parse(self, data: bytes) -> tuple[list[dict], dict | None]:
        """The requests of an input file, or why the file is refused (as its batch's error)."""
        requests, seen, inputs = [], set(), 0
        for number, line in enumerate(data.decode().splitlines(), start=1):
            try:
                item = json.loads(line)
                texts = item["body"]["input"]
                texts = [texts] if isinstance(texts, str) else texts
                assert item["method"] == "POST" and item["url"] in EMBEDDINGS_URLS and isinstance(texts, list)
            except (ValueError, KeyError, TypeError, AssertionError):
                return [], {"code": "invalid_request", "line": number, "param": None,
                            "message": "not a POST to /v1/embeddings with a body holding input"}  # fmt: skip
            if item["custom_id"] in seen:
                return [], {"code": "duplicate_custom_id", "line": number, "param": "custom_id",
                            "message": f"custom_id {item['custom_id']} is used twice"}  # fmt: skip
            seen.add(item["custom_id"])
            inputs += len(texts)
            requests.append({**item, "texts": texts, "tokens": sum(self.count(texts))})
        if len(requests) > MAX_REQUESTS or inputs > MAX_INPUTS:
            return [], {"code": "too_large", "line": None, "param": None,
                        "message": f"{len(requests)} requests with {inputs} inputs; a batch takes "
                                   f"{MAX_REQUESTS} requests and {MAX_INPUTS} embedding inputs"}  # fmt: skip
        return requests, None

    def _advance(self, batch: _Batch) -> None:
        """The batch's status at the server's clock; its files once it is done."""
        if batch.status in ("failed", "completed", "expired", "cancelled"):
            return
        step = self.state.step_s
        elapsed = self.now() - batch.created
        if batch.status == "cancelling":
            if self.now() - (batch.cancelled_at or 0) >= self.state.cancel_s:
                self._finish(batch, "cancelled")
            return
        if elapsed < step:
            batch.status = "validating"
        elif elapsed < 2 * step:
            batch.status = "in_progress"
            batch.done = int(len(batch.requests) * (elapsed - step) / step)
        elif elapsed < 3 * step:
            batch.status = "finalizing"
        else:
            self._finish(batch, batch.ends)

    def _finish(self, batch: _Batch, status: str) -> None:
        total = len(batch.requests)
        answered = max(0, total - self.state.leave_out) if status == "completed" else total // 2
        out, failed = [], []
        for i, item in enumerate(batch.requests):
            if i >= answered:
                if status != "completed":  # left out of a completed one's output: in neither file
                    code = "batch_expired" if status == "expired" else "batch_cancelled"
                    failed.append(_line(item, None, {"code": code, "message": f"the batch was {status} first"}))
                continue
            if self.state.reject_match and any(self.state.reject_match in t for t in item["texts"]):
                error = {"error": {"message": "'$.input' is invalid: the input cannot be embedded",
                                   "type": "invalid_request_error", "param": None, "code": None}}  # fmt: skip
                failed.append(_line(item, {"status_code": 400, "request_id": f"req_{i}", "body": error}, None))
                continue
            out.append(_line(item, {"status_code": 200, "request_id": f"req_{i}", "body": self._answer(item)}, None))
            self.state.billed.update(item["texts"])
            self.state.tokens_billed += item["tokens"]
        batch.done = len(out)
        if out:
            batch.output_file_id = self._store("output.jsonl", "batch_output", _jsonl(out))["id"]
        if failed:
            batch.error_file_id = self._store("errors.jsonl", "batch_output", _jsonl(failed))["id"]
        batch.status = status

    def _answer(self, item: dict) -> dict:
        body = item["body"]
        model = body.get("model")
        vectors = [self.vector(t, int(body.get("dimensions") or 1536)) for t in item["texts"]]
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": i,
             "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if as_base64 else v.tolist()}
            for i, v in enumerate(vectors)
        ]  # fmt: skip
        usage = {"prompt_tokens": item["tokens"], "total_tokens": item["tokens"]}
        return {"object": "list", "data": data[::-1], "model": model, "usage": usage}

    def _batch(self, request: web.Request) -> _Batch | web.Response:
        """The batch the request names, as it is now; or the answer refusing the request."""
        if (refused := self._refused(request)) is not None:
            return refused
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "No such batch", "invalid_request_error")
        self._advance(batch)
        return batch

    async def retrieve(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        return batch if isinstance(batch, web.Response) else web.json_response(batch.body())

    async def list_batches(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        newest_first = list(reversed(self.batches.values()))
        after = request.query.get("after")
        if after is not None:
            ids = [b.id for b in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query.get("limit", 20))
        page = newest_first[:limit]
        for batch in page:
            self._advance(batch)
        return web.json_response({
            "object": "list", "data": [b.body() for b in page], "has_more": len(newest_first) > limit,
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
        })  # fmt: skip

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        if isinstance(batch, web.Response):
            return batch
        if batch.status in ("validating", "in_progress", "finalizing"):
            batch.status, batch.cancelled_at = "cancelling", self.now()
        return web.json_response(batch.body())

    def open_batches(self) -> int:
        for batch in self.batches.values():
            self._advance(batch)
        return sum(b.status in OPEN_STATUSES for b in self.batches.values())


def _line(item: dict, response: dict | None, error: dict | None) -> dict:
    return {"id": f"batch_req_{item['custom_id']}", "custom_id": item["custom_id"], "response": response,
            "error": error}  # fmt: skip


def _jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _error(status: int, message: str, kind: str, code: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": code}}, status=status)
