"""One run at a time per collection: a second run on the same collection waits for the first.

A session-level advisory lock, held by the driver from before the collection's tables are
touched until the run ends; Postgres drops it with the connection if the driver dies. The
second run then finds the first one's rows stored and embeds only what is still missing, so
two runs at once end in the state of one, with no duplicate and no deadlock between writers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from vectorize.db import connect
from vectorize.store.runs import mark_abandoned

logger = logging.getLogger(__name__)


@contextmanager
def run_lock(dsn: str, name: str) -> Iterator[psycopg.Connection]:
    """Held while the run on collection (or column) ``name`` goes; yields the (autocommit)
    connection that holds it, for the run's own bookkeeping."""
    key = f"vectorize-run:{name}"
    conn = connect(dsn, vector=False)
    released = False
    try:
        if not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]:
            logger.warning("another run is writing %s; waiting for it to end", name)
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        yield conn
    finally:
        released = _release(conn, key, name)
        if released:  # closing a connection whose unlock still waits would wait with it
            conn.close()


UNLOCK_WAIT_S = 5.0


def _release(conn: psycopg.Connection, key: str, name: str) -> bool:
    """Unlock, waiting at most :data:`UNLOCK_WAIT_S`: on a frozen server the unlock never comes
    back, and the lock goes with the connection anyway when this process ends."""

    def unlock() -> None:
        try:
            if not conn.closed and not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
        except psycopg.Error as exc:
            logger.info("could not release the run lock of %s (%s); it goes with the connection", name, exc)

    releasing = threading.Thread(target=unlock, name="run-lock-release", daemon=True)
    releasing.start()
    releasing.join(UNLOCK_WAIT_S)
    if releasing.is_alive():
        logger.info("the database did not answer the unlock of %s; it goes with the connection", name)
        return False
    return True


def mark_dead_runs(conn: psycopg.Connection, name: str) -> int:
    """Outside a run (``check``): when no live run holds the collection's lock, mark its runs
    still 'running' abandoned; how many."""
    key = f"vectorize-run:{name}"
    if not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]:
        return 0  # a run is going
    try:
        return mark_abandoned(conn, name)
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
