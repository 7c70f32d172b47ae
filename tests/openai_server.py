"""An HTTP server speaking OpenAI's ``/v1/embeddings`` protocol, for tests and benchmarks.

It enforces requests and tokens per minute (429 with Retry-After past them, ``x-ratelimit-*``
headers on every answer) with one of three limiters: a token bucket as OpenAI describes its
limits, a log of the last 60 seconds, or fixed 10-second windows holding a sixth of the minute
each, as Azure counts. It counts tokens with tiktoken, or as one per 4 bytes, and gives each
text a fixed unit vector (seeded by its SHA-256, so a test can check which vector a row got),
returns the data in shuffled order, and can be told to fail in every way the client must
survive. Azure's route (``/openai/deployments/{name}/embeddings``, ``api-key`` header) is
served too. ``python -m tests.openai_server --port N --rpm R --tpm T`` runs one on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
from aiohttp import web

from tests.openai_batch_server import BatchApi, BatchState
from vectorize.tokens import TiktokenCounter

logger = logging.getLogger(__name__)

MODELS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
FAULT_KINDS = (
    "500", "429", "timeout", "drop", "reject_input", "malformed", "wrong_dims", "nan", "fewer",
    "401", "403", "quota",
)  # fmt: skip


def vector_for(text: str, dimensions: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    values = np.random.default_rng(seed).standard_normal(dimensions).astype(np.float32)
    return values / np.linalg.norm(values)


@dataclass
class Fault:
    kind: str
    times: int = 1  # how many matching requests it hits; -1: all of them
    match: str | None = None  # only requests with an input containing this
    skip: int = 0  # let this many matching requests through first


class Bucket:
    """A token bucket (OpenAI's description of its limits): refills continuously, holds
    ``window_s`` seconds of the minute's budget, starts full. A request larger than it holds
    goes when it is full and leaves a debt."""

    def __init__(self, per_minute: float, window_s: float, now: float) -> None:
        self.per_minute = per_minute
        self.capacity = per_minute * window_s / 60.0
        self.level = self.capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.per_minute / 60.0)
        self.updated = now

    def wait(self, amount: float, now: float) -> float:
        self._refill(now)
        return max(0.0, (min(amount, self.capacity) - self.level) * 60.0 / self.per_minute)

    def take(self, amount: float, now: float) -> None:
        self.level -= amount

    def remaining(self, now: float) -> float:
        self._refill(now)
        return self.level

    def reset_s(self, now: float) -> float:
        return max(0.0, (self.capacity - self.remaining(now)) * 60.0 / self.per_minute)


class SlidingMinute:
    """A log of the last 60 seconds: what it holds may not pass the minute's budget. A request
    larger than the budget goes when the log is empty."""

    def __init__(self, per_minute: float, window_s: float, now: float) -> None:
        self.per_minute = per_minute
        self.log: deque[tuple[float, float]] = deque()

    def _expire(self, now: float) -> float:
        while self.log and self.log[0][0] + 60.0 <= now:
            self.log.popleft()
        return sum(amount for _, amount in self.log)

    def wait(self, amount: float, now: float) -> float:
        used = self._expire(now)
        if not self.log or used + amount <= self.per_minute:
            return 0.0
        for at, taken in self.log:
            used -= taken
            if used + amount <= self.per_minute or used <= 0:
                return at + 60.0 - now
        return 60.0

    def take(self, amount: float, now: float) -> None:
        self.log.append((now, amount))

    def remaining(self, now: float) -> float:
        return self.per_minute - self._expire(now)

    def reset_s(self, now: float) -> float:
        self._expire(now)
        return self.log[-1][0] + 60.0 - now if self.log else 0.0


class TenSecondWindows:
    """Fixed 10-second windows, each holding a sixth of the minute's budget (Azure's way). A
    request larger than a window goes alone in an empty one."""

    def __init__(self, per_minute: float, window_s: float, now: float) -> None:
        self.per_minute = per_minute
        self.share = per_minute / 6.0
        self.window = -1
        self.used = 0.0

    def _roll(self, now: float) -> None:
        window = int(now // 10.0)
        if window != self.window:
            self.window, self.used = window, 0.0

    def wait(self, amount: float, now: float) -> float:
        self._roll(now)
        if self.used == 0 or self.used + amount <= self.share:
            return 0.0
        return (self.window + 1) * 10.0 - now

    def take(self, amount: float, now: float) -> None:
        self.used += amount

    def remaining(self, now: float) -> float:
        self._roll(now)
        return self.share - self.used

    def reset_s(self, now: float) -> float:
        return (int(now // 10.0) + 1) * 10.0 - now


LIMITERS = {"bucket": Bucket, "sliding": SlidingMinute, "windows": TenSecondWindows}


def bytes_per_four(texts: list[str]) -> list[int]:
    """A token count unlike tiktoken's, as some servers have: one token per 4 bytes of UTF-8."""
    return [max(1, -(-len(t.encode()) // 4)) for t in texts]


@dataclass
class ServerState:
    api_key: str = "sk-test-key"
    rpm: int | None = None
    tpm: int | None = None
    window_s: float = 60.0  # seconds of budget a bucket holds
    limiter: str = "bucket"  # or "sliding", "windows" (LIMITERS)
    count: str = "tiktoken"  # or "bytes4": how the server counts tokens
    latency_s: float = 0.0
    hang_s: float = 5.0
    faults: list[Fault] = field(default_factory=list)
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    tokens_served: int = 0
    texts_served: Counter = field(default_factory=Counter)
    answered: list[tuple[float, int]] = field(default_factory=list)  # (time.monotonic(), tokens) of each 200
    first_request: float | None = None
    last_answer: float | None = None
    batch: BatchState = field(default_factory=BatchState)  # its Batch API (tests/openai_batch_server.py)

    def seconds_between_first_and_last(self) -> float:
        return (self.last_answer or 0.0) - (self.first_request or 0.0)

    def __post_init__(self) -> None:
        now = time.monotonic()
        limiter = LIMITERS[self.limiter]
        self.buckets = {
            name: limiter(limit, self.window_s, now)
            for name, limit in (("requests", self.rpm), ("tokens", self.tpm))
            if limit
        }


def _error(status: int, message: str, kind: str, code: str | None = None, headers: dict | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


class EmbeddingsServer:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.counter = TiktokenCounter()
        self.lock = asyncio.Lock()
        self.batches = BatchApi(state, self._authorized, self._count, vector_for)

    def _count(self, texts: list[str]) -> list[int]:
        return bytes_per_four(texts) if self.state.count == "bytes4" else self.counter.count(texts)

    def _take_fault(self, texts: list[str]) -> Fault | None:
        for fault in self.state.faults:
            if fault.times == 0:
                continue
            if fault.match is not None and not any(fault.match in t for t in texts):
                continue
            if fault.skip > 0:
                fault.skip -= 1
                continue
            if fault.times > 0:
                fault.times -= 1
            return fault
        return None

    def _rate_headers(self) -> dict[str, str]:
        now = time.monotonic()
        headers = {}
        for name, limit in self.state.buckets.items():
            headers[f"x-ratelimit-limit-{name}"] = str(int(limit.per_minute))
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, int(limit.remaining(now))))
            headers[f"x-ratelimit-reset-{name}"] = f"{limit.reset_s(now):.3f}s"
        return headers

    def _admit(self, tokens: int) -> float:
        """0 when the request fits the budget (and is taken from it), else seconds to wait."""
        now = time.monotonic()
        wait = 0.0
        for name, limit in self.state.buckets.items():
            wait = max(wait, limit.wait(1 if name == "requests" else tokens, now))
        if wait == 0:
            for name, limit in self.state.buckets.items():
                limit.take(1 if name == "requests" else tokens, now)
        return wait

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("api-key") or request.headers.get("Authorization", "").removeprefix("Bearer ")
        return given == self.state.api_key

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        state.requests += 1
        state.first_request = state.first_request or time.monotonic()
        response = await self._answer(request, request.match_info.get("deployment"))
        state.statuses[response.status] += 1
        state.last_answer = time.monotonic()
        return response

    async def _answer(self, request: web.Request, deployment: str | None) -> web.StreamResponse:
        state = self.state
        if not self._authorized(request):
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        model = deployment or body.get("model")
        if model not in MODELS:
            return _error(404, f"The model `{model}` does not exist.", "invalid_request_error", "model_not_found")
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return _error(400, "'input' must be a string or a non-empty list of strings", "invalid_request_error")
        if len(texts) > 2048:
            return _error(400, "'input' holds more than 2048 items", "invalid_request_error")
        counts = self._count(texts)
        for i, (text, count) in enumerate(zip(texts, counts, strict=True)):
            if not text:
                return _error(400, f"'$.input[{i}]' is an empty string", "invalid_request_error")
            if count > 8192:
                return _error(400, f"input {i} has {count} tokens; the maximum is 8192", "invalid_request_error")
        tokens = sum(counts)
        if tokens > 300_000:
            return _error(400, f"{tokens} tokens in one request; the maximum is 300000", "invalid_request_error")
        if state.tpm is not None and tokens > state.tpm:
            return _error(400, f"request too large: {tokens} tokens, the limit is {state.tpm} a minute",
                          "invalid_request_error")  # fmt: skip
        async with self.lock:
            fault = self._take_fault(texts)
            wait = 0.0 if fault else self._admit(tokens)
            headers = self._rate_headers()
        if wait > 0:
            headers |= {"retry-after": f"{max(1, round(wait))}", "retry-after-ms": f"{int(wait * 1000)}"}
            return _error(429, "Rate limit reached for requests or tokens.", "requests", "rate_limit_exceeded", headers)
        if fault is not None:
            answered = await self._fault(request, fault, texts, headers)
            if answered is not None:
                return answered
        if state.latency_s:
            await asyncio.sleep(state.latency_s)
        dimensions = int(body.get("dimensions") or MODELS[model])
        vectors = [vector_for(t, dimensions) for t in texts]
        if fault is not None and fault.kind == "wrong_dims":
            vectors = [v[:-1] for v in vectors]
        if fault is not None and fault.kind == "nan":
            bad = next(i for i, t in enumerate(texts) if fault.match is None or fault.match in t)
            vectors[bad] = np.full_like(vectors[bad], np.nan)
        order = np.random.default_rng().permutation(len(texts)).tolist()
        if fault is not None and fault.kind == "fewer":
            order = order[:-1]
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(vectors[i].astype("<f4").tobytes()).decode()
                if as_base64
                else vectors[i].tolist(),
            }
            for i in order
        ]
        state.tokens_served += tokens
        state.texts_served.update(texts)
        state.answered.append((time.monotonic(), tokens))
        payload = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return web.Response(text=json.dumps(payload), content_type="application/json", headers=headers)

    async def _fault(
        self, request: web.Request, fault: Fault, texts: list[str], headers: dict
    ) -> web.StreamResponse | None:
        kind = fault.kind
        if kind == "500":
            return _error(500, "The server had an error while processing your request.", "server_error")
        if kind == "429":
            return _error(429, "Rate limit reached.", "requests", "rate_limit_exceeded", headers | {"retry-after": "1"})
        if kind == "quota":
            return _error(429, "You exceeded your current quota.", "insufficient_quota", "insufficient_quota")
        if kind == "401":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if kind == "403":
            return _error(403, "You are not allowed to use this model.", "invalid_request_error", "model_not_allowed")
        if kind == "timeout":
            await asyncio.sleep(self.state.hang_s)
            return None
        if kind == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if kind == "reject_input":
            bad = next(i for i, t in enumerate(texts) if fault.match is None or fault.match in t)
            return _error(400, f"'$.input[{bad}]' is invalid: the input cannot be embedded", "invalid_request_error")
        if kind == "malformed":
            return web.Response(text='{"object": "list", "data": [', content_type="application/json")
        return None  # wrong_dims, nan, fewer: shaped into the answer

    async def control(self, request: web.Request) -> web.Response:
        """POST {"faults": [...], "latency_s": s, "batch": {BatchState field: value}} changes the
        server; GET returns the counters."""
        if request.method == "POST":
            body = await request.json()
            async with self.lock:
                self.state.faults.extend(Fault(**f) for f in body.get("faults", []))
                if "latency_s" in body:
                    self.state.latency_s = float(body["latency_s"])
                for name, value in body.get("batch", {}).items():
                    setattr(self.state.batch, name, value)
        s = self.state
        return web.json_response(
            {
                "requests": s.requests,
                "statuses": {str(k): v for k, v in s.statuses.items()},
                "tokens_served": s.tokens_served,
                "texts_served": sum(s.texts_served.values()),
                "seconds": s.seconds_between_first_and_last(),
                "answered": s.answered,  # time.monotonic() is comparable across processes of one machine
                "batches_created": s.batch.batches_created,
                "batches_failed": sum(b.status == "failed" for b in self.batches.batches.values()),
                "batch_texts_billed": len(s.batch.billed),
                "batch_texts_billed_twice": sum(times > 1 for times in s.batch.billed.values()),
                "batch_tokens_billed": s.batch.tokens_billed,
            }
        )

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self.embeddings)
        app.router.add_route("*", "/_control", self.control)
        self.batches.add_routes(app)
        return app


class RunningServer:
    """The server on 127.0.0.1 in a thread of this process, with its own event loop."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.server = EmbeddingsServer(state)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True, name="openai-test-server")
        self.thread.start()
        if not ready.wait(30):
            raise RuntimeError("the test server did not start")

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.server.app(), access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_fault(self, kind: str, times: int = 1, match: str | None = None, skip: int = 0) -> None:
        assert kind in FAULT_KINDS, kind
        self.state.faults.append(Fault(kind, times, match, skip))

    def stop(self) -> None:
        async def shutdown() -> None:
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rpm", type=int)
    parser.add_argument("--tpm", type=int)
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--limiter", choices=sorted(LIMITERS), default="bucket")
    parser.add_argument("--count", choices=("tiktoken", "bytes4"), default="tiktoken")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--api-key", default="sk-test-key")
    args = parser.parse_args()
    state = ServerState(
        args.api_key, args.rpm, args.tpm, args.window_s, args.limiter, args.count, args.latency_ms / 1000
    )
    web.run_app(EmbeddingsServer(state).app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
