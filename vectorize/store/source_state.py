"""What a collection knows of a Postgres source: the fingerprint of the source row each stored
row was made from, and the source's state when the last complete run began (in the registry)."""

from __future__ import annotations

import json

import psycopg
from psycopg import sql

from vectorize.db import using
from vectorize.rows import SOURCE_ERROR_STAGES
from vectorize.store.collection import REGISTRY_TABLE, Collection

_REGISTRY = sql.Identifier(REGISTRY_TABLE)


def collection_state(conn, collection: Collection) -> tuple[int, int]:
    """(stored rows, error rows a rerun should retry): those not from reading the record or
    preparing its text, which the same source gives again."""
    return conn.execute(
        sql.SQL(
            """SELECT (SELECT count(*) FROM {t} WHERE chunk = 0),
                      (SELECT count(*) FROM {e} WHERE stage <> ALL(%s))"""
        ).format(t=collection.table, e=collection.errors),
        (list(SOURCE_ERROR_STAGES),),
    ).fetchone()


def recorded_source_state(conn, collection: Collection) -> dict | None:
    found = conn.execute(
        sql.SQL("SELECT source_state FROM {r} WHERE collection = %s").format(r=_REGISTRY), (collection.key,)
    ).fetchone()
    return found[0] if found else None


def stored_fingerprints(conn, collection: Collection) -> tuple[dict[str, str], set[str]]:
    """id -> the fingerprint its row was made from, and the ids of the errors table."""
    stored = dict(
        conn.execute(
            sql.SQL("SELECT id, source_fingerprint FROM {t} WHERE chunk = 0").format(t=collection.table)
        ).fetchall()
    )
    failed = {key for (key,) in conn.execute(sql.SQL("SELECT DISTINCT id FROM {e}").format(e=collection.errors))}
    return stored, failed


def unchanged_since_last_run(conn, collection: Collection, state: dict, sync: bool) -> bool:
    """The source's ``state`` is the one the last complete run recorded, and the collection is as
    that run left it: the same stored rows, no error row a rerun should retry."""
    recorded = recorded_source_state(conn, collection)
    if not recorded or (sync and not recorded.get("synced")):
        return False
    stored, to_retry = collection_state(conn, collection)
    same = all(recorded.get(k) == v for k, v in state.items())
    return same and recorded.get("stored") == stored and to_retry == 0


def forget_source_state(conn, collection: Collection) -> None:
    """A run that reads rows may change the collection: until it completes, no state stands."""
    conn.execute(sql.SQL("UPDATE {r} SET source_state = NULL WHERE collection = %s").format(r=_REGISTRY),
                 (collection.key,))  # fmt: skip


def record_source_state(store: str | psycopg.Connection, collection: Collection, state: dict, synced: bool) -> None:
    """After a complete run: the source's state when it began, and the collection it left."""
    with using(store) as conn:
        stored, _ = collection_state(conn, collection)
        conn.execute(
            sql.SQL("UPDATE {r} SET source_state = %s WHERE collection = %s").format(r=_REGISTRY),
            (json.dumps({**state, "stored": stored, "synced": synced}), collection.key),
        )
