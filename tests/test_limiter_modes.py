"""The run's budget against servers that count differently, with the real openai SDK: a token
bucket that holds 10 seconds, and fixed 10-second windows (Azure's way) on a server whose token
count is not tiktoken's. Each run spans more than one window; nothing is lost and the server
answers no more than 2% of requests with 429."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.openai_server import RunningServer, ServerState, bytes_per_four, vector_for
from tests.test_openai_provider import Opened, settings
from vectorize.rate_limits import RateLimits
from vectorize.tokens import TiktokenCounter

WORDS = "implementation configuration documentation synchronization"  # one tiktoken token, ~3 byte-quarters each


def texts(count: int) -> list[str]:
    return [f"change {i}: " + " ".join(WORDS.split()[: i % 4 + 1]) * (i % 7 + 2) for i in range(count)]


@pytest.mark.slow
@pytest.mark.parametrize(("limiter", "count", "rows"), [("bucket", "tiktoken", 600), ("windows", "bytes4", 220)])
def test_the_budget_keeps_within_the_servers_limiter_and_nothing_is_lost(limiter, count, rows):
    tpm = 30_000  # 5,000 tokens a 10-second window
    server = RunningServer(ServerState(tpm=tpm, window_s=10.0, limiter=limiter, count=count))
    try:
        sent = texts(rows)
        counted = sum(bytes_per_four(sent) if count == "bytes4" else TiktokenCounter().count(sent))
        assert 1.6 * tpm / 6 < counted < 2.5 * tpm / 6  # more than one window's worth, less than three
        provider = Opened(settings(server, limits=RateLimits(tpm=tpm), max_attempts=6, timeout_s=10.0))
        probed = server.state.tokens_served  # the model check's request
        started = time.monotonic()
        result = provider.embed(sent)
        took = time.monotonic() - started
    finally:
        server.stop()
    assert result.problems == [None] * len(sent)
    for text, vector in zip(sent, result.vectors, strict=True):
        np.testing.assert_allclose(vector, vector_for(text, 1536), atol=1e-6)
    state = server.state
    assert state.tokens_served - probed == counted
    assert state.statuses[429] <= max(1, 0.02 * state.requests), state.statuses
    assert took < 35.0  # within the windows' pace: 10 s a window, not a retry storm
