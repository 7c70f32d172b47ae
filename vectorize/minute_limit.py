"""A per-minute limit as caps that every common limiter accepts.

Servers count a minute's budget in different ways: a token bucket that refills continuously,
a log of the last 60 seconds, or fixed 10-second windows that each hold a sixth of it (Azure).
A run that keeps every 10 seconds within a sixth of the minute, and every 60 seconds within
the minute, is accepted by all three, at the full rate. A request larger than that sixth (one
long input) goes alone, once nothing else was sent in the last 10 seconds. A server that says
it has more left than a 10-second window would hold is taken for a bucket: what it says it has
is spent at once and its refill as it comes, until a 429 shows it keeps a log of the minute,
which brings the minute's cap back. A server whose resets keep naming the same edges 10
seconds apart counts in fixed windows: each is filled to its share from its edge.

Pure logic with the clock passed in.
"""

from __future__ import annotations

import logging
import math
from collections import deque

logger = logging.getLogger(__name__)

MINUTE = 60.0
SPAN = 10.0  # the shortest window a common limiter counts over; it holds a sixth of the minute
# A grant counts this much longer than its window: the request reaches the server a little later.
ARRIVAL_SLACK = 0.2
FILL = 0.98  # of each window's tokens that are used: room for a server that counts a few more
THROTTLED_SCALE = 0.85  # a 429 despite all that: the limit taken as this much smaller ...
MIN_SCALE = 0.3  # ... down to this share of it
RECOVERY = 0.005  # and given back this much with each answer that was not a 429
WINDOWS_RULED_OUT = 1.5  # a server that says it has this many times 10 seconds' share left
EDGE_ANSWERS = 4  # answers naming edges 10 seconds apart (two windows of them at least) that show fixed windows
EDGE_AGREEMENT = 0.3  # seconds those edges may differ by: the answers' time on the way back
# ... while between them at least this many seconds' worth of tokens were granted: a bucket's
# or a log's "whole again" moves on by that much, a fixed window's edge does not
EDGE_EVIDENCE_S = 1.0
EDGE_SLACK = 0.5  # seconds a grant may take to reach the server, and the edge be learned late


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
