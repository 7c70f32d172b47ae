"""Request and token budgets: per-minute caps that every common limiter accepts, per-day
buckets, the published tiers, and what a server's answers teach.

Servers count a minute's budget in different ways: a token bucket that refills continuously,
a log of the last 60 seconds, or fixed 10-second windows that each hold a sixth of it (Azure).
A run that keeps every 10 seconds within a sixth of the minute, and every 60 seconds within
the minute, is accepted by all three, at the full rate. A request larger than that sixth (one
long input) goes alone, once nothing else was sent in the last 10 seconds. A server that says
it has more left than a 10-second window would hold is taken for a bucket: what it says it has
is spent at once and its refill as it comes, until a 429 shows it keeps a log of the minute,
which brings the minute's cap back.

Pure logic with the clock passed in; ``vectorize.shared_limiter`` puts one of these behind a
Ray actor so that every embedding actor of a run draws from the same budget.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace

from vectorize.errors import ConfigError

logger = logging.getLogger(__name__)

MINUTE = 60.0
DAY = 86_400.0
SPAN = 10.0  # the shortest window a common limiter counts over; it holds a sixth of the minute
# A grant counts this much longer than its window: the request reaches the server a little later.
ARRIVAL_SLACK = 0.2
FILL = 0.98  # of each window's tokens that are used: room for a server that counts a few more
THROTTLED_SCALE = 0.85  # a 429 despite all that: the limit taken as this much smaller ...
MIN_SCALE = 0.3  # ... down to this share of it
RECOVERY = 0.005  # and given back this much with each answer that was not a 429
REQUESTS_PER_SPAN = 8
WINDOWS_RULED_OUT = 1.5  # a server that says it has this many times 10 seconds' share left
EDGE_ANSWERS = 4  # answers naming edges 10 seconds apart (two windows of them at least) that show fixed windows
EDGE_AGREEMENT = 0.3  # seconds those edges may differ by: the answers' time on the way back
# ... while between them at least this many seconds' worth of tokens were granted: a bucket's
# or a log's "whole again" moves on by that much, a fixed window's edge does not
EDGE_EVIDENCE_S = 1.0
EDGE_SLACK = 0.5  # seconds a grant may take to reach the server, and the edge be learned late


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

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` is available (0 when it is now)."""
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate / self.period)
            self.updated = now
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing * self.period / self.rate

    def take(self, amount: float) -> None:
        self.level -= amount


class SlidingCap:
    """At most ``share`` units granted within any ``seconds``; a grant larger than the share
    goes alone, when the window holds nothing."""

    def __init__(self, seconds: float, share: float) -> None:
        self.seconds = seconds + ARRIVAL_SLACK
        self.share = share
        self.grants: deque[tuple[float, float]] = deque()
        self.used = 0.0

    def _expire(self, now: float) -> None:
        while self.grants and self.grants[0][0] + self.seconds <= now:
            self.used -= self.grants.popleft()[1]
        if not self.grants:
            self.used = 0.0

    def wait_for(self, amount: float, now: float) -> float:
        self._expire(now)
        if not self.grants or self.used + amount <= self.share:
            return 0.0
        left = self.used
        for at, granted in self.grants:  # the oldest leave first
            left -= granted
            if left + amount <= self.share or left <= 1e-9:
                return at + self.seconds - now
        return self.grants[-1][0] + self.seconds - now

    def take(self, amount: float, now: float) -> None:
        self._expire(now)  # a cap not consulted (the server is not of its kind) still forgets
        self.grants.append((now, amount))
        self.used += amount


class FixedWindows:
    """At most ``share`` units in each of a server's fixed windows of ``seconds`` (one ends at
    ``edge``): a grant counts in every window its request may arrive in (within
    ``EDGE_SLACK``: its way there, and the way back of the answers the edge was learned from);
    one larger than the share goes alone, in an empty window."""

    def __init__(self, seconds: float, share: float, edge: float) -> None:
        self.seconds = seconds
        self.share = share
        self.edge = edge
        self.used: dict[int, float] = {}

    def windows_of(self, now: float) -> set[int]:
        """The windows a request granted ``now`` may arrive in."""
        return {math.floor((t - self.edge) / self.seconds) for t in (now, now + EDGE_SLACK)}

    def wait_for(self, amount: float, now: float) -> float:
        for window in sorted(self.windows_of(now)):
            used = self.used.get(window, 0.0)
            if used > 0 and used + amount > self.share:
                return max(1e-3, self.edge + (window + 1) * self.seconds - now)
        return 0.0

    def take(self, amount: float, now: float) -> None:
        windows = self.windows_of(now)
        for window in windows:
            self.used[window] = self.used.get(window, 0.0) + amount
        for old in [w for w in self.used if w < min(windows)]:
            del self.used[old]


class MinuteLimit:
    """``limit`` units a minute, as caps on every 10 and every 60 seconds (module docstring);
    ``fill``: the share of them used."""

    def __init__(self, limit: float, fill: float = 1.0) -> None:
        self.limit = limit
        self.fill = fill
        self.scale = 1.0
        self.caps = (SlidingCap(SPAN, 0.0), SlidingCap(MINUTE, 0.0))
        self.server_left: float | None = None  # what the server last said it had left, less grants since
        self.server_at = 0.0
        self.ten_second_windows = True  # until the server says it holds more than 10 seconds' share
        self.minute_log = True  # until then too; again after a 429 (the server keeps a log of the minute)
        self.windows: FixedWindows | None = None  # the server's own 10-second windows, once its resets show them
        # where its answers say its budget is whole again, and the units they had seen
        self._edges: deque[tuple[float, float]] = deque(maxlen=EDGE_ANSWERS)
        self._share()

    def _share(self) -> None:
        for cap in self.caps:
            cap.share = self.limit * self.scale * self.fill * (cap.seconds - ARRIVAL_SLACK) / MINUTE
        if self.windows is not None:
            self.windows.share = self.limit * self.scale * self.fill * SPAN / MINUTE

    def lower(self, limit: float) -> None:
        self.limit = limit
        self._share()

    def throttled(self) -> None:
        if self.windows is not None:  # not the windows it seemed: learned again from later answers
            self.windows = None
            self._edges.clear()
        if not self.minute_log:  # a bucket would have had what it said it had, refilled; windows, their share
            self.minute_log = True
            return
        self.scale = max(MIN_SCALE, self.scale * THROTTLED_SCALE)
        self._share()

    def answered(self) -> None:
        if self.scale < 1.0:
            self.scale = min(1.0, self.scale + RECOVERY)
            self._share()

    @property
    def _caps(self) -> tuple[SlidingCap | FixedWindows, ...]:
        span, minute = self.caps
        if self.windows is not None and self.ten_second_windows:
            return (self.windows,) + (minute,) * self.minute_log
        return (span,) * self.ten_second_windows + (minute,) * self.minute_log

    def wait_for(self, amount: float, now: float) -> float:
        wait = max((cap.wait_for(amount, now) for cap in self._caps), default=0.0)
        if self.server_left is not None and not self._new_window_since_answer(now):
            rate = self.limit / MINUTE
            short = amount - (self.server_left + (now - self.server_at) * rate)
            wait = max(wait, short / rate)
        return wait

    def _new_window_since_answer(self, now: float) -> bool:
        """A server of fixed windows has all of a window's share again at its edge, whatever it
        had left before."""
        windows = self.windows
        if windows is None or not self.ten_second_windows:
            return False
        return math.floor((now - windows.edge) / SPAN) > math.floor((self.server_at - windows.edge) / SPAN)

    def take(self, amount: float, now: float) -> None:
        for cap in self.caps:
            cap.take(amount, now)
        if self.windows is not None:
            self.windows.take(amount, now)
        if self.server_left is not None:
            if self._new_window_since_answer(now):
                self.server_left, self.server_at = self.windows.share, now
            self.server_left -= amount

    def window_ends_in(self, seconds: float, seen: float, now: float) -> None:
        """The server, having seen ``seen`` units of this run's, says its budget is whole again
        in ``seconds``: where answers keep naming the same edges, 10 seconds apart, while what
        they had seen grew, it counts in fixed windows, and each is filled to its share (no log
        of the minute, until a 429 says otherwise)."""
        if not self.ten_second_windows or not 0 < seconds <= SPAN + ARRIVAL_SLACK:
            return
        edge = now + seconds
        self._edges.append((edge, seen))
        if len(self._edges) < EDGE_ANSWERS:
            return
        offsets = [(e - edge + SPAN / 2) % SPAN - SPAN / 2 for e, _ in self._edges]
        moved_s = (self._edges[-1][1] - self._edges[0][1]) * MINUTE / self.limit
        two_windows = self._edges[-1][0] - self._edges[0][0] >= SPAN - EDGE_AGREEMENT
        if max(offsets) - min(offsets) > EDGE_AGREEMENT or moved_s < EDGE_EVIDENCE_S or not two_windows:
            return
        earliest = edge + min(offsets)  # each answer is late by its way back: the earliest is nearest
        if self.windows is None:
            logger.info("the server counts in fixed 10-second windows; filling each")
            self.windows = FixedWindows(SPAN, 0.0, earliest)
            for at, amount in self.caps[0].grants:  # what the last 10 seconds granted is in the windows too
                self.windows.take(amount, at)
            self.minute_log = False
            self._share()
        else:  # the same edges, only ever learned earlier: the windows' numbers stay
            correction = (earliest - self.windows.edge + SPAN / 2) % SPAN - SPAN / 2
            self.windows.edge += min(0.0, correction)

    def server_says(self, remaining: float, unseen: float, now: float) -> None:
        """The server has ``remaining`` less the ``unseen`` grants it had not had yet: believed
        until its next answer, growing at the limit's rate meanwhile as a token bucket refills.
        A server with less than that (a log, windows) is held to by the caps; one with less
        than the caps allow (a small bucket, other clients of the same account) by this. One
        that holds clearly more than 10 seconds' share does not count in 10-second windows: it
        is taken for a bucket, spent as it says, until a 429 says it keeps a log of the minute."""
        self.server_left, self.server_at = remaining - unseen, now
        if self.ten_second_windows and remaining > WINDOWS_RULED_OUT * self.limit * SPAN / MINUTE:
            self.ten_second_windows = self.minute_log = False
            self.windows = None

    @property
    def span_share(self) -> float:
        return self.caps[0].share


class BudgetExhausted(Exception):
    """A per-day cap cannot grant a request for longer than a run should wait."""


@dataclass
class Headers:
    """What a response said about the budget; ``None`` where it said nothing."""

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None  # seconds until the token budget is whole again
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
            reset_tokens=_duration(lower.get("x-ratelimit-reset-tokens")),
            retry_after=retry_after,
        )


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(value: str | None) -> float | None:
    """OpenAI's durations: ``1.5s``, ``6m0s``, ``20ms``; a bare number is seconds."""
    if not value:
        return None
    text = value.strip().lower()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _seconds(value: str, scale: float) -> float | None:
    try:
        return max(0.0, float(value) * scale)
    except ValueError:
        return None


@dataclass(frozen=True)
class Grant:
    """One granted request: the run's totals granted with it (what a server that answers it
    has seen), and its tokens as this run counts them."""

    requests: int
    tokens: float
    counted: int


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
        """The server's token count over this run's, from what its answers billed."""
        return min(4.0, max(0.25, self.billed / self.counted)) if self.counted else 1.0

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
        return Grant(self.granted_requests, self.granted_tokens, tokens)

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


def _fill(name: str) -> float:
    """Requests are counted alike everywhere; tokens may not be."""
    return FILL if name == "tpm" else 1.0
