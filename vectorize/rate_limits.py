"""Request and token budgets: per-minute and per-day token buckets, the published tiers, and
what a server's rate-limit headers teach.

Pure logic with the clock passed in; ``vectorize.shared_limiter`` puts one of these behind a
Ray actor so that every embedding actor of a run draws from the same budget.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from vectorize.errors import ConfigError

logger = logging.getLogger(__name__)

MINUTE = 60.0
DAY = 86_400.0
# Per-minute buckets hold this many seconds of budget: a run starts smoothly instead of
# spending a whole minute's allowance in its first second.
BURST_SECONDS = 10.0


@dataclass(frozen=True)
class RateLimits:
    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    tpd: int | None = None

    def merged(self, override: RateLimits) -> RateLimits:
        """These limits with every limit that ``override`` sets replacing its own."""
        return replace(self, **{k: v for k, v in vars(override).items() if v is not None})


# OpenAI's published limits for its embedding models, by usage tier.
RATE_TIERS: dict[str, RateLimits] = {
    "free": RateLimits(rpm=100, tpm=40_000, rpd=2_000),
    "tier1": RateLimits(rpm=3_000, tpm=1_000_000),
    "tier2": RateLimits(rpm=5_000, tpm=1_000_000),
    "tier3": RateLimits(rpm=5_000, tpm=5_000_000),
    "tier4": RateLimits(rpm=10_000, tpm=5_000_000),
    "tier5": RateLimits(rpm=10_000, tpm=10_000_000),
}


def tier_limits(tier: str | None) -> RateLimits:
    if tier is None:
        return RateLimits()
    try:
        return RATE_TIERS[tier]
    except KeyError:
        raise ConfigError(f"--rate-tier {tier!r}: choose one of {', '.join(RATE_TIERS)}") from None


class TokenBucket:
    """``rate`` units per ``period`` seconds, holding at most ``capacity``; starts full."""

    def __init__(self, rate: float, period: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.period = period
        self.capacity = capacity
        self.level = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        """Add what accrued since the last look, up to the capacity (a level above it, taken
        from what the server said remains, is kept until it is spent)."""
        if now > self.updated:
            filled = min(self.capacity, self.level + (now - self.updated) * self.rate / self.period)
            self.level = max(self.level, filled)
            self.updated = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` is available (0 when it is now)."""
        self.refill(now)
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing * self.period / self.rate

    def take(self, amount: float) -> None:
        self.level -= amount

    def clamp(self, level: float) -> None:
        self.level = min(self.level, level)


class BudgetExhausted(Exception):
    """A per-day cap cannot grant a request for longer than a run should wait."""


@dataclass
class Headers:
    """What a response said about the budget; ``None`` where it said nothing."""

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    retry_after: float | None = None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> Headers:
        lower = {k.lower(): v for k, v in headers.items()}

        def number(name: str) -> int | None:
            try:
                return int(float(lower[name]))
            except (KeyError, ValueError):
                return None

        retry_after = None
        if "retry-after-ms" in lower:
            retry_after = _seconds(lower["retry-after-ms"], scale=0.001)
        elif "retry-after" in lower:
            retry_after = _seconds(lower["retry-after"], scale=1.0)
        return cls(
            limit_requests=number("x-ratelimit-limit-requests"),
            limit_tokens=number("x-ratelimit-limit-tokens"),
            remaining_requests=number("x-ratelimit-remaining-requests"),
            remaining_tokens=number("x-ratelimit-remaining-tokens"),
            retry_after=retry_after,
        )


def _seconds(value: str, scale: float) -> float | None:
    try:
        return max(0.0, float(value) * scale)
    except ValueError:
        return None


class RateBudget:
    """Requests and tokens for a whole run. ``reserve`` grants a request now or says how long
    to wait; ``learn`` tightens the budget from what the server reported."""

    def __init__(self, limits: RateLimits, now: float) -> None:
        self.limits = limits
        self.paused_until = 0.0
        # running totals, to tell what a server's "remaining" had not seen yet when it answered
        self.granted_requests = 0
        self.granted_tokens = 0
        self.buckets: dict[str, TokenBucket] = {}
        for name, value, period in (
            ("rpm", limits.rpm, MINUTE),
            ("tpm", limits.tpm, MINUTE),
            ("rpd", limits.rpd, DAY),
            ("tpd", limits.tpd, DAY),
        ):
            if value is None:
                continue
            if value < 1:
                raise ConfigError(f"--{name} must be at least 1")
            capacity = value if period == DAY else max(1.0, value * BURST_SECONDS / MINUTE)
            self.buckets[name] = TokenBucket(value, period, capacity, now)

    def reserve(self, tokens: int, now: float, max_wait: float = 300.0) -> float:
        """Take one request and ``tokens`` and return 0, or return the seconds to wait first.

        A request larger than a bucket holds goes once the bucket is full and leaves it in
        debt, which later requests wait out."""
        if now < self.paused_until:
            return self.paused_until - now
        need = {"rpm": 1, "rpd": 1, "tpm": tokens, "tpd": tokens}
        wait = 0.0
        for name, bucket in self.buckets.items():
            wait_here = bucket.wait_for(min(need[name], bucket.capacity), now)
            if name in ("rpd", "tpd") and wait_here > max_wait:
                limit = getattr(self.limits, name)
                raise BudgetExhausted(
                    f"the per-day cap --{name} {limit} is used up for the next {wait_here / 3600:.1f} h; "
                    "the rows not stored yet are embedded when the same command runs again"
                )
            wait = max(wait, wait_here)
        if wait > 0:
            return wait
        for name, bucket in self.buckets.items():
            bucket.take(need[name])
        self.granted_requests += 1
        self.granted_tokens += tokens
        return 0.0

    def ticket(self) -> tuple[int, int]:
        """Requests and tokens granted so far; given back to ``learn`` with a response's headers."""
        return self.granted_requests, self.granted_tokens

    def pause(self, seconds: float, now: float) -> None:
        """The server said wait: nobody sends until then, and the minute buckets start empty."""
        self.paused_until = max(self.paused_until, now + seconds)
        for name in ("rpm", "tpm"):
            if name in self.buckets:
                self.buckets[name].clamp(0.0)

    def learn(self, headers: Headers, ticket: tuple[int, int], now: float) -> None:
        """Adopt a lower limit than configured, and believe the server about what remains: its
        "remaining" less what was granted after that request (which it had not seen). That
        lowers the budget when others share the account, and raises it when the server holds
        more than this run's own burst."""
        for name, limit in (("rpm", headers.limit_requests), ("tpm", headers.limit_tokens)):
            if limit is None or limit <= 0:
                continue
            bucket = self.buckets.get(name)
            if bucket is None or limit < bucket.rate:
                logger.info("the server's %s limit is %d; using it", name, limit)
                capacity = max(1.0, limit * BURST_SECONDS / MINUTE)
                if bucket is None:
                    self.buckets[name] = TokenBucket(limit, MINUTE, capacity, now)
                else:
                    bucket.rate, bucket.capacity = limit, capacity
                    bucket.clamp(capacity)
        unseen_requests = self.granted_requests - ticket[0]
        unseen_tokens = self.granted_tokens - ticket[1]
        for name, remaining, unseen in (
            ("rpm", headers.remaining_requests, unseen_requests),
            ("tpm", headers.remaining_tokens, unseen_tokens),
        ):
            if remaining is not None and remaining >= 0 and name in self.buckets:  # Azure may say -1
                self.buckets[name].refill(now)
                self.buckets[name].level = remaining - unseen
