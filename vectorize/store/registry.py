"""The collection registry: one model identity per collection, checked before any work."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from vectorize.db import connect, ensure_vector_extension
from vectorize.errors import ConfigError, ModelMismatchError, UnknownCollectionError
from vectorize.identity import ModelIdentity
from vectorize.store.collection import REGISTRY_TABLE, Collection, shared_migrations
from vectorize.store.schema import collection_scope, forget, migrate, migrate_shared
from vectorize.store.storage import MAX_HNSW_DIMENSIONS, Storage, StorageRequest, storage_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registered:
    """A collection's registry row: its model, where that was loaded from, how its vectors are
    stored, and (a remote model's) the provider settings a search needs besides the key."""

    identity: ModelIdentity
    model_source: str
    storage: Storage
    provider: dict | None = None
    storage_recorded: bool = True  # False: registered before storage was, and not run on since


def _registered(conn, name: str) -> Registered | None:
    """The row as any version of the registry holds it: a database no run has migrated since
    storage was recorded lacks those columns, and is read all the same."""
    row = conn.execute(
        sql.SQL(
            "SELECT identity, model_source, to_jsonb(r) -> 'storage', to_jsonb(r) -> 'provider' FROM {r} r "
            "WHERE collection = %s"
        ).format(r=sql.Identifier(REGISTRY_TABLE)),
        (name,),
    ).fetchone()
    if row is None:
        return None
    data = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    storage, provider = row[2], row[3]
    return Registered(ModelIdentity(**data), row[1], Storage.from_json(storage), provider, storage is not None)


def _storage_in_table(conn, collection: Collection, dimensions: int) -> Storage:
    """The storage of a collection made before storage was recorded, as its table has it: a
    model too wide for an index of its vector type never had one."""
    column = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
        "AND attname = 'embedding'",
        (collection.regclass(),),
    ).fetchone()
    vector_type = "halfvec" if column and column[0].startswith("halfvec") else "vector"
    fits = dimensions <= MAX_HNSW_DIMENSIONS[vector_type]
    return Storage(vector_type=vector_type, index="hnsw" if fits else "none")


def prepare_collection(
    dsn: str,
    collection: Collection,
    identity: ModelIdentity,
    model_source: str,
    storage: StorageRequest | None = None,
    provider: dict | None = None,
    *,
    commit: bool = True,
) -> Storage:
    """Create what the collection needs, or refuse a model, or storage, other than the one it
    holds; the storage its vectors go to. ``provider``: a remote model's settings, remembered
    for searches (never a key). ``commit`` False: every check, nothing kept (a dry run)."""
    what = f"collection {collection.name!r}"
    with register(dsn, what, collection.key, identity, model_source, "--table", commit=commit) as (conn, found):
        scope = collection_scope(collection.key)
        if found is None:
            _refuse_foreign_table(conn, collection)
        recorded = None
        if found is not None:
            recorded = (
                found.storage if found.storage_recorded else _storage_in_table(conn, collection, identity.dimensions)
            )
        chosen = storage_for(storage or StorageRequest(), recorded, identity.dimensions, collection.name)
        if found is None and chosen.keyword_search:
            _check_text_search(conn, chosen.text_search)
        conn.execute(
            sql.SQL(
                "UPDATE {r} SET storage = coalesce(storage, %s::jsonb), provider = coalesce(provider, %s::jsonb) "
                "WHERE collection = %s"
            ).format(r=sql.Identifier(REGISTRY_TABLE)),
            (chosen.to_json(), json.dumps(provider) if provider else None, collection.key),
        )
        if conn.execute("SELECT to_regclass(%s)", (collection.regclass(),)).fetchone()[0] is None:
            forget(conn, scope)
        migrate(conn, scope, collection.migrations(chosen, identity.dimensions))
    return chosen


@contextmanager
def register(
    dsn: str, what: str, name: str, identity: ModelIdentity, model_source: str, option: str, *, commit: bool = True
) -> Iterator[tuple[psycopg.Connection, Registered | None]]:
    """In one transaction, under a lock on ``name``: the shared tables, and the registry row of
    ``name`` made or checked against ``identity``; yields the connection and the row as it was
    (None: new), for the caller's own DDL, and commits after it (rolls back: ``commit`` False)."""
    with connect(dsn, autocommit=False, vector=False) as conn:
        ensure_vector_extension(conn, dsn)
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"vectorize:{name}",))
        migrate_shared(conn, shared_migrations())
        found = _registered(conn, name)
        existing = found.identity if found else None
        if existing is not None and not existing.same_model(identity):
            raise ModelMismatchError(
                f"{what} holds vectors of {existing.name} "
                f"({existing.dimensions} dims); this run's model is {identity.name} "
                f"({identity.dimensions} dims), differing in {'; '.join(identity.differences(existing))}. "
                f"Use another {option}, or --model {existing.name}"
                + (", or move it to this model with `vectorize migrate`." if option == "--table" else ".")
            )
        if existing is None:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {r} (collection, model_name, model_source, identity, identity_key, dimensions) "
                    "VALUES (%s, %s, %s, %s, %s, %s)"
                ).format(r=sql.Identifier(REGISTRY_TABLE)),
                (name, identity.name, model_source, identity.to_json(), identity.key, identity.dimensions),
            )
            logger.info("registered %s for %s", name, identity.key)
        yield conn, found
        if commit:
            conn.commit()
        else:
            conn.rollback()


def _check_text_search(conn, name: str) -> None:
    known = [row[0] for row in conn.execute("SELECT cfgname FROM pg_ts_config ORDER BY cfgname").fetchall()]
    if name not in known:
        raise ConfigError(f"--text-search {name!r}: this database has no such configuration; choose one of "
                          f"{', '.join(known)}")  # fmt: skip


def _refuse_foreign_table(conn, collection: Collection) -> None:
    exists = conn.execute("SELECT to_regclass(%s)", (collection.regclass(),)).fetchone()[0]
    if exists is not None:
        raise ConfigError(
            f"table {collection.name!r} already exists and is not a vectorize collection: choose another --table"
        )


def _lookup(conn, collection: Collection) -> Registered | None:
    """Like ``_registered``, also in a database where no collection was ever made."""
    exists = conn.execute("SELECT to_regclass(%s)", (f"public.{REGISTRY_TABLE}",)).fetchone()[0]
    return _registered(conn, collection.key) if exists else None


def registered(conn, collection: Collection) -> Registered | None:
    """The registry row of a collection on an open connection; None when there is no such collection."""
    return _lookup(conn, collection)


def registered_model(dsn: str, collection: Collection) -> Registered:
    """The registry row of an existing collection."""
    with connect(dsn, vector=False) as conn:
        return registered_model_on(conn, collection)


def registered_model_on(conn, collection: Collection) -> Registered:
    """The registry row of an existing collection, on an open connection."""
    found = _lookup(conn, collection)
    if found is None:
        raise UnknownCollectionError(
            f"no collection {collection.name!r} in this database: "
            f"run `vectorize run ... --table {collection.name}` first"
        )
    return found
