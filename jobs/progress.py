"""Whether a run still moves: the write tasks report the rows they finish to the run's
bookkeeping actor (``jobs.run_actor``); a thread in the driver watches it and stops the run
when nothing has moved for ``--stall-timeout`` seconds (a pool waiting for resources the
cluster never gets, a database that stopped answering), instead of letting it hang."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

from jobs.database_watch import PROBE_S, database_answers, pipeline_watched
from vectorize.console import last_words
from vectorize.db import redact_dsn
from vectorize.errors import ProviderStopError, StallError, StoreError, VectorizeError
from vectorize.providers.base import ActorPlan
from vectorize.settings import START_ALLOWANCE_S

logger = logging.getLogger(__name__)


class ProgressMeter:
    """Rows finished by stage, and when the last ones were."""

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}
        self._last = time.monotonic()

    def add_counts(self, counts: dict[str, int]) -> None:
        """Several stages' rows at once: a reader sees all of them or none."""
        rows = dict(self._rows)
        for stage, count in counts.items():
            rows[stage] = rows.get(stage, 0) + count
        self._rows = rows
        self._last = time.monotonic()

    def read(self) -> tuple[dict[str, int], float]:
        """The counts, and the seconds since the last report."""
        return dict(self._rows), time.monotonic() - self._last


def missing_resources(plan: ActorPlan) -> str | None:
    """What the embedding actors need and the cluster lacks, said with what to do; None if nothing."""
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    if plan.gpus_per_actor > gpus:
        return (
            f"its embedding actors need {plan.gpus_per_actor:g} GPU each and the cluster has {gpus:g}: "
            "add GPU nodes (or let the autoscaler add them), or run on CPUs with --gpus-per-actor 0"
        )
    if plan.cpus_per_actor > cpus:
        return (
            f"its embedding actors need {plan.cpus_per_actor:g} CPUs each and the cluster has {cpus:g}: "
            "lower --cpus-per-actor or add nodes"
        )
    return None


def waiting_for(plan: ActorPlan, dsn: str, service: str | None = None) -> tuple[str, type[VectorizeError]]:
    """What a stalled run is most likely waiting for: resources the cluster lacks, a database
    that does not answer (asked with a bounded probe: then a StoreError), else the model
    (``service``: the address of the remote provider the pipeline calls)."""
    missing = missing_resources(plan)
    if missing is not None:
        return missing, StallError
    if not database_answers(dsn):
        return (
            f"the database at {redact_dsn(dsn)} does not answer (a query waited {PROBE_S:g} s): "
            "check the server, then run the same command again to finish the rest"
        ), StoreError
    if service:
        why = f"the database answers; the embedding service at {service} does not: check it, then run again"
        return why, StallError
    why = "the database answers; the pipeline made no progress: see the workers' logs (ray logs, or --debug)"
    return why, StallError


def report_counts(meter: Any, counts: dict[str, int]) -> None:
    """Rows by stage, in one message so that a reader sees them together. Fire and forget: a
    lost report only makes the run look slower to the watcher."""
    counts = {stage: rows for stage, rows in counts.items() if rows}
    if meter is not None and counts:
        meter.add_counts.remote(counts)


class StallWatch:
    """Interrupts the driver's main thread once the meter has not moved for ``timeout_s``, or
    once the provider refused the run (``refusal()`` gives its message) and the texts it had
    answered are written (no embedded row written for :data:`DRAIN_S`); ``check(exc)`` then
    turns the interruption into the error that says why.

    Until the first rows are written the run is starting (Ray starting its worker processes, the
    actors loading their model): that is given at least :data:`START_S`, unless ``missing()``
    names resources the cluster lacks, which no waiting brings."""

    POLL_S = 1.0
    GRACE_S = 45.0  # after the stall, for the run to stop and record its end; then the process exits
    DRAIN_S = 5.0
    START_S = START_ALLOWANCE_S

    def __init__(
        self,
        meter: Any,
        timeout_s: float,
        waiting_for: Callable[[], tuple[str, type[VectorizeError]]],
        refusal: Callable[[], str | None] | None = None,
        missing: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.meter = meter
        self.timeout_s = timeout_s
        self.waiting_for = waiting_for
        self.missing = missing
        self.refusal = refusal
        self.stalled: VectorizeError | None = None
        self.refused: ProviderStopError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)
        self._main = threading.main_thread().ident
        self._previous: Any = None
        self._deadline: threading.Timer | None = None

    def __enter__(self) -> StallWatch:
        watched = self.timeout_s > 0 or self.refusal is not None
        if watched and threading.current_thread() is threading.main_thread():
            # our own handler for the interruption: whoever set SIGINT's before (a server, a
            # test runner) may ignore it, and the run would hang on
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._thread.start()
            pipeline_watched.set()
        elif watched:
            logger.warning("--stall-timeout needs the run on the main thread; not watched")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        pipeline_watched.clear()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        previous = self._previous
        ours = self.stalled is not None or self.refused is not None
        if not ours and callable(previous):
            previous(signum, frame)
        elif ours or previous == signal.SIG_DFL:
            raise KeyboardInterrupt

    def _watch(self) -> None:
        idle, rows = 0.0, {}
        refused_at: tuple[float, int] | None = None  # (when, embedded rows written then)
        while not self._stop.wait(self.POLL_S):
            try:
                rows, idle = ray.get(self.meter.read.remote(), timeout=30)
            except Exception:  # the meter itself unreachable: count the time as idle
                idle += self.POLL_S
            message = self.refusal() if self.refusal is not None else None
            if message is not None:
                embedded = rows.get("embedded", 0)
                if refused_at is None or refused_at[1] != embedded:
                    refused_at = (time.monotonic(), embedded)
                elif time.monotonic() - refused_at[0] >= self.DRAIN_S:
                    self.refused = ProviderStopError(message)
                    logger.info("stopping the run: %s", message)
                    signal.pthread_kill(self._main, signal.SIGINT)
                    return
            if self.timeout_s > 0 and idle >= self.timeout_s and self._stalled(rows, idle):
                done = ", ".join(f"{n} {stage}" for stage, n in sorted(rows.items())) or "no rows finished"
                why, error = self.waiting_for()
                given = f"--stall-timeout {self.timeout_s:g}" + (f", {self.START_S:g} s to start" if not rows else "")
                self.stalled = error(f"the run made no progress for {idle:.0f} s ({given}); so far: {done}; {why}")
                logger.info("stopping the run: %s", self.stalled)
                self._deadline = threading.Timer(self.GRACE_S, self._give_up)
                self._deadline.daemon = True
                self._deadline.start()
                signal.pthread_kill(self._main, signal.SIGINT)
                return

    def _stalled(self, rows: dict[str, int], idle: float) -> bool:
        """Past the stall timeout: stalled, unless the run is still starting and can start."""
        return bool(rows) or idle >= self.START_S or self.missing() is not None

    def disarm(self) -> None:
        """The run has stopped: no need to end the process."""
        if self._deadline is not None:
            self._deadline.cancel()

    def _give_up(self) -> None:
        """The run did not stop within the grace after its stall (a call that never returns, on
        a frozen database): say why in the run's one line and end the process."""
        assert self.stalled is not None
        last_words(f"vectorize: error: {self.stalled}")
        os._exit(self.stalled.exit_code)

    def check(self, exc: BaseException) -> BaseException:
        """The StallError or ProviderStopError if this watch interrupted the run, else ``exc``."""
        ours = self.stalled or self.refused
        if ours is not None and isinstance(exc, KeyboardInterrupt | ray.exceptions.RayError):
            return ours
        return exc
