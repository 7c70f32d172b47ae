"""A bound on the driver's waits for the database outside the pipeline: a frozen server never
answers, and a call waiting on it cannot be interrupted, so a thread probes the server and ends
the process with the run's one line once it has been silent for ``--stall-timeout``."""

from __future__ import annotations

import logging
import os
import threading
import time

import psycopg

from vectorize.console import last_words
from vectorize.db import redact_dsn
from vectorize.errors import StoreError

logger = logging.getLogger(__name__)
pipeline_watched = threading.Event()  # set while a StallWatch watches the run (and names what stalled)

PROBE_S = 5.0


def database_answers(dsn: str) -> bool:
    """Whether ``SELECT 1`` comes back within :data:`PROBE_S` (a frozen server never answers, so
    the probe runs in a thread that is left behind)."""
    answered = threading.Event()

    def probe() -> None:
        try:
            with psycopg.connect(dsn, connect_timeout=int(PROBE_S), autocommit=True) as conn:
                conn.execute("SELECT 1")
            answered.set()
        except psycopg.Error:
            pass

    threading.Thread(target=probe, name="database-probe", daemon=True).start()
    return answered.wait(PROBE_S)


class DatabaseWatch:
    """Ends the process with the run's one line once the database has not answered a probe for
    ``timeout_s``, while the driver waits on it outside the pipeline (taking the run's lock,
    creating the collection, building its index, recording the run's end): a frozen server
    never answers, and a call waiting on it cannot be interrupted. Inside the pipeline the
    StallWatch watches, and names what stalled."""

    POLL_S = 2.0

    def __init__(self, dsn: str, timeout_s: float) -> None:
        self.dsn = dsn
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="database-watch", daemon=True)

    def __enter__(self) -> DatabaseWatch:
        if self.timeout_s > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()

    def _watch(self) -> None:
        silent_since: float | None = None
        while not self._stop.wait(self.POLL_S):
            if pipeline_watched.is_set() or database_answers(self.dsn):
                silent_since = None
                continue
            silent_since = silent_since if silent_since is not None else time.monotonic() - PROBE_S
            silent = time.monotonic() - silent_since
            if silent >= self.timeout_s and not self._stop.is_set():
                error = StoreError(
                    f"the database at {redact_dsn(self.dsn)} has not answered for {silent:.0f} s "
                    f"(--stall-timeout {self.timeout_s:g}); what was written is kept: "
                    "when it answers again, run the same command to finish the rest"
                )
                last_words(f"vectorize: error: {error}")
                os._exit(error.exit_code)
