"""A collection's versions: the live one that runs write and searches read, the next one that a
migration builds beside it with another model or storage, and the previous one that the last
swap replaced (kept for a rollback until it is dropped).

Each version is the same set of tables under the same names in a schema of its own
(``vectorize.store.collection``), with a registry row of its own (key ``schema.name``). A swap
moves tables between schemas and registry rows (and run history) between keys in one transaction, renaming
nothing, so indexes and constraints keep their names; the version swapped in gets the live one's
table privileges. Searches take a shared lock on the
collection's name for their transaction and the swap the exclusive one: a search runs wholly
before the swap or wholly after it, on one model's vectors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from vectorize.errors import MigrationError
from vectorize.rows import SOURCE_ERROR_STAGES
from vectorize.store.collection import (
    LIVE_SCHEMA,
    NEXT_SCHEMA,
    PREVIOUS_SCHEMA,
    REGISTRY_TABLE,
    RUNS_TABLE,
    TABLE_SUFFIXES,
    Collection,
)
from vectorize.store.registry import Registered, registered
from vectorize.store.schema import SCHEMA_TABLE, collection_scope

logger = logging.getLogger(__name__)

SWAP_SCHEMA = "vectorize_swap"  # where the live tables wait for a moment while a rollback exchanges them
SWAP_LOCK_TIMEOUT = "5s"
SWAP_TRIES = 12


def versions_lock_key(name: str) -> str:
    """The advisory lock searches and checks share, and a swap takes alone."""
    return f"vectorize-versions:{name}"


def search_lock(conn: psycopg.Connection, name: str) -> None:
    """Inside a transaction: hold collection ``name`` in its version until the transaction ends
    (a swap waits for it, and it for a swap)."""
    conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext(%s))", (versions_lock_key(name),))


@contextmanager
def snapshot_of_one_version(conn: psycopg.Connection, name: str) -> Iterator[None]:
    """On an autocommit connection: a read-only REPEATABLE READ transaction whose snapshot is
    taken with collection ``name`` held in its version, so the registry and the tables it reads
    belong to one version (the transaction lock of ``search_lock`` would come after the
    snapshot its own statement takes, and could miss a swap that committed while it waited).
    A swap waits for the transaction to end (each of its tries for SWAP_LOCK_TIMEOUT)."""
    if not conn.autocommit:
        raise ValueError("snapshot_of_one_version takes an autocommit connection")
    key = versions_lock_key(name)
    conn.execute("SELECT pg_advisory_lock_shared(hashtext(%s))", (key,))
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield
    finally:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            conn.execute("SELECT pg_advisory_unlock_shared(hashtext(%s))", (key,))


def _swap_lock(conn: psycopg.Connection, name: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (versions_lock_key(name),))


@dataclass(frozen=True)
class Versions:
    live: Registered | None
    next: Registered | None
    previous: Registered | None


def read_versions(conn: psycopg.Connection, name: str) -> Versions:
    live = Collection(name)
    return Versions(
        registered(conn, live),
        registered(conn, live.in_schema(NEXT_SCHEMA)),
        registered(conn, live.in_schema(PREVIOUS_SCHEMA)),
    )


@dataclass(frozen=True)
class VersionFigures:
    rows: int  # stored rows (chunks count one each)
    ids: int  # distinct ids stored
    failed_ids: int  # distinct ids with an error row of the model's stages, and nothing stored
    source_failed_ids: int = 0  # distinct ids the source itself cannot give (read, prepare errors)

    @property
    def coverage(self) -> float:
        """The share of the ids the source gives that are stored: a record the source cannot give
        (malformed, empty, a duplicate id) fails the same way whatever the model, and is left out."""
        read = self.ids + self.failed_ids
        return self.ids / read if read else 0.0


def version_figures(conn: psycopg.Connection, collection: Collection) -> VersionFigures:
    if conn.execute("SELECT to_regclass(%s)", (collection.regclass(),)).fetchone()[0] is None:
        return VersionFigures(0, 0, 0)
    rows, ids, failed, source_failed = conn.execute(
        sql.SQL(
            """WITH unstored AS (
                 SELECT e.id, bool_and(e.stage = ANY(%s)) AS source_only FROM {e} e
                 WHERE NOT EXISTS (SELECT FROM {t} t WHERE t.id = e.id) GROUP BY e.id)
               SELECT (SELECT count(*) FROM {t}), (SELECT count(DISTINCT id) FROM {t}),
                      (SELECT count(*) FROM unstored WHERE NOT source_only),
                      (SELECT count(*) FROM unstored WHERE source_only)"""
        ).format(t=collection.table, e=collection.errors),
        (list(SOURCE_ERROR_STAGES),),
    ).fetchone()
    return VersionFigures(int(rows), int(ids), int(failed), int(source_failed))


def _move(conn: psycopg.Connection, source: Collection, schema: str) -> None:
    """Collection ``source``'s tables, registry row and schema version into ``schema``."""
    target = source.in_schema(schema)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    for suffix in TABLE_SUFFIXES:
        conn.execute(
            sql.SQL("ALTER TABLE IF EXISTS {} SET SCHEMA {}").format(
                sql.Identifier(source.schema, f"{source.name}{suffix}"), sql.Identifier(schema)
            )
        )
    conn.execute(
        sql.SQL("UPDATE {r} SET collection = %s WHERE collection = %s").format(r=sql.Identifier(REGISTRY_TABLE)),
        (target.key, source.key),
    )
    conn.execute(
        sql.SQL("UPDATE {s} SET scope = %s WHERE scope = %s").format(s=sql.Identifier(SCHEMA_TABLE)),
        (collection_scope(target.key), collection_scope(source.key)),
    )
    conn.execute(  # a version's run history goes with it
        sql.SQL("UPDATE {r} SET collection = %s WHERE collection = %s").format(r=sql.Identifier(RUNS_TABLE)),
        (target.key, source.key),
    )


def _carry_privileges(conn: psycopg.Connection, source: Collection, target: Collection) -> int:
    """What roles may do with ``source``'s tables, granted on ``target``'s as well (never
    revoking): a role that reads a collection (a Serve replica's, a read-only one) reads it on
    after a swap. How many grants were given."""
    given = 0
    for suffix in TABLE_SUFFIXES:
        held = conn.execute(
            """SELECT a.privilege_type, CASE a.grantee WHEN 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END,
                      a.is_grantable
               FROM pg_class c, aclexplode(c.relacl) a
               WHERE c.oid = to_regclass(%s) AND a.grantee <> c.relowner""",
            (source.regclass(suffix),),
        ).fetchall()
        if not held or conn.execute("SELECT to_regclass(%s)", (target.regclass(suffix),)).fetchone()[0] is None:
            continue
        for privilege, grantee, grantable in held:
            role = sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee)
            table = sql.Identifier(target.schema, f"{target.name}{suffix}")
            option = sql.SQL(" WITH GRANT OPTION" if grantable else "")
            conn.execute(sql.SQL("GRANT {} ON {} TO {}{}").format(sql.SQL(privilege), table, role, option))
            given += 1
    return given


def _exchange(conn: psycopg.Connection, name: str, incoming: str, moves: list[tuple[str, str]]) -> None:
    """The moves (from schema, to schema) of collection ``name``'s versions in one transaction,
    under the exclusive versions lock, the version in schema ``incoming`` becoming live with the
    live one's privileges. Each try waits at most SWAP_LOCK_TIMEOUT for the versions lock and the
    tables: a reader (``vectorize check`` measuring the collection, a long query, ``pg_dump``)
    would otherwise hold the swap, and every search queued behind it, for as long as it reads."""
    live = Collection(name)
    for attempt in range(1, SWAP_TRIES + 1):
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (SWAP_LOCK_TIMEOUT,))
                _swap_lock(conn, name)
                _carry_privileges(conn, live, live.in_schema(incoming))
                for source, target in moves:
                    _move(conn, live.in_schema(source), target)
            return
        except psycopg.errors.LockNotAvailable:
            logger.warning("the swap of %s waited %s for its tables (try %d of %d)", name, SWAP_LOCK_TIMEOUT,
                           attempt, SWAP_TRIES)  # fmt: skip
    raise MigrationError(
        f"the swap of collection {name!r} found its tables held by another reader (a `vectorize check`, a long "
        f"query, pg_dump) {SWAP_TRIES} times "
        f"({SWAP_LOCK_TIMEOUT} each): nothing was swapped; run the same command again when it is done"
    )


def swap_in_next(conn: psycopg.Connection, name: str) -> None:
    """The live version becomes the previous one, the next one live. The caller holds both
    versions' run locks and has checked that there is no previous version."""
    _exchange(conn, name, NEXT_SCHEMA, [(LIVE_SCHEMA, PREVIOUS_SCHEMA), (NEXT_SCHEMA, LIVE_SCHEMA)])
    logger.info("collection %s: the next version is live, the one it replaced kept as previous", name)


def roll_back(conn: psycopg.Connection, name: str) -> None:
    """The live and the previous version change places."""
    moves = [(LIVE_SCHEMA, SWAP_SCHEMA), (PREVIOUS_SCHEMA, LIVE_SCHEMA), (SWAP_SCHEMA, PREVIOUS_SCHEMA)]
    _exchange(conn, name, PREVIOUS_SCHEMA, moves)
    logger.info("collection %s: the previous version is live again", name)


def drop_version(conn: psycopg.Connection, collection: Collection) -> None:
    """A version other than the live one, gone: its tables, registry row and schema version."""
    if collection.schema == LIVE_SCHEMA:
        raise ValueError("the live version is never dropped here")
    with conn.transaction():
        for table in collection.tables():
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        conn.execute(
            sql.SQL("DELETE FROM {r} WHERE collection = %s").format(r=sql.Identifier(REGISTRY_TABLE)),
            (collection.key,),
        )
        conn.execute(
            sql.SQL("DELETE FROM {s} WHERE scope = %s").format(s=sql.Identifier(SCHEMA_TABLE)),
            (collection_scope(collection.key),),
        )
        conn.execute(
            sql.SQL("DELETE FROM {r} WHERE collection = %s").format(r=sql.Identifier(RUNS_TABLE)), (collection.key,)
        )


def copy_vectors(conn: psycopg.Connection, source: Collection, target: Collection, column_type: sql.Composed) -> int:
    """The rows of ``source`` into ``target`` (made already, for the same model), their vectors
    cast to ``column_type``; rows ``target`` has are left as they are. How many were copied."""
    with conn.transaction():
        copied = conn.execute(
            sql.SQL(
                """INSERT INTO {d} (id, chunk, text, text_sha256, model, embedding, metadata, embedded_at,
                                    source_fingerprint)
                   SELECT id, chunk, text, text_sha256, model, embedding::{ct}, metadata, embedded_at,
                          source_fingerprint
                   FROM {s} ON CONFLICT (id, chunk) DO NOTHING"""
            ).format(d=target.table, s=source.table, ct=column_type)
        ).rowcount
    return int(copied or 0)
