"""The Batch API's files: texts packed into JSONL request files for ``/v1/embeddings`` within the
documented limits, and the output and error files read back into vectors and row problems.

A request file holds at most 50,000 requests, 50,000 embedding inputs and 200 MB (a margin is
kept under it); a request at most 100 inputs (the API takes 2,048) and 300,000 tokens; and a file, once the
organisation's enqueued-token limit is known, at most the tokens it can queue. An answer becomes
vectors only after the synchronous path's checks (``remote.decode_vectors``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from vectorize.providers.base import RowProblem
from vectorize.providers.remote import BAD_RESPONSE, GAVE_UP, REJECTED, TOO_LONG, BadResponse, decode_vectors
from vectorize.tokens import TokenCounter

LINE_OVERHEAD = 512  # a request line's bytes besides its texts: custom_id, url, model, options


@dataclass(frozen=True)
class FileLimits:
    requests: int = 50_000
    inputs: int = 50_000
    bytes: int = 190 * 2**20
    # the API takes 2,048; fewer keep what one refused or missing request costs small (its texts
    # are sent again, each alone, or are error rows), and a file holds 50,000 requests anyway
    inputs_per_request: int = 100
    tokens_per_request: int = 300_000


@dataclass(frozen=True)
class BatchInput:
    """One distinct text to embed: its hash, the text as sent (cut to the model's window under
    ``--long-text truncate``), its tokens before the cut (the run's figure) and as sent (what
    requests, files and the queue hold)."""

    text_sha256: str
    text: str
    tokens: int
    sent_tokens: int
    truncated: bool = False
    alone: bool = False  # its request holds it alone (a request with it was refused as a whole)


def inputs_as_sent(
    waiting: list[tuple[str, str, int, bool, str | None]],
    counter: TokenCounter,
    max_input_tokens: int,
    long_text: str,
    max_attempts: int,
) -> tuple[list[BatchInput], list[tuple[str, RowProblem]]]:
    """The texts (hash, text, attempts so far, alone, last error) as a batch sends them, and those
    it will not: one past the model's window is cut, or under ``--long-text error`` refused; one
    sent in ``max_attempts`` batches already is given up on."""
    counts = counter.count([text for _, text, *_ in waiting]) if waiting else []
    inputs, refused = [], []
    for (sha, text, attempts, alone, last_error), count in zip(waiting, counts, strict=True):
        if attempts >= max_attempts:
            refused.append((sha, RowProblem(GAVE_UP, f"gave up after {attempts} batches: {last_error}")))
        elif count > max_input_tokens and long_text == "error":
            refused.append((sha, RowProblem(TOO_LONG, f"{count} tokens; the model takes {max_input_tokens}")))
        elif count > max_input_tokens:
            cut = counter.truncate(text, max_input_tokens)
            inputs.append(BatchInput(sha, cut, count, max_input_tokens, True, alone))
        else:
            inputs.append(BatchInput(sha, text, count, count, False, alone))
    return inputs, refused


@dataclass
class RequestFile:
    content: bytearray = field(default_factory=bytearray)
    inputs: list[tuple[str, int, BatchInput]] = field(default_factory=list)  # (custom_id, position, input)
    requests: int = 0
    tokens: int = 0


def request_files(
    inputs: Iterable[BatchInput],
    model: str,
    dimensions: int | None,
    url: str,
    limits: FileLimits = FileLimits(),
    file_tokens: int | None = None,
) -> Iterator[RequestFile]:
    """Request files holding ``inputs`` in order; ``file_tokens``: the most a file may hold
    (an input larger than that goes in a file alone)."""
    current = RequestFile()
    request: list[BatchInput] = []
    request_tokens = request_bytes = 0

    def close_request() -> None:
        nonlocal request, request_tokens, request_bytes
        if request:
            custom_id = f"r{current.requests}"
            current.content += request_line(custom_id, model, dimensions, url, [t.text for t in request])
            current.inputs += [(custom_id, position, item) for position, item in enumerate(request)]
            current.requests += 1
            current.tokens += request_tokens
        request, request_tokens, request_bytes = [], 0, 0

    for item in inputs:
        size = len(json.dumps(item.text).encode()) + 2
        file_full = (
            len(current.inputs) + len(request) + 1 > limits.inputs
            or current.requests + 1 > limits.requests
            or len(current.content) + request_bytes + size + LINE_OVERHEAD > limits.bytes
            or (file_tokens is not None and current.tokens + request_tokens + item.sent_tokens > file_tokens)
        )
        if file_full and (current.inputs or request):
            close_request()
            yield current
            current = RequestFile()
        if request and (
            item.alone
            or request[0].alone
            or len(request) >= limits.inputs_per_request
            or request_tokens + item.sent_tokens > limits.tokens_per_request
        ):
            close_request()
        request.append(item)
        request_tokens += item.sent_tokens
        request_bytes += size
    close_request()
    if current.inputs:
        yield current


def request_line(custom_id: str, model: str, dimensions: int | None, url: str, texts: list[str]) -> bytes:
    """One request of a request file: its texts to ``/v1/embeddings``, vectors back as base64."""
    body: dict = {"model": model, "input": texts, "encoding_format": "base64"}
    if dimensions is not None:
        body["dimensions"] = dimensions
    return (json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body}) + "\n").encode()


@dataclass
class RequestAnswer:
    """What one request of a batch came to: a vector or a problem per input, or ``retry``:
    its inputs go into a later batch (``alone``: each in a request of its own)."""

    vectors: np.ndarray | None = None
    problems: list[RowProblem | None] | None = None
    retry: str | None = None  # why it is sent again
    alone: bool = False
    tokens_billed: int = 0


def read_answers(
    output: bytes | None, errors: bytes | None, requests: dict[str, int], dimensions: int, finished_as: str
) -> dict[str, RequestAnswer]:
    """The answer to each of ``requests`` (custom_id -> its inputs) in a batch's output and
    error files. A request in neither file is an error where the batch completed, and sent again
    where it expired or was cancelled before reaching it."""
    answers: dict[str, RequestAnswer] = {}
    for content in (output, errors):
        for raw in (content or b"").splitlines():
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                custom_id = line["custom_id"]
            except (ValueError, KeyError, TypeError):
                continue  # a line that names no request of ours answers none
            if custom_id in requests:
                answers[custom_id] = _answer(line, requests[custom_id], dimensions)
    for custom_id, count in requests.items():
        if custom_id not in answers:
            if finished_as == "completed":
                problem = RowProblem(BAD_RESPONSE, "the batch completed without an answer for this input")
                answers[custom_id] = RequestAnswer(problems=[problem] * count)
            else:
                answers[custom_id] = RequestAnswer(retry=f"the batch was {finished_as} before this input")
    return answers


def _answer(line: dict, count: int, dimensions: int) -> RequestAnswer:
    response = line.get("response") or {}
    error = line.get("error") or {}
    status = response.get("status_code")
    body = response.get("body") or {}
    if status == 200:
        try:
            vectors, problems = decode_vectors(_as_response(body), count, dimensions)
        except (BadResponse, TypeError, ValueError, KeyError) as exc:
            return RequestAnswer(problems=[RowProblem(BAD_RESPONSE, str(exc))] * count)
        billed = int((body.get("usage") or {}).get("prompt_tokens") or 0)
        return RequestAnswer(vectors, problems, tokens_billed=billed)
    message = (body.get("error") or {}).get("message") or error.get("message") or "no message"
    if status is None:  # not answered: expired or cancelled before it, or the service's own failure
        return RequestAnswer(retry=f"{error.get('code') or 'error'}: {message}")
    if status == 400:
        if count > 1:
            return RequestAnswer(retry=f"400: {message}", alone=True)
        return RequestAnswer(problems=[RowProblem(REJECTED, f"400 from the Batch API: {message}")])
    if status in (408, 409, 429) or status >= 500:
        return RequestAnswer(retry=f"{status}: {message}")
    return RequestAnswer(problems=[RowProblem(GAVE_UP, f"{status} from the Batch API: {message}")] * count)


def _as_response(body: dict) -> SimpleNamespace:
    """An embeddings body as ``decode_vectors`` reads a response: ``data`` items with ``index``
    and ``embedding`` (a list, or base64 little-endian float32)."""
    return SimpleNamespace(
        data=[SimpleNamespace(index=int(d["index"]), embedding=d["embedding"]) for d in body.get("data") or []]
    )
