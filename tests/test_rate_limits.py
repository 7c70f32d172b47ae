"""The run's budget: token buckets, 429 pauses, what headers teach, and the in-flight cap."""

from __future__ import annotations

import asyncio

import pytest

from vectorize.errors import ConfigError, ProviderStopError
from vectorize.rate_limits import BURST_SECONDS, BudgetExhausted, Headers, RateBudget, RateLimits, tier_limits
from vectorize.shared_limiter import Limiter
from vectorize.summary import RequestStats


def test_minute_buckets_hold_a_burst_and_refill_at_the_rate():
    budget = RateBudget(RateLimits(rpm=60, tpm=6000), now=0.0)
    burst_tokens = 6000 * BURST_SECONDS / 60  # 1000
    assert budget.reserve(600, now=0.0) == 0
    wait = budget.reserve(600, now=0.0)  # 400 left, 200 missing at 100 tokens/s
    assert wait == pytest.approx(2.0)
    assert budget.reserve(600, now=2.0) == 0
    assert budget.buckets["tpm"].capacity == burst_tokens


def test_a_request_larger_than_the_bucket_goes_when_it_is_full_and_leaves_a_debt():
    budget = RateBudget(RateLimits(tpm=600), now=0.0)  # holds 100 tokens
    assert budget.reserve(250, now=0.0) == 0
    assert budget.reserve(10, now=0.0) == pytest.approx((10 + 150) / 10)


def test_a_429_pauses_everyone_and_empties_the_minute_buckets():
    budget = RateBudget(RateLimits(rpm=600, tpm=60_000), now=0.0)
    budget.pause(3.0, now=1.0)
    assert budget.reserve(1, now=2.0) == pytest.approx(2.0)
    assert budget.reserve(1, now=4.0) == 0  # refilled 1 s of budget since the pause


def test_headers_lower_the_limits_and_the_remaining_budget():
    budget = RateBudget(RateLimits(tpm=1_000_000), now=0.0)
    ticket = budget.ticket()
    budget.reserve(1000, now=0.0)
    budget.reserve(500, now=0.0)  # granted after the answered request: the server had not seen it
    headers = Headers.parse(
        {"x-ratelimit-limit-tokens": "60000", "x-ratelimit-remaining-tokens": "3000", "retry-after-ms": "250"}
    )
    budget.learn(headers, (ticket[0] + 1, ticket[1] + 1000), now=0.0)
    assert budget.buckets["tpm"].rate == 60_000
    assert budget.buckets["tpm"].level == pytest.approx(2500)
    assert headers.retry_after == pytest.approx(0.25)
    budget.learn(Headers.parse({"x-ratelimit-limit-requests": "120"}), budget.ticket(), now=0.0)
    assert budget.buckets["rpm"].rate == 120


def test_a_server_that_holds_more_than_the_burst_is_believed_until_that_is_spent():
    budget = RateBudget(RateLimits(tpm=60_000), now=0.0)  # its own burst: 10,000 tokens
    ticket = budget.ticket()
    budget.reserve(1000, now=0.0)
    budget.learn(Headers.parse({"x-ratelimit-remaining-tokens": "59000"}), budget.ticket(), now=0.0)
    assert budget.reserve(50_000, now=0.1) == 0
    assert budget.buckets["tpm"].level == pytest.approx(9000)
    budget.learn(Headers.parse({"x-ratelimit-remaining-tokens": "-1"}), ticket, now=0.1)  # Azure's "unknown"
    assert budget.buckets["tpm"].level == pytest.approx(9000)


def test_a_used_up_daily_cap_stops_the_run():
    budget = RateBudget(RateLimits(tpd=1000), now=0.0)
    assert budget.reserve(900, now=0.0) == 0
    with pytest.raises(BudgetExhausted, match="per-day cap --tpd 1000"):
        budget.reserve(900, now=1.0)


def test_tiers_and_explicit_limits():
    assert tier_limits("tier1").merged(RateLimits(tpm=5000)) == RateLimits(rpm=3000, tpm=5000)
    with pytest.raises(ConfigError, match="--rate-tier"):
        tier_limits("tier9")


def test_limiter_keeps_at_most_max_in_flight_and_stops_waiters():
    async def scenario() -> tuple[int, str]:
        limiter = Limiter(RateLimits(), max_in_flight=3)
        peak = 0

        async def request() -> None:
            nonlocal peak
            ticket = await limiter.acquire(10)
            peak = max(peak, limiter.in_flight)
            await asyncio.sleep(0.01)
            await limiter.release(ticket, None, RequestStats(requests=1, tokens_billed=10))

        await asyncio.gather(*(request() for _ in range(20)))
        assert limiter.stats.requests == 20 and limiter.stats.tokens_billed == 200
        await limiter.stop("the key was refused")
        try:
            await limiter.acquire(1)
        except ProviderStopError as exc:
            return peak, str(exc)
        return peak, ""

    peak, stopped = asyncio.run(scenario())
    assert peak == 3
    assert stopped == "the key was refused"
