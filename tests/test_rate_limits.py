"""The run's budget: caps every common limiter accepts, 429s, what answers teach, the in-flight cap."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.openai_server import LIMITERS
from vectorize.errors import ConfigError, ProviderStopError
from vectorize.minute_limit import ARRIVAL_SLACK, FILL, MINUTE, SPAN
from vectorize.rate_headers import Headers
from vectorize.rate_limits import BudgetExhausted, Grant, RateBudget, RateLimits, tier_limits
from vectorize.shared_limiter import Limiter
from vectorize.summary import RequestStats


def test_every_ten_seconds_hold_a_sixth_of_the_minute():
    budget = RateBudget(RateLimits(tpm=6000), now=0.0)
    share = 6000 / 6 * FILL  # 980 tokens
    assert isinstance(budget.reserve(500, now=0.0), Grant)
    assert isinstance(budget.reserve(400, now=1.0), Grant)
    assert budget.reserve(100, now=2.0) == pytest.approx(SPAN + ARRIVAL_SLACK - 2.0)  # 900 + 100 > 980
    assert isinstance(budget.reserve(int(share) - 400, now=SPAN + ARRIVAL_SLACK), Grant)
    assert budget.request_tokens() == int(share / 8)


def test_every_minute_holds_the_minute():
    budget = RateBudget(RateLimits(rpm=12), now=0.0)  # 2 requests each 10 s, 12 a minute
    times = []
    now = 0.0
    while len(times) < 25:
        granted = budget.reserve(1, now)
        if isinstance(granted, Grant):
            times.append(now)
        else:
            now += granted
    assert all(times[i + 2] - times[i] >= SPAN for i in range(len(times) - 2))
    assert all(times[i + 12] - times[i] >= MINUTE for i in range(len(times) - 12))
    assert times[-1] <= 125.0  # 24 requests at 12 a minute: 120 s at the very least


def test_a_request_larger_than_ten_seconds_hold_goes_alone():
    budget = RateBudget(RateLimits(tpm=600), now=0.0)  # 98 tokens each 10 s
    assert isinstance(budget.reserve(250, now=0.0), Grant)
    assert budget.reserve(10, now=1.0) == pytest.approx(SPAN + ARRIVAL_SLACK - 1.0)
    assert budget.reserve(250, now=SPAN) == pytest.approx(ARRIVAL_SLACK)


def test_a_429_pauses_everyone_and_takes_the_limit_as_smaller_until_answers_come_back():
    budget = RateBudget(RateLimits(rpm=600, tpm=60_000), now=0.0)
    budget.pause(3.0, now=1.0)
    assert budget.reserve(1, now=2.0) == pytest.approx(2.0)
    assert isinstance(budget.reserve(1, now=4.0), Grant)
    assert budget.minute["tpm"].span_share == pytest.approx(10_000 * FILL * 0.85)
    for _ in range(100):
        budget.answered()
    assert budget.minute["tpm"].span_share == pytest.approx(10_000 * FILL)


def test_headers_lower_the_limits_and_what_remains():
    budget = RateBudget(RateLimits(tpm=1_000_000), now=0.0)
    first = budget.reserve(1000, now=0.0)
    budget.reserve(500, now=0.0)  # granted after the answered request: the server had not seen it
    headers = Headers.parse(
        {"x-ratelimit-limit-tokens": "60000", "x-ratelimit-remaining-tokens": "3000", "retry-after-ms": "250"}
    )
    budget.learn(headers, first, billed=1000, now=0.0)
    assert budget.minute["tpm"].limit == 60_000
    # 3000 less the 500 the server had not seen; then 1000 tokens a second come back
    assert budget.reserve(2600, now=0.0) == pytest.approx(0.1)
    assert isinstance(budget.reserve(2600, now=0.1), Grant)
    assert headers.retry_after == pytest.approx(0.25)
    budget.learn(Headers.parse({"x-ratelimit-limit-requests": "120"}), first, billed=0, now=0.1)
    assert budget.minute["rpm"].limit == 120
    budget.learn(Headers.parse({"x-ratelimit-remaining-tokens": "-1"}), first, billed=0, now=0.1)  # Azure's "unknown"
    assert budget.reserve(100, now=0.1) == pytest.approx(0.1)  # the -1 changed nothing: all of it was spent


def test_a_server_that_counts_more_tokens_is_learned_from_what_it_bills():
    budget = RateBudget(RateLimits(tpm=60_000), now=0.0)
    for _ in range(30):
        grant = budget.reserve(100, now=0.0)
        budget.learn(None, grant, billed=150, now=0.0)
    assert budget.count_ratio == pytest.approx(1.5)
    silent = RateBudget(RateLimits(tpm=60_000), now=0.0)  # a server that reports no usage
    silent.learn(None, silent.reserve(100, now=0.0), billed=0, now=0.0)
    silent.answered()
    assert not silent.learning and silent.count_ratio == 1.0
    assert budget.request_tokens() == pytest.approx(10_000 * FILL / 8 / 1.5, rel=0.01)


@pytest.mark.parametrize("limiter", sorted(LIMITERS))
@pytest.mark.parametrize("tpm", [6_000, 200_000])
def test_no_limiter_refuses_more_than_2_percent_and_the_rate_stays_near_the_limit(limiter, tpm):
    """The budget against each server limiter, in simulated time: requests of mixed sizes up to
    three times what the budget asks for, each reaching the server up to 0.15 s after its grant,
    and what the server answers (what it has left, a 429) taught back."""
    rng = random.Random(tpm)
    budget = RateBudget(RateLimits(rpm=600, tpm=tpm), now=0.0)
    server = LIMITERS[limiter](tpm, 60.0, 0.0)
    offset = rng.uniform(0, 10)  # where the server's windows fall
    now, sent, refused, requests = 0.0, 0, 0, 0
    size = budget.request_tokens()
    while sent < 8 * tpm:
        tokens = size * 3 if rng.random() < 0.01 else rng.randint(size // 4, size)
        granted = budget.reserve(tokens, now)
        if not isinstance(granted, Grant):
            now += granted
            continue
        arrival = now + offset + rng.uniform(0.0, 0.15)
        requests += 1
        wait = server.wait(tokens, arrival)
        if wait > 0:  # a 429 with Retry-After
            refused += 1
            budget.pause(wait, now)
            continue
        server.take(tokens, arrival)
        sent += tokens
        said = {"x-ratelimit-remaining-tokens": str(int(server.remaining(arrival))),
                "x-ratelimit-reset-tokens": f"{server.reset_s(arrival):.3f}s"}  # fmt: skip
        answered = arrival - offset  # the answer leaves when the request arrives (no latency)
        budget.learn(Headers.parse(said), granted, billed=tokens, now=answered)
        now += rng.uniform(0.0, 0.05)
    assert refused <= 0.02 * requests
    assert sent / tpm * 60 / now >= 0.9
    tokens = budget.minute["tpm"]
    assert tokens.ten_second_windows == (limiter == "windows")
    assert (tokens.windows is not None) == (limiter == "windows")  # their edges learned from the resets
    assert tokens.minute_log == (limiter == "sliding")
    assert all(len(cap.grants) < requests / 4 for cap in budget.minute["tpm"].caps)  # unused caps forget too


@pytest.mark.parametrize("limiter", ["bucket", "windows"])
@pytest.mark.parametrize("factor", [3.0, 0.5])
def test_a_server_that_bills_nothing_teaches_its_count_by_what_it_has_left(limiter, factor):
    """It counts ``factor`` times this run's tokens and says only what it has left."""
    rng = random.Random(7)
    budget = RateBudget(RateLimits(rpm=600, tpm=20_000), now=0.0)
    server = LIMITERS[limiter](20_000, 60.0, 0.0)
    now, sent, size = 0.0, 0.0, budget.request_tokens()
    while sent < 6 * 20_000:
        tokens = rng.randint(size // 4, size)
        granted = budget.reserve(tokens, now)
        if not isinstance(granted, Grant):
            now += granted
            continue
        arrival = now + rng.uniform(0.0, 0.15)
        if server.wait(tokens * factor, arrival) > 0:
            budget.pause(server.wait(tokens * factor, arrival), now)
            continue
        server.take(tokens * factor, arrival)
        sent += tokens * factor
        said = {"x-ratelimit-remaining-tokens": str(int(server.remaining(arrival))),
                "x-ratelimit-reset-tokens": f"{server.reset_s(arrival):.3f}s"}  # fmt: skip
        budget.learn(Headers.parse(said), granted, billed=0, now=arrival)
        budget.answered()
        now += rng.uniform(0.0, 0.05)
    assert budget.count_ratio == pytest.approx(factor, rel=0.1)


def test_a_server_that_holds_a_whole_minute_is_taken_for_a_bucket_until_a_429():
    budget = RateBudget(RateLimits(tpm=60_000), now=0.0)
    first = budget.reserve(1000, now=0.0)
    budget.learn(Headers.parse({"x-ratelimit-remaining-tokens": "59000"}), first, billed=1000, now=0.1)
    assert not budget.minute["tpm"].ten_second_windows
    assert isinstance(budget.reserve(50_000, now=0.1), Grant)  # more than 10 seconds' share
    assert isinstance(budget.reserve(9000, now=0.1), Grant)  # all it said it had
    assert budget.reserve(2000, now=0.1) == pytest.approx(2.0)  # then its refill, 1000 tokens a second
    budget.pause(5.0, now=1.0)  # a 429: it keeps a log of the minute after all
    assert budget.reserve(2000, now=6.0) == pytest.approx(MINUTE + ARRIVAL_SLACK - 6.0, abs=0.2)
    windows = RateBudget(RateLimits(tpm=60_000), now=0.0)
    grant = windows.reserve(1000, now=0.0)
    windows.learn(Headers.parse({"x-ratelimit-remaining-tokens": "9000"}), grant, billed=1000, now=0.1)
    assert windows.minute["tpm"].ten_second_windows


def test_fixed_windows_are_learned_from_their_resets_and_each_is_filled():
    budget = RateBudget(RateLimits(tpm=6000), now=0.0)
    share = 6000 / 6 * FILL
    learned_windows(budget)
    tokens = budget.minute["tpm"]
    assert tokens.windows is not None and tokens.windows.edge % SPAN == pytest.approx(7.0, abs=0.02)
    assert not tokens.minute_log  # windows, not a log of the minute
    assert isinstance(budget.reserve(int(share) - 300, now=8.0), Grant)  # the window from 7 to 17 filled
    assert budget.reserve(150, now=8.0) == pytest.approx(9.0, abs=0.05)  # then wait for its edge
    assert isinstance(budget.reserve(int(share) - 300, now=17.01), Grant)  # the next window whole at once


def learned_windows(budget: RateBudget) -> None:
    """Four answers of a server whose 1,000-token windows end at 7, 17, 27 ... seconds."""
    for at, left in ((0.5, 800), (2.0, 600), (4.0, 400), (7.5, 800)):
        grant = budget.reserve(200, now=at)
        edge = 7.0 if at < 7.0 else 17.0
        said = {"x-ratelimit-remaining-tokens": str(left), "x-ratelimit-reset-tokens": f"{edge - at - 0.01:.3f}s"}
        budget.learn(Headers.parse(said), grant, billed=200, now=at + 0.01)
        budget.answered()


def test_while_the_first_waits_for_a_windows_edge_a_later_request_that_fits_takes_what_is_left():
    async def scenario() -> tuple[bool, bool]:
        limiter = Limiter(RateLimits(tpm=6000), max_in_flight=8, clock=lambda: 8.0)
        learned_windows(limiter.budget)  # 200 of the window from 7 to 17 used
        first = asyncio.ensure_future(limiter.acquire(900))  # does not fit before 17
        await asyncio.sleep(0.05)
        later = await asyncio.wait_for(limiter.acquire(300), 2.0)  # fits now
        waiting = not first.done()
        first.cancel()
        return isinstance(later, Grant), waiting

    assert asyncio.run(scenario()) == (True, True)


def test_a_request_cancelled_while_it_waits_leaves_the_limiter_free():
    async def scenario() -> Grant:
        limiter = Limiter(RateLimits(), max_in_flight=1)
        first = await limiter.acquire(10)
        waiting = asyncio.ensure_future(limiter.acquire(10))  # for the turn: the slot is taken
        queued = asyncio.ensure_future(limiter.acquire(10))  # behind it
        await asyncio.sleep(0.05)
        queued.cancel()  # a caller gone (a client that hung up)
        await asyncio.sleep(0.05)
        await limiter.release(first, Headers(), RequestStats(requests=1))
        second = await asyncio.wait_for(waiting, 2.0)
        await limiter.release(second, Headers(), RequestStats(requests=1))
        return await asyncio.wait_for(limiter.acquire(10), 2.0)

    assert isinstance(asyncio.run(scenario()), Grant)


def test_a_bucket_or_a_log_is_not_taken_for_windows():
    budget = RateBudget(RateLimits(tpm=6000), now=0.0)
    for i in range(12):  # "whole again" moves on as tokens are granted
        at = i * 1.5
        grant = budget.reserve(100, now=at)
        said = {"x-ratelimit-remaining-tokens": "300", "x-ratelimit-reset-tokens": f"{(i + 1) * 1.0 + 5.0 - at:.3f}s"}
        budget.learn(Headers.parse(said), grant, billed=100, now=at)
    assert budget.minute["tpm"].windows is None


@pytest.mark.parametrize(("said", "seconds"), [("1.5s", 1.5), ("6m0s", 360.0), ("20ms", 0.02), ("2", 2.0),
                                               ("1h2m3s", 3723.0), ("soon", None)])  # fmt: skip
def test_reset_durations(said, seconds):
    assert Headers.parse({"x-ratelimit-reset-tokens": said}).reset_tokens == seconds


def test_a_used_up_daily_cap_stops_the_run():
    budget = RateBudget(RateLimits(tpd=1000), now=0.0)
    assert isinstance(budget.reserve(900, now=0.0), Grant)
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
            grant = await limiter.acquire(10)
            peak = max(peak, limiter.in_flight)
            await asyncio.sleep(0.01)
            await limiter.release(grant, Headers(), RequestStats(requests=1, tokens_billed=10))

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
