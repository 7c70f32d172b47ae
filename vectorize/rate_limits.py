"""Request and token budgets for a run: the limits given or published (the tiers), per-day
buckets, per-minute limits (``vectorize.minute_limit``), and what a server's answers teach
(``vectorize.rate_headers``): a lower limit, what it has left, how it counts tokens.

Pure logic with the clock passed in; ``vectorize.shared_limiter`` puts one of these behind a
Ray actor so that every embedding actor of a run draws from the same budget.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from vectorize.errors import ConfigError
from vectorize.minute_limit import FILL, MINUTE, MinuteLimit, TokenBucket
from vectorize.rate_headers import Headers

logger = logging.getLogger(__name__)

DAY = 86_400.0
REQUESTS_PER_SPAN = 8
FELL_EVIDENCE = 500  # tokens of this run's count behind a ratio learned from "remaining" alone


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


class BudgetExhausted(Exception):
    """A per-day cap cannot grant a request for longer than a run should wait."""


@dataclass(frozen=True)
class Grant:
    """One granted request: the run's totals granted with it (what a server that answers it
    has seen), and its tokens as this run counts them."""

    requests: int
    tokens: float
    counted: int
    counted_total: int = 0  # the run's tokens granted so far, as this run counts them


class RateBudget:
    """Requests and tokens for a whole run. ``reserve`` grants a request now or says how long
    to wait; ``learn`` tightens the budget from what the server answered."""

    def __init__(self, limits: RateLimits, now: float) -> None:
        self.limits = limits
        self.paused_until = 0.0
        # running totals, to tell what a server's "remaining" had not seen yet when it answered
        self.granted_requests = 0
        self.granted_tokens = 0.0
        self.billed = 0  # tokens the server counted in its answers, and this run's count of the same
        self.counted = 0
        self.granted_counted = 0
        # a server that bills nothing: what its "remaining" fell by, and this run's count of the same
        self.fell_by = 0.0
        self.fell_counted = 0
        self._said: tuple[float, int, float] | None = None  # its last "remaining", what it had seen, when
        self._most_said = 0.0
        self.answers = 0
        self.minute: dict[str, MinuteLimit] = {}
        self.day: dict[str, TokenBucket] = {}
        for name, value in (("rpm", limits.rpm), ("tpm", limits.tpm), ("rpd", limits.rpd), ("tpd", limits.tpd)):
            if value is None:
                continue
            if value < 1:
                raise ConfigError(f"--{name} must be at least 1")
            if name in ("rpm", "tpm"):
                self.minute[name] = MinuteLimit(value, _fill(name))
            else:
                self.day[name] = TokenBucket(value, DAY, value, now)

    @property
    def count_ratio(self) -> float:
        """The server's token count over this run's, from what its answers billed; where they
        bill nothing, from what its "remaining" fell by (``_learn_from_remaining``)."""
        if self.counted:
            return min(4.0, max(0.25, self.billed / self.counted))
        if self.fell_counted >= FELL_EVIDENCE:
            return min(4.0, max(0.25, self.fell_by / self.fell_counted))
        return 1.0

    @property
    def learning(self) -> bool:
        """No answer has come back yet to say how the server counts (a server that bills
        nothing says so by answering)."""
        return self.answers == 0

    def request_tokens(self) -> int | None:
        """The most tokens (as this run counts them) one request should carry: an eighth of what
        10 seconds may hold. Small requests fill each window closely where large ones leave a
        gap too small for the next. None: no token limit known."""
        tpm = self.minute.get("tpm")
        return None if tpm is None else max(1, int(tpm.span_share / REQUESTS_PER_SPAN / self.count_ratio))

    def reserve(self, tokens: int, now: float, max_wait: float = 300.0) -> Grant | float:
        """Take one request of ``tokens`` and return its grant, or return the seconds to wait."""
        if now < self.paused_until:
            return self.paused_until - now
        cost = tokens * self.count_ratio
        need = {"rpm": 1, "rpd": 1, "tpm": cost, "tpd": cost}
        wait = max((limit.wait_for(need[name], now) for name, limit in self.minute.items()), default=0.0)
        for name, bucket in self.day.items():
            wait_here = bucket.wait_for(min(need[name], bucket.capacity), now)
            if wait_here > max_wait:
                limit = getattr(self.limits, name)
                raise BudgetExhausted(
                    f"the per-day cap --{name} {limit} is used up for the next {wait_here / 3600:.1f} h; "
                    "the rows not stored yet are embedded when the same command runs again"
                )
            wait = max(wait, wait_here)
        if wait > 0:
            return wait
        for name, limit in self.minute.items():
            limit.take(need[name], now)
        for name, bucket in self.day.items():
            bucket.take(need[name])
        self.granted_requests += 1
        self.granted_tokens += cost
        self.granted_counted += tokens
        return Grant(self.granted_requests, self.granted_tokens, tokens, self.granted_counted)

    def fills_windows(self, now: float) -> bool:
        """The server counts tokens in fixed windows whose edges are known, and ``now`` is not
        near the edge: what a request waiting for the next window leaves of this one may go to
        a smaller one (near the edge it would count in the next window too, and hold the first
        back again)."""
        tokens = self.minute.get("tpm")
        if tokens is None or tokens.windows is None or not tokens.ten_second_windows:
            return False
        return len(tokens.windows.windows_of(now)) == 1

    def pause(self, seconds: float, now: float) -> None:
        """The server answered 429: nobody sends until it said, and the minute limits are taken
        as smaller (it counts differently, or over windows shorter than 10 seconds)."""
        self.paused_until = max(self.paused_until, now + seconds)
        for limit in self.minute.values():
            limit.throttled()

    def answered(self) -> None:
        """The server answered, not with a 429: a limit taken as smaller after one grows back a little."""
        self.answers += 1
        for limit in self.minute.values():
            limit.answered()

    def learn(self, headers: Headers | None, grant: Grant, billed: int, now: float) -> None:
        """Adopt a lower limit than configured; believe what the server says it has left (its
        "remaining" less what was granted after this request, which it had not seen); learn how
        the server counts tokens from what it billed."""
        if billed > 0 and grant.counted > 0:
            self.billed += billed
            self.counted += grant.counted
        if headers is None:
            return
        for name, limit in (("rpm", headers.limit_requests), ("tpm", headers.limit_tokens)):
            if limit is None or limit <= 0:
                continue
            known = self.minute.get(name)
            if known is None or limit < known.limit:
                logger.info("the server's %s limit is %d; using it", name, limit)
                if known is None:
                    self.minute[name] = MinuteLimit(limit, _fill(name))
                else:
                    known.lower(limit)
        for name, remaining, unseen in (
            ("rpm", headers.remaining_requests, self.granted_requests - grant.requests),
            ("tpm", headers.remaining_tokens, self.granted_tokens - grant.tokens),
        ):
            limit = self.minute.get(name)
            if remaining is None or remaining < 0 or limit is None:  # Azure may say -1
                continue
            limit.server_says(remaining, unseen, now)
        tokens = self.minute.get("tpm")
        if tokens is not None and headers.reset_tokens is not None:
            tokens.window_ends_in(headers.reset_tokens, grant.tokens, now)
        if billed == 0 and tokens is not None and headers.remaining_tokens is not None:
            self._learn_from_remaining(tokens, headers.remaining_tokens, grant, now)

    def _learn_from_remaining(self, tokens: MinuteLimit, remaining: int, grant: Grant, now: float) -> None:
        """Between two answers, a server's "remaining" falls by its count of the tokens granted
        in between, less what came back to it: nothing within one of its fixed windows, the
        limit's rate for a bucket. A log of the minute gives back what it granted a minute ago,
        unknown here: it teaches nothing."""
        said, self._said = self._said, (float(remaining), grant.counted_total, now)
        self._most_said = max(self._most_said, float(remaining))
        if said is None or remaining < 0:
            return
        before, counted_before, at = said
        counted = grant.counted_total - counted_before
        if counted <= 0:  # answered out of order: the later grant's answer stays the mark
            self._said = said
            return
        windows = tokens.windows
        if windows is not None and tokens.ten_second_windows:
            if windows.windows_of(at) != windows.windows_of(now) or len(windows.windows_of(now)) != 1:
                return
            back = 0.0
        elif not tokens.ten_second_windows and not tokens.minute_log:
            back = (now - at) * tokens.limit / MINUTE
            if before + back > self._most_said:  # a full bucket takes no refill
                return
        else:
            return
        fell = before - remaining + back
        if fell > 0:
            self.fell_by += fell
            self.fell_counted += counted


def _fill(name: str) -> float:
    """Requests are counted alike everywhere; tokens may not be."""
    return FILL if name == "tpm" else 1.0
