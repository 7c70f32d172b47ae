"""Embedding over an OpenAI-compatible HTTP API: packing, budget, retries, checks.

Texts are packed into requests by count and by tokens; each request waits for the run's
shared budget, is retried on 429, 5xx, timeouts and dropped connections with exponential
backoff and jitter (Retry-After wins), and is split in halves on a 400 until the one input
the server refuses is isolated. A response becomes vectors only after it is checked: one
vector per input, every index once, the expected dimensions, finite values. 401, 403, 404
and ``insufficient_quota`` stop the whole run through the shared budget.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from vectorize.errors import ProviderStopError
from vectorize.identity import ModelIdentity
from vectorize.providers.base import STOPPED, EmbeddedBatch, RowProblem
from vectorize.providers.openai_errors import Failure, api_failure
from vectorize.rate_headers import Headers
from vectorize.rate_limits import Grant
from vectorize.secret import Secret
from vectorize.shared_limiter import Budget
from vectorize.summary import RequestStats
from vectorize.tokens import TokenCounter

logger = logging.getLogger(__name__)

TOO_LONG = "too_long"
REJECTED = "rejected_input"
BAD_RESPONSE = "bad_response"
GAVE_UP = "provider_error"


@dataclass(frozen=True)
class RequestPolicy:
    max_inputs: int = 2048
    max_request_tokens: int = 300_000
    max_input_tokens: int = 8192
    long_text: str = "truncate"  # or "error"
    max_attempts: int = 6
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0


class ClientSpec(Protocol):
    """Picklable recipe for an SDK client; the client is built in the process that uses it."""

    where: str  # the endpoint, for messages

    def create(self) -> Any: ...

    @property
    def secret(self) -> Secret | None: ...


class BadResponse(Exception):
    pass


def decode_vectors(response: Any, count: int, dimensions: int) -> tuple[np.ndarray, list[RowProblem | None]]:
    """Vectors in input order from an embeddings response, after checking it."""
    data = list(response.data or [])
    if len(data) != count:
        raise BadResponse(f"{len(data)} vectors came back for {count} inputs")
    indexes = sorted(item.index for item in data)
    if indexes != list(range(count)):
        raise BadResponse(f"the response's indexes are not 0..{count - 1}")
    vectors = np.zeros((count, dimensions), dtype=np.float32)
    problems: list[RowProblem | None] = [None] * count
    for item in data:
        raw = item.embedding
        if isinstance(raw, str):
            values = np.frombuffer(base64.b64decode(raw), dtype="<f4")
        else:
            values = np.asarray(raw, dtype=np.float32)
        if values.shape != (dimensions,):
            problems[item.index] = RowProblem(
                BAD_RESPONSE, f"a vector of {values.size} dimensions came back; the collection has {dimensions}"
            )
        elif not np.isfinite(values).all():
            problems[item.index] = RowProblem(BAD_RESPONSE, "the vector that came back holds NaN or infinity")
        else:
            vectors[item.index] = values
    return vectors, problems


def pack_requests(
    counts: Sequence[int], todo: Sequence[int], policy: RequestPolicy, max_tokens: float
) -> list[list[int]]:
    """Consecutive groups of ``todo`` within the input count and token limits of one request."""
    groups: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i in todo:
        if current and (len(current) >= policy.max_inputs or tokens + counts[i] > max_tokens):
            groups.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += counts[i]
    if current:
        groups.append(current)
    return groups


class RemoteRequests:
    """Sends texts to one endpoint under one budget; ``fallback`` takes requests this one gave up on."""

    def __init__(
        self,
        client_spec: ClientSpec,
        model: str,
        identity: ModelIdentity,
        send_dimensions: bool,
        counter: TokenCounter,
        policy: RequestPolicy,
        budget: Budget,
        request_tokens: int,
        fallback: RemoteRequests | None = None,
    ) -> None:
        self.client_spec = client_spec
        self.model = model
        self.identity = identity
        self.send_dimensions = send_dimensions
        self.counter = counter
        self.policy = policy
        self.budget = budget
        self.request_tokens = min(request_tokens, policy.max_request_tokens)
        self.fallback = fallback
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.client_spec.create()
        return self._client

    async def close(self) -> None:
        """Close the SDK client: it belongs to the event loop that made it."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        if self.fallback is not None:
            await self.fallback.close()

    def _scrub(self, text: str) -> str:
        secret = self.client_spec.secret
        return secret.scrub(text) if secret else text

    async def embed(self, texts: Sequence[str]) -> EmbeddedBatch:
        texts = list(texts)
        counts = self.counter.count(texts) if texts else []
        problems: list[RowProblem | None] = [None] * len(texts)
        truncated = [c > self.policy.max_input_tokens for c in counts]
        sent = list(texts)
        sent_counts = list(counts)
        for i, too_long in enumerate(truncated):
            if not too_long:
                continue
            if self.policy.long_text == "error":
                problems[i] = RowProblem(
                    TOO_LONG, f"{counts[i]} tokens; the model takes {self.policy.max_input_tokens}"
                )
            else:
                sent[i] = self.counter.truncate(texts[i], self.policy.max_input_tokens)
                sent_counts[i] = self.policy.max_input_tokens
        todo = [i for i, text in enumerate(sent) if problems[i] is None and text]
        vectors = np.zeros((len(texts), self.identity.dimensions), dtype=np.float32)
        budget_tokens = await self.budget.request_tokens()
        request_tokens = self.request_tokens if budget_tokens is None else min(self.request_tokens, budget_tokens)
        groups = pack_requests(sent_counts, todo, self.policy, request_tokens)
        results = await asyncio.gather(
            *(self._request(group, sent, sent_counts) for group in groups), return_exceptions=True
        )
        stopped = None
        for group, result in zip(groups, results, strict=True):
            if isinstance(result, ProviderStopError):  # the others' answers are paid for: keep them
                stopped = result
                for i in group:
                    problems[i] = RowProblem(STOPPED, str(result))
                continue
            if isinstance(result, BaseException):
                raise result
            group_vectors, group_problems = result
            for j, i in enumerate(group):
                problems[i] = group_problems[j]
                if group_problems[j] is None:
                    vectors[i] = group_vectors[j]
        return EmbeddedBatch(vectors, counts, truncated, problems, stopped=str(stopped) if stopped else None)

    async def _request(
        self, group: list[int], texts: list[str], counts: list[int]
    ) -> tuple[np.ndarray, list[RowProblem | None]]:
        tokens = sum(counts[i] for i in group)
        last_error = ""
        for attempt in range(self.policy.max_attempts):
            grant = await self.budget.acquire(tokens)
            outcome = await self._send_once(group, texts, grant, retry=attempt > 0)
            if not isinstance(outcome, Failure):
                return outcome
            if outcome.kind == "reject":
                return await self._isolate(group, texts, counts, outcome.message)
            last_error = outcome.message
            if attempt + 1 < self.policy.max_attempts:
                await asyncio.sleep(self._delay(attempt, outcome.retry_after))
        if self.fallback is not None:
            logger.warning("giving %d inputs to the fallback after: %s", len(group), last_error)
            return await self.fallback._request(group, texts, counts)
        problem = RowProblem(GAVE_UP, f"gave up after {self.policy.max_attempts} attempts: {last_error}")
        return np.zeros((len(group), self.identity.dimensions), np.float32), [problem] * len(group)

    async def _isolate(
        self, group: list[int], texts: list[str], counts: list[int], message: str
    ) -> tuple[np.ndarray, list[RowProblem | None]]:
        if len(group) == 1:
            return np.zeros((1, self.identity.dimensions), np.float32), [RowProblem(REJECTED, message)]
        half = len(group) // 2
        left, right = await asyncio.gather(
            self._request(group[:half], texts, counts), self._request(group[half:], texts, counts)
        )
        return np.concatenate([left[0], right[0]]), left[1] + right[1]

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.policy.backoff_max_s, self.policy.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
        return max(backoff, retry_after) if retry_after is not None else backoff

    async def _send_once(
        self, group: list[int], texts: list[str], grant: Grant, *, retry: bool
    ) -> tuple[np.ndarray, list[RowProblem | None]] | Failure:
        """Vectors and problems, or why there are none."""
        import openai

        stats = RequestStats(requests=1, retries=int(retry))
        headers: Headers | None = None
        extra = {"dimensions": self.identity.dimensions} if self.send_dimensions else {}
        try:
            raw = await self.client.embeddings.with_raw_response.create(
                input=[texts[i] for i in group], model=self.model, encoding_format="base64", **extra
            )
            headers = Headers.parse(raw.headers)
            response = raw.parse()
            usage = getattr(response, "usage", None)
            stats.tokens_billed = int(getattr(usage, "prompt_tokens", 0) or 0)
            return decode_vectors(response, len(group), self.identity.dimensions)
        except BadResponse as exc:
            problem = RowProblem(BAD_RESPONSE, str(exc))
            return np.zeros((len(group), self.identity.dimensions), np.float32), [problem] * len(group)
        except Exception as exc:
            if isinstance(exc, openai.APIStatusError):
                headers = Headers.parse(exc.response.headers)
            failure = api_failure(exc, self.client_spec.where, self.model, self._scrub)
            if failure.refusal:
                await self._stop(failure.refusal)
            if failure.status == 429:
                stats.throttled = 1
            return failure
        finally:
            await self.budget.release(grant, headers, stats)

    async def _stop(self, message: str) -> None:
        await self.budget.stop(message)
        raise ProviderStopError(message)
