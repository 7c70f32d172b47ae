"""Versioned schema migrations: the shared tables (the registry, the run history) and each
collection's tables are at a version recorded in ``vectorize_schema``; a step is applied once,
in the transaction that registers a run, under the lock that keeps two runs from doing it at
once. A database made before versions were recorded is at version 0: every step runs again,
and each is written so that it does nothing to a table that already has what it adds."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from psycopg import sql

logger = logging.getLogger(__name__)

SCHEMA_TABLE = "vectorize_schema"
SHARED_SCOPE = "shared"

Step = Sequence[sql.Composable]


def migrate(conn, scope: str, steps: Sequence[Step]) -> int:
    """Apply the steps of ``scope`` past its recorded version, on ``conn`` (a transaction the
    caller commits); the version it is at after."""
    table = sql.Identifier(SCHEMA_TABLE)
    conn.execute(
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {s} (
                scope text PRIMARY KEY,
                version integer NOT NULL,
                migrated_at timestamptz NOT NULL DEFAULT now())"""
        ).format(s=table)
    )
    found = conn.execute(sql.SQL("SELECT version FROM {s} WHERE scope = %s").format(s=table), (scope,)).fetchone()
    current = found[0] if found else 0
    if current >= len(steps):
        return current
    for step in steps[current:]:
        for statement in step:
            conn.execute(statement)
    conn.execute(
        sql.SQL(
            """INSERT INTO {s} (scope, version) VALUES (%s, %s)
               ON CONFLICT (scope) DO UPDATE SET version = EXCLUDED.version, migrated_at = now()"""
        ).format(s=table),
        (scope, len(steps)),
    )
    logger.info("schema of %s: version %d -> %d", scope, current, len(steps))
    return len(steps)


def migrate_shared(conn, steps: Sequence[Step]) -> int:
    """The shared tables' migration, under a lock of its own (runs on different collections
    register at once)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"vectorize:{SCHEMA_TABLE}",))
    return migrate(conn, SHARED_SCOPE, steps)


def collection_scope(name: str) -> str:
    return f"collection:{name}"


def forget(conn, scope: str) -> None:
    """Back to version 0: the tables of ``scope`` were dropped by hand, and are made again."""
    if conn.execute("SELECT to_regclass(%s)", (SCHEMA_TABLE,)).fetchone()[0] is not None:
        conn.execute(sql.SQL("DELETE FROM {s} WHERE scope = %s").format(s=sql.Identifier(SCHEMA_TABLE)), (scope,))
