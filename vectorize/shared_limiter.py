"""One request budget for a whole run: every embedding actor on every node asks the same
limiter before it sends a request and tells it what the server answered.

``Limiter`` runs in one event loop; ``SharedLimiter`` is that limiter inside one Ray actor,
and ``RayLimiterClient`` gives the actors the same async methods over a handle to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vectorize.errors import ProviderStopError
from vectorize.rate_headers import Headers
from vectorize.rate_limits import BudgetExhausted, Grant, RateBudget, RateLimits
from vectorize.summary import ApiUsage, RequestStats

logger = logging.getLogger(__name__)

_RECHECK_S = 0.5  # a waiting request looks again this often: a 429 or a header may change its wait


class Budget(Protocol):
    async def request_tokens(self) -> int | None: ...

    async def acquire(self, tokens: int) -> Grant: ...

    async def release(self, grant: Grant, headers: Headers | None, stats: RequestStats) -> None: ...

    async def stop(self, message: str) -> None: ...


@dataclass
class _Waiter:
    tokens: int
    granted: asyncio.Future


class Limiter:
    """Grants requests first come, first served, within the rate budget and ``max_in_flight``."""

    def __init__(self, limits: RateLimits, max_in_flight: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.budget = RateBudget(limits, clock())
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.stats = RequestStats()
        self.stopped: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._turn = asyncio.Lock()
        self._slot_freed = asyncio.Event()
        self._waiting: list[_Waiter] = []  # in the order they asked

    def _raise_if_stopped(self) -> None:
        if self.stopped is not None:
            raise ProviderStopError(self.stopped)

    async def request_tokens(self) -> int | None:
        return self.budget.request_tokens()

    async def acquire(self, tokens: int) -> Grant:
        """Requests are granted in the order they ask, but for one thing: while the first waits
        for a server window's edge, later ones that fit in what is left of the window take it
        (it would go unused; the first cannot go before the edge anyway)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # asyncio's primitives belong to one loop
            self._loop, self._turn, self._slot_freed = loop, asyncio.Lock(), asyncio.Event()
            self._waiting = []
        waiter = _Waiter(tokens, loop.create_future())
        self._waiting.append(waiter)
        turn = asyncio.ensure_future(self._turn.acquire())
        try:
            await asyncio.wait({turn, waiter.granted}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the caller is cancelled: it takes neither the turn nor a grant
            self._leave(turn)
            if waiter.granted.done():
                self._give_back()
            raise
        finally:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
        if waiter.granted.done():
            self._leave(turn)
            return waiter.granted.result()
        try:
            return await self._first_in_line(waiter)
        finally:
            self._turn.release()

    def _leave(self, turn: asyncio.Future) -> None:
        """Give up a place in line: the turn if it came, else the wait for it."""
        if turn.done() and not turn.cancelled():
            self._turn.release()
        else:
            turn.cancel()

    def _give_back(self) -> None:
        """A grant made for a request that will not be sent: its slot is free again (the tokens
        stay counted, which only errs on the safe side)."""
        self.in_flight -= 1
        self._slot_freed.set()

    async def _first_in_line(self, waiter: _Waiter) -> Grant:
        while True:
            self._raise_if_stopped()
            # one request until an answer says how the server counts tokens
            if self.in_flight >= (1 if self.budget.learning else self.max_in_flight):
                self._slot_freed.clear()
                try:
                    await asyncio.wait_for(self._slot_freed.wait(), _RECHECK_S)
                except TimeoutError:
                    pass
                continue
            now = self.clock()
            try:
                granted = self.budget.reserve(waiter.tokens, now)
            except BudgetExhausted as exc:
                await self.stop(str(exc))
                raise ProviderStopError(str(exc)) from None
            if isinstance(granted, Grant):
                self.in_flight += 1
                return granted
            if self.budget.fills_windows(now):
                self._fill_in(waiter, now)
            await asyncio.sleep(min(granted, _RECHECK_S))

    def _fill_in(self, first: _Waiter, now: float) -> None:
        """Grant the later waiters that fit in the server's current window now."""
        for waiter in list(self._waiting):
            if self.in_flight >= self.max_in_flight:
                return
            if waiter is first or waiter.granted.done():
                continue
            try:
                granted = self.budget.reserve(waiter.tokens, now)
            except BudgetExhausted:  # a per-day cap: that waiter learns it when it is first in line
                continue
            if isinstance(granted, Grant):
                self.in_flight += 1
                self._waiting.remove(waiter)
                waiter.granted.set_result(granted)

    async def release(self, grant: Grant, headers: Headers | None, stats: RequestStats) -> None:
        self.in_flight -= 1
        self.stats.add(stats)
        now = self.clock()
        self.budget.learn(headers, grant, stats.tokens_billed, now)
        if stats.throttled:
            wait = headers.retry_after if headers is not None and headers.retry_after is not None else 1.0
            self.budget.pause(wait, now)
        elif headers is not None:
            self.budget.answered()
        self._slot_freed.set()

    async def stop(self, message: str) -> None:
        if self.stopped is None:
            logger.error("stopping every request of this run: %s", message)
            self.stopped = message
        self._slot_freed.set()


def start_shared_limiter(limits: RateLimits, max_in_flight: int, **actor_options):
    """A Ray actor holding the run's budget; it takes no CPU from the embedding actors.
    ``actor_options``: Ray's, such as where to place it."""
    import ray

    actor_class = ray.remote(num_cpus=0, max_concurrency=100_000)(SharedLimiter)
    return actor_class.options(**actor_options).remote(limits, max_in_flight)


class SharedLimiter:
    """The Ray actor: an async actor, so waiting requests wait in its event loop."""

    def __init__(self, limits: RateLimits, max_in_flight: int) -> None:
        self.limiter = Limiter(limits, max_in_flight)

    async def request_tokens(self) -> int | None:
        return await self.limiter.request_tokens()

    async def acquire(self, tokens: int) -> Grant:
        return await self.limiter.acquire(tokens)

    async def release(self, grant: Grant, headers: Headers | None, stats: RequestStats) -> None:
        await self.limiter.release(grant, headers, stats)

    async def stop(self, message: str) -> None:
        await self.limiter.stop(message)

    async def report(self) -> tuple[RequestStats, str | None]:
        """The run's request counts, and why the provider stopped it, if it did."""
        return self.limiter.stats, self.limiter.stopped


class RayLimiterClient:
    """The ``Budget`` methods over a handle to the ``SharedLimiter`` actor."""

    def __init__(self, handle) -> None:
        self.handle = handle

    async def request_tokens(self) -> int | None:
        return await self.handle.request_tokens.remote()

    async def acquire(self, tokens: int) -> Grant:
        import ray

        try:
            return await self.handle.acquire.remote(tokens)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, ProviderStopError):
                raise ProviderStopError(exc.cause.message) from None
            raise

    async def release(self, grant: Grant, headers: Headers | None, stats: RequestStats) -> None:
        await self.handle.release.remote(grant, headers, stats)

    async def stop(self, message: str) -> None:
        await self.handle.stop.remote(message)


class RunBudgets:
    """The budget actors of one run, a primary's and a fallback's: what the run's requests cost,
    and whether the provider refused the run (the actor that met the refusal told its budget,
    whose answer is exact where an error's Ray wrapping is not)."""

    def __init__(self, primary, fallback, usd_per_million: float | None) -> None:
        self.primary = primary
        self.fallback = fallback
        self.usd_per_million = usd_per_million

    @classmethod
    def start(cls, settings, **actor_options) -> RunBudgets:
        """``settings``: the provider's RemoteSettings; ``actor_options``: where the actors go."""
        primary = start_shared_limiter(settings.rate_limits, settings.max_in_flight, **actor_options)
        fallback = settings.fallback
        second = None
        if fallback is not None:
            second = start_shared_limiter(fallback.rate_limits, fallback.max_in_flight, **actor_options)
        return cls(primary, second, settings.usd_per_million())

    def clients(self) -> tuple[RayLimiterClient, RayLimiterClient | None]:
        second = RayLimiterClient(self.fallback) if self.fallback is not None else None
        return RayLimiterClient(self.primary), second

    def refusal(self) -> str | None:
        """Why the provider refused the run, if it has (the primary's budget knows)."""
        import ray

        try:
            return ray.get(self.primary.report.remote(), timeout=10)[1]
        except Exception:  # a budget that cannot answer is not a refusal
            return None

    def usage(self) -> tuple[ApiUsage, ProviderStopError | None]:
        """What the run's requests cost, and the provider's refusal if that is what ended it."""
        import ray

        usage, stop = ApiUsage(usd_per_million=self.usd_per_million), None
        for actor in (self.primary, self.fallback):
            if actor is None:
                continue
            try:
                stats, stopped = ray.get(actor.report.remote(), timeout=30)
            except Exception:  # the figures are lost with the actor; the run's outcome is not
                logger.warning("could not read the request counts of the run", exc_info=True)
                continue
            usage.add(stats)
            stop = stop or (ProviderStopError(stopped) if stopped else None)
        return usage, stop

    def end(self) -> None:
        import ray

        for actor in (self.primary, self.fallback):
            if actor is not None:
                ray.kill(actor)
