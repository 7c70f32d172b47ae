"""The run history: one row per run, written at its start and completed at its end."""

from __future__ import annotations

import json
import logging
import re

import psycopg
from psycopg import sql

from vectorize.db import using
from vectorize.errors import VectorizeError
from vectorize.store.collection import RUNS_TABLE
from vectorize.summary import RunSummary

logger = logging.getLogger(__name__)
_RUNS = sql.Identifier(RUNS_TABLE)


def record_start(where: str | psycopg.Connection, summary: RunSummary) -> None:
    with using(where) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {r} (run_id, collection, source, model, status) VALUES (%s, %s, %s, %s, 'running')"
            ).format(r=_RUNS),
            (summary.run_id, summary.collection, summary.source, summary.model),
        )


def record_end(where: str | psycopg.Connection, summary: RunSummary, *, error: str | None = None) -> None:
    with using(where) as conn:
        conn.execute(
            sql.SQL(
                """UPDATE {r} SET status = %s, error = %s, finished_at = now(), rows_read = %s,
                   embedded = %s, reused = %s, unchanged = %s, failed = %s, failed_by_reason = %s,
                   truncated = %s, tokens = %s, seconds = %s, rows_per_second = %s, api_usage = %s,
                   embedded_new = %s, refreshed = %s, deleted = %s, metrics = %s
                   WHERE run_id = %s"""
            ).format(r=_RUNS),
            (
                "failed" if error else "succeeded",
                error,
                summary.rows_read,
                summary.embedded,
                summary.reused,
                summary.unchanged,
                summary.failed,
                json.dumps(summary.failed_by_reason),
                summary.truncated,
                summary.tokens,
                summary.seconds,
                summary.rows_per_second,
                json.dumps(summary.api_usage.to_dict()) if summary.api_usage else None,
                summary.embedded_new,
                summary.refreshed,
                summary.deleted,
                json.dumps(summary.run_metrics()),
                summary.run_id,
            ),
        )


def mark_abandoned(conn: psycopg.Connection, collection: str) -> int:
    """Mark the collection's runs still 'running' as abandoned: called under the collection's run
    lock, which a live run holds until it ends, so any such run died (its driver killed, or its
    database lost before it could record the end). How many there were."""
    abandoned = conn.execute(
        sql.SQL(
            """UPDATE {r} SET status = 'abandoned', finished_at = now(),
               error = 'the run ended without recording its end (its driver was killed or lost the database)'
               WHERE collection = %s AND status = 'running'"""
        ).format(r=_RUNS),
        (collection,),
    ).rowcount
    if abandoned:
        logger.info("marked %d earlier run(s) of %s abandoned", abandoned, collection)
    return abandoned


def record_failure(where: str, summary: RunSummary, error: str) -> None:
    """``record_end`` of a failed run, where the database itself may be what failed: a run
    that cannot be marked failed is marked abandoned by the next run on its collection."""
    try:
        record_end(where, summary, error=error)
    except (psycopg.Error, VectorizeError) as exc:
        logger.info("could not record the failed run %s: %s", summary.run_id, exc)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain_error(exc: BaseException) -> str:
    """One line of a failure, without terminal colours: its message, or the last line of a
    traceback it carries; the type's name where the message does not say it."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if any(line.startswith("Traceback") for line in lines) else lines[0]
    if isinstance(exc, VectorizeError):
        return line[:2000]
    return (line if line.startswith(type(exc).__name__) else f"{type(exc).__name__}: {line}")[:2000]


def record_progress(where: str | psycopg.Connection, run_id: str, metrics: dict) -> None:
    """The figures of a run still going, in its ``metrics`` (marked ``"live": true``)."""
    with using(where) as conn:
        conn.execute(
            sql.SQL("UPDATE {r} SET metrics = %s WHERE run_id = %s AND status = 'running'").format(r=_RUNS),
            (json.dumps({**metrics, "live": True}), run_id),
        )


def run_history(where: str | psycopg.Connection, collection: str, limit: int = 200) -> list[dict]:
    """The collection's latest runs, oldest first, each a dict of the run history's columns."""
    with using(where) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"public.{RUNS_TABLE}",)).fetchone()[0]
        if exists is None:
            return []
        cursor = conn.execute(
            sql.SQL(
                """SELECT run_id::text, status, error, started_at, finished_at, rows_read, embedded, reused,
                          unchanged, failed, failed_by_reason, tokens, seconds, rows_per_second, metrics
                   FROM {r} WHERE collection = %s ORDER BY started_at DESC LIMIT %s"""
            ).format(r=_RUNS),
            (collection, limit),
        )
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in reversed(cursor.fetchall())]
